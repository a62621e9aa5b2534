"""Jinja2 for everything an operator sees: sandboxed, strict, and JSON-safe where the output is JSON.

Templates are files under TEMPLATES_DIR; data (alert text included) is only ever passed as context and never
compiled, the environment is `ImmutableSandboxedEnvironment` (no attribute tricks, no mutation) with
`StrictUndefined` (a missing field is an error, not an empty string).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bot.errors import ConfigError


def _json_literal(value: Any) -> str:
    """Every {{ expression }} of a JSON template becomes a JSON literal, so no value escapes its string."""
    return json.dumps(value, ensure_ascii=False, default=str)


@lru_cache(maxsize=8)
def environment(templates_dir: Path, *, json_output: bool) -> ImmutableSandboxedEnvironment:
    """A sandboxed environment over `templates_dir`; JSON templates json-encode every expression."""
    return ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(str(templates_dir)),
        undefined=StrictUndefined,
        autoescape=False,
        finalize=_json_literal if json_output else None,
        keep_trailing_newline=True,
    )


def render_json(templates_dir: Path, name: str, context: dict[str, Any]) -> Any:
    """Render a JSON template and parse it; ConfigError names the template on any failure."""
    try:
        text = environment(templates_dir, json_output=True).get_template(name).render(**context)
        return json.loads(text)
    except (TemplateError, json.JSONDecodeError) as exc:
        raise ConfigError(f"template {name}: {exc}") from exc


def render_text(templates_dir: Path, name: str, context: dict[str, Any]) -> str:
    """Render a text template (e.g. Markdown); ConfigError names the template on any failure."""
    try:
        return environment(templates_dir, json_output=False).get_template(name).render(**context)
    except TemplateError as exc:
        raise ConfigError(f"template {name}: {exc}") from exc


_PARSER = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def check_template(source: str) -> None:
    """Raise jinja2.TemplateSyntaxError when *source* (operator-written text) is not a valid template."""
    _PARSER.parse(source)
