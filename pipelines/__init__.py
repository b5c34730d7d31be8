"""Continuous preference-learning pipeline."""
