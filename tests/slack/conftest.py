"""Slack fixtures (`emulator`, `slack_settings`) are in tests/support/fixtures.py, shared with PagerDuty."""
