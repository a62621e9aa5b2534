"""The bot's HTTP side (ASGI)."""
