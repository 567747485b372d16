"""Structured logging, configured once at each entry point before anything else (D§10).

JSON lines when stderr is not a terminal (services, CI), readable console lines on a terminal. Context variables
(pbx_id, call_id, correlation_id) bound with :func:`bind` appear on every line logged in that task.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

_SECRET_KEYS = re.compile(r"(secret|password|token|authorization|api_key|apikey)", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+")
_configured = False


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Last line of defence: secret-looking keys are masked and bearer tokens cut out of messages."""
    for key in list(event_dict):
        if _SECRET_KEYS.search(key) and key != "event":
            event_dict[key] = "***"
        elif isinstance(event_dict[key], str) and "Bearer" in event_dict[key]:
            event_dict[key] = _BEARER.sub(r"\1***", event_dict[key])
    return event_dict


def setup_logging(level: str = "INFO", fmt: Literal["auto", "json", "console"] = "auto") -> None:
    """Route stdlib logging and structlog through one formatter. Safe to call more than once."""
    global _configured
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        # exceptions become their traceback text (JSON would carry only their repr), then that text is redacted
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_masterlinc", False):
            root.removeHandler(old)
    handler._masterlinc = True  # type: ignore[attr-defined]  # marks our handler so a second call replaces it
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("nats", "httpx", "httpcore", "uvicorn.access", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    _configured = True


def _route_to_stdlib() -> None:
    """Before setup_logging runs (library use, tests), structlog must not print to stdout: stdio is a transport
    for the MCP server. Route it to stdlib logging, which shows warnings on stderr until configured."""
    if not structlog.is_configured():
        structlog.configure(
            processors=[structlog.contextvars.merge_contextvars, _redact, structlog.stdlib.render_to_log_kwargs],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=False,
        )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    _route_to_stdlib()
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def bind(**values: str | None) -> None:
    """Bind pbx_id / call_id / correlation_id (or any key) to every log line of the current task."""
    structlog.contextvars.bind_contextvars(**{k: v for k, v in values.items() if v is not None})
