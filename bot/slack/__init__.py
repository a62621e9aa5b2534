"""The Slack side: Block Kit rendering, notifier, slash command and button handling, authorization."""
