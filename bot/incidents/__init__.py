"""Incidents: lifecycle (pure transition table), intake decisions and their Redis store."""
