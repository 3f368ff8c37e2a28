"""Experiment tracking (MLflow) behind a small interface."""
