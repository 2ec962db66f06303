"""Helpers shared by the tests: builders of tiny test data, sweep runners, a local Ray cluster, the MLflow UI driver."""
