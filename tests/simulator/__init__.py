"""Tests of the Kimi API simulator (a package, so its conftest does not shadow tests/conftest)."""
