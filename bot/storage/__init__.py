"""The storage layer: every Redis key, command and pipeline of the bot's state lives here.

Features and the core never talk to Redis themselves; they get these objects from ``bot.wiring``.
"""
