"""Learners (one file each) and learning-rate schedules. Import a strategy from its module."""
