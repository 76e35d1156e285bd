"""Progress of long steps: a Celery run followed by ``run-week --via-celery`` shows its steps
and its generate chunks (done / total) with ``--progress``, on a real worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.test_celery import WEEK, Env, env, redis_server, world  # noqa: F401 (fixtures)


@pytest.mark.spark
def test_run_week_via_celery_shows_steps_and_chunks_done_of_total(env: Env) -> None:  # noqa: F811
    env.start_worker(concurrency=2)
    command = [sys.executable, "-c", "from cli.main import main; main()", "--progress"]
    command += ["run-week", "--via-celery", "--week", WEEK.isoformat(), "--data", str(env.world)]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, **env.variables},
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    finished = re.search(r"^run #(\d+) succeeded; (\d+) generate chunks done$", result.stdout, re.M)
    assert finished is not None, result.stdout
    run_id, chunks = finished.groups()
    assert int(chunks) > 1
    # tqdm redraws a bar in place (\r, and cursor moves for the second bar): the last
    # drawing of each is its final state.
    drawings = re.split(r"[\r\n]|\x1b\[A", result.stderr)
    steps = [d for d in drawings if d.startswith(f"run #{run_id}:")]
    assert steps and "5/5" in steps[-1], steps[-3:]
    generated = [d for d in drawings if d.startswith("generate chunks:")]
    assert generated and f"{chunks}/{chunks}" in generated[-1], generated[-3:]
