"""Structured logging: one line per event, ``key=value`` on a terminal or JSON for collectors."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        event.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        if self.as_json:
            return json.dumps(event, default=str)
        head = (
            f"{event.pop('ts')} {event.pop('level'):<7} {event.pop('logger')}: {event.pop('event')}"
        )
        rest = " ".join(f"{key}={value!r}" for key, value in event.items())
        return f"{head} {rest}".rstrip()


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    """Send every logger's records to stderr in the chosen format (idempotent)."""
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter(as_json=fmt == "json"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_cratedigger", False):
            root.removeHandler(existing)
    handler._cratedigger = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Spark's py4j gateway logs every call at INFO.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    # Alembic narrates every connection at INFO; the commands report what they migrated.
    logging.getLogger("alembic").setLevel(logging.WARNING)
