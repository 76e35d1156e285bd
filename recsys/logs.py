"""Structured logging: one line per record, ``key=value`` (``console``) or JSON (``json``).

Every record of the process goes through the one handler :func:`configure_logging` puts on
the root logger, whatever its source: this project's modules, Spark's JVM (forwarded by
:mod:`jobs.spark` as logger ``spark``), Flask's development server (``werkzeug``), Celery
and, through :func:`gunicorn_logconfig`, gunicorn. A ``console`` line is logfmt::

    ts=2026-11-16T00:00:01.250Z level=info logger=jobs.weekly event="stage train started"

values with spaces, quotes or ``=`` in double quotes (JSON string escapes), terminal colour
codes removed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
#: Terminal colour and style codes (werkzeug colours its lines).
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BARE = re.compile(r"^[^\s\"=\\]+$")

#: Third-party loggers that narrate routine work at INFO: shown from DEBUG only.
_CHATTY = ("py4j", "alembic")


def logfmt_value(value: Any) -> str:
    """``value`` as a logfmt value: bare when it has no space, quote, backslash or ``=``,
    else a JSON string."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text and _BARE.match(text):
        return text
    return json.dumps(text, ensure_ascii=False)


class Formatter(logging.Formatter):
    """One line per record: logfmt (``as_json=False``) or a JSON object."""

    def __init__(self, as_json: bool = False) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _ANSI.sub("", record.getMessage()).strip(),
        }
        event.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            event["stack"] = self.formatStack(record.stack_info)
        if self.as_json:
            return json.dumps(event, default=str)
        return " ".join(f"{key}={logfmt_value(value)}" for key, value in event.items())


def _level_number(level: str | int) -> int:
    return level if isinstance(level, int) else logging.getLevelNamesMapping()[level.upper()]


def configure_logging(level: str | int = "INFO", fmt: str = "console") -> None:
    """Send every logger's records to stderr in the chosen format (idempotent)."""
    handler = logging.StreamHandler()
    handler.setFormatter(Formatter(as_json=fmt == "json"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_cratedigger", False):
            root.removeHandler(existing)
    handler._cratedigger = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    number = _level_number(level)
    root.setLevel(number)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(number, logging.WARNING))
    # werkzeug sets its own logger to INFO unless it has a level: its request lines and
    # its development-server notice then follow the process's level.
    logging.getLogger("werkzeug").setLevel(number)


def gunicorn_logconfig(level: str = "INFO", fmt: str = "console") -> dict[str, Any]:
    """gunicorn's ``logconfig_dict``: its error and access lines in this format, e.g.
    ``logconfig_dict = gunicorn_logconfig(settings.log_level, settings.log_format)`` in a
    gunicorn configuration file."""
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "cratedigger",
        "stream": "ext://sys.stderr",
    }
    logger = {"handlers": ["stderr"], "level": level, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"cratedigger": {"()": Formatter, "as_json": fmt == "json"}},
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {"gunicorn.error": logger, "gunicorn.access": logger},
    }
