"""The Spark JVM a local aggregation starts takes its heap from CRATEDIGGER_SPARK_DRIVER_MEMORY
(in a process of its own: the tests' shared session is already running)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.settings import ConfigError, load_settings

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = """
import sys
from pathlib import Path
from jobs.spark import spark_session
from recsys.settings import load_settings
settings = load_settings()
with spark_session("local[1]", local_dir=Path(sys.argv[1]),
                   driver_memory=settings.spark_driver_memory) as spark:
    runtime = spark.sparkContext._jvm.java.lang.Runtime.getRuntime()
    print(runtime.maxMemory() // 2**20)
"""


@pytest.mark.spark
def test_the_jvm_heap_is_the_setting(tmp_path: Path) -> None:
    env = {"CRATEDIGGER_SPARK_DRIVER_MEMORY": "700m", "CRATEDIGGER_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(tmp_path / "spark")],
        cwd=ROOT,
        env={**_inherited(), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    heap_mb = int(done.stdout.split()[-1])
    # The JVM reports a little less than -Xmx (one survivor space is not counted).
    assert 500 < heap_mb <= 700, heap_mb


def _inherited() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CRATEDIGGER_")}


@pytest.mark.parametrize("value", ["4", "4 g", "0g", "-1g", "4gb", "4g; rm -rf /"])
def test_a_driver_memory_that_is_not_a_size_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="CRATEDIGGER_SPARK_DRIVER_MEMORY"):
        load_settings(spark_driver_memory=value)
