"""Language models in continual: knowledge-learning evaluation (exact match, FUAR), run loops."""
