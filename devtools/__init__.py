"""Helpers shared by tests/ and benchmarks/: the real command (commands.py) and real services (services.py)."""
