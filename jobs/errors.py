"""Errors told in one line: what an operator reads in ``status``, the run report and logs.

A Spark failure arrives as a Java exception whose text is a 200-line stack trace; the
line that matters is the deepest ``Caused by:`` (or the first line of the message). Python
errors keep their type and first line.
"""

from __future__ import annotations

import re

MAX_CHARS = 500

# "An error occurred while calling o52.parquet." — py4j's preamble, not the cause.
_PY4J_PREAMBLE = re.compile(r"^An error occurred while calling \S+\.?$")
_FRAME = re.compile(r"^\s*(at |\.\.\. \d+ more|File \"|Traceback )")
_JAVA_CLASS = re.compile(r"^(?:[a-z_$][\w$]*\.)+([A-Z][\w$]*(?:Exception|Error)):\s*")


def describe_error(exc: BaseException) -> str:
    """One line saying what went wrong: ``Type: message``, without stack frames.

    For errors raised in the JVM (py4j, PySpark's captured exceptions) the root cause is
    the deepest ``Caused by:`` line, with the Java package dropped.
    """
    name = type(exc).__name__
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not _FRAME.match(line)]
    if "JVM stacktrace:" in lines:
        lines = lines[: lines.index("JVM stacktrace:")]
    causes = [
        line.removeprefix("Caused by:").strip() for line in lines if line.startswith("Caused by:")
    ]
    if causes:
        message = causes[-1]
    else:
        message = next((line for line in lines if not _PY4J_PREAMBLE.match(line)), "")
        message = message.removeprefix(": ")
    java = _JAVA_CLASS.match(message)
    if java:
        name, message = java.group(1), message[java.end() :]
    line = f"{name}: {message}" if message else name
    return line if len(line) <= MAX_CHARS else line[: MAX_CHARS - 1] + "…"
