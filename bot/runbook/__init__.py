"""Runbooks: the file format, the step registry, guards, planning and the engine that runs them."""
