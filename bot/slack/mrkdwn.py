"""Making untrusted text inert in Slack mrkdwn.

Slack treats ``<…>`` as control sequences (``<!channel>``, ``<@U123>``, ``<http://x|y>``) and decodes only
the three entities ``&amp;``, ``&lt;`` and ``&gt;``. Escaping exactly those three characters therefore
turns any alert-provided text into literal text that pings nobody and links nowhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")
_SAFE_URL = re.compile(r"^https?://[^\s<>|\"]+$")

#: Longest piece of untrusted text put into one block (section text is capped at 3000 by Slack).
MAX_TEXT = 1500


def escape(text: object, limit: int = MAX_TEXT) -> str:
    """Text made inert for mrkdwn (&, <, > escaped), at most `limit` characters, entities never cut."""
    value = str(text)
    out = value.translate(_ESCAPES)
    keep = len(value)
    while len(out) > limit:
        keep -= max(1, (len(out) - limit + 4) // 5 + 1)
        out = value[: max(0, keep)].translate(_ESCAPES) + "…"
    return out


def escape_tree(value: object, limit: int = MAX_TEXT) -> object:
    """Every string inside nested dicts/lists escaped (keys too); other scalars kept."""
    if isinstance(value, str):
        return escape(value, limit)
    if isinstance(value, Mapping):
        return {escape(k, 200): escape_tree(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [escape_tree(v, limit) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return escape(value, limit)


def mention(user_id: str | None) -> str:
    """A `<@U…>` mention for a well-formed user ID, otherwise the escaped text itself."""
    if user_id and _USER_ID.match(user_id):
        return f"<@{user_id}>"
    return escape(user_id or "nobody", 100)


def safe_url(url: str | None) -> str | None:
    """The URL if it is a plain http(s) URL fit for a Block Kit button, else None."""
    if url and len(url) <= 3000 and _SAFE_URL.match(url):
        return url
    return None


def slack_date(at: datetime) -> str:
    """A `<!date^…>` token Slack shows in each reader's own time zone, with a UTC fallback."""
    fallback = at.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def to_plain(text: str) -> str:
    """The three entities decoded again (what a reader sees), for logs and console output."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
