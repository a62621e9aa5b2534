"""Incidents: lifecycle decisions (pure) and their Redis store."""
