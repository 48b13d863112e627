"""FUAR: Forgotten / (Updated + Acquired) knowledge Ratio of continual knowledge learning.

Jang et al., "Towards Continual Knowledge Learning of Language Models", ICLR 2022
(arXiv 2110.03215), Sec. 3.3. With Gap(T, M_a, M_b) = score(T, M_a) - score(T, M_b):

    FUAR = sum_{i=0}^{n-1} max(0, Gap(T^F_i, M_i, M_n))
           / sum_{i=1}^{n} [max(0, Gap(T^U_i, M_n, M_{i-1})) + max(0, Gap(T^A_i, M_n, M_{i-1}))]

T^F_i: knowledge that should be kept from phase i (T^F_0 = InvariantLAMA), T^U_i / T^A_i:
the updated / newly acquired knowledge of corpus D_i. The paper reports "n.d." (not
defined) when the denominator is 0; we return None then. Lower is better; FUAR < 1
means fewer facts forgotten than learned. For one phase this is
max(0, IL(M0) - IL(M1)) / [max(0, UL(M1) - UL(M0)) + max(0, NL(M1) - NL(M0))].

``fuar`` and ``fuar_multiphase`` live in ``continual.metrics`` (the engine's metrics must not
import the language-model package); this module keeps their old import path and the table format.
"""

from __future__ import annotations

from continual.metrics import fuar, fuar_multiphase  # noqa: F401 - defined with the other metrics


def format_fuar(value: float | None, digits: int = 2) -> str:
    """FUAR as printed in tables: a number, or ``n.d.`` when not defined."""
    return "n.d." if value is None else f"{value:.{digits}f}"
