"""Runbooks: the engine that runs them, the adapters their steps use, and the guards' decisions.

The pure core (step types, file format, expressions, planning) is ``bot.plan``; Redis state is in
``bot.storage.runs`` and ``bot.storage.guards``.
"""
