"""Unit tests: no Docker daemon, no network. The Docker fixtures are in tests/e2e/conftest.py."""
