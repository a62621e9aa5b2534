"""Incidents: the lifecycle state machine (pure) and, later, the Redis store, timeline and audit."""
