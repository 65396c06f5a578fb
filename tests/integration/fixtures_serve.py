"""Session fixtures for the serve integration tests (see conftest.py)."""
