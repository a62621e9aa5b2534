"""The runbook core (pure): step types, the runbook file format, the expression language, planning.

No I/O here and no feature package: the engine (``bot.runbook``) and the shipped steps (``bot.steps``)
build on it. Importing ``bot.steps`` registers the shipped step types in :mod:`bot.plan.steptypes`.
"""
