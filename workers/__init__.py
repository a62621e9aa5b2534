"""Celery application and tasks of llmd-incident-bot."""
