"""One way to get a SparkSession, for the CLI, spark-submit and the tests."""

from __future__ import annotations

import sys
import tempfile

from pyspark.sql import SparkSession


def get_spark(
    master: str | None, *, app_name: str = "cratedigger", shuffle_partitions: int = 8
) -> SparkSession:
    """Start (or reuse) a SparkSession.

    ``master=None`` leaves the master to ``spark-submit`` (a cluster run); otherwise it is
    set, e.g. ``local[*]`` for the embedded default. Timestamps are always UTC.
    """
    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    if master is not None and master.startswith("local"):
        builder = (
            builder.config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.sql.warehouse.dir", tempfile.mkdtemp(prefix="cratedigger-warehouse-"))
            .config("spark.driver.memory", "4g")
            # Python workers (if a job ever needs them) run in this interpreter, with its
            # packages, not whatever `python3` is first on the PATH.
            .config("spark.pyspark.python", sys.executable)
        )
    spark = (
        builder.config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark
