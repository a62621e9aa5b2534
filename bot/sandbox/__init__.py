"""Loopback emulators of external systems, for the demo, rehearsals and tests."""
