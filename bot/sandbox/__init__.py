"""Emulated llm-d cluster parts for demos, rehearsals and tests."""
