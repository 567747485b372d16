"""Helpers shared by CLI commands: settings errors as readable messages, not tracebacks."""

from __future__ import annotations

from typing import Any, NoReturn

import typer
from pydantic import ValidationError


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def not_built(command: str, issue: int) -> NoReturn:
    fail(f"`masterlinc {command}` is not built yet (issue #{issue})", code=3)


def settings_or_exit(**overrides: Any) -> Any:
    """Load settings and configure logging; print each validation problem with its location and exit 2."""
    from hub.config import load_settings
    from hub.logs import setup_logging

    try:
        settings = load_settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(settings)"
            lines.append(f"  {loc}: {err['msg']}")
        fail("invalid configuration:\n" + "\n".join(lines))
    setup_logging(settings.log_level, settings.log_format)
    return settings
