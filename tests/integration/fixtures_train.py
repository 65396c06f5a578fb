"""Session fixtures for the train integration tests (see conftest.py)."""
