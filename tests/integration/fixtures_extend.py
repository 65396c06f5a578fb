"""Session fixtures for the extend integration tests (see conftest.py)."""
