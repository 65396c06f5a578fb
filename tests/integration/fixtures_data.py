"""Session fixtures for the data integration tests (see conftest.py)."""
