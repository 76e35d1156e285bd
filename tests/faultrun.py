"""Run a ``cratedigger`` command that kills itself, like a power cut, at a chosen point.

``python -m tests.faultrun POINT -- ARGS...`` runs ``cratedigger ARGS...`` in this process
after wrapping the function of ``POINT`` so that it SIGKILLs the whole process group (this
Python and Spark's JVM) at that moment. The test starts this in a session of its own.
A kill at an unknown moment (in the middle of Spark) is done from outside instead, by
the test polling the run's progress.

Points:
    train     after ALS is fitted, before the model is saved or recorded
    gate      while the gate compares the model with its baselines
    generate  after the first chunk of playlists is committed, during the second
    publish   inside the publishing transaction, before it commits
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any


def _power_cut() -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _kill_on_call(owner: Any, name: str, *, call: int = 1, after: bool = False) -> None:
    original: Callable[..., Any] = getattr(owner, name)
    calls = 0

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == call and not after:
            _power_cut()
        result = original(*args, **kwargs)
        if calls == call and after:
            _power_cut()
        return result

    setattr(owner, name, wrapper)


def main(argv: list[str]) -> None:
    point, separator, *arguments = argv
    assert separator == "--", "usage: python -m tests.faultrun POINT -- ARGS..."
    import jobs.weekly
    from cli.main import cli
    from recsys.als import ALSModel
    from recsys.db import repository

    if point == "tune":  # killed after the search stored its first trial
        _kill_on_call(repository, "add_tuning_trial", call=2)
    elif point == "train":  # killed mid-artifact: a blend's partners written, ALS's not
        _kill_on_call(ALSModel, "save")
    elif point == "gate":
        _kill_on_call(jobs.weekly, "decide")
    elif point == "generate":
        _kill_on_call(repository, "replace_week_playlists", call=2)
    elif point == "publish":
        _kill_on_call(repository, "publish_week", after=True)
    elif point != "none":
        raise SystemExit(f"unknown point {point!r}")
    cli.main(arguments, prog_name="cratedigger")


if __name__ == "__main__":
    main(sys.argv[1:])
