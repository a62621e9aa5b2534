"""Adapters to external systems: the only modules that import vendor SDKs."""
