"""One way to get a SparkSession, for the CLI, spark-submit and the tests.

A session this process starts itself (the embedded ``local[*]`` default, not a
``spark-submit`` run) is quiet and tidy: its JVM logs through Python's logging (logger
``spark``, in the process's format, at ERROR unless the process logs at INFO or below), it
binds to the loopback address, its temporary folders live under ``local_dir`` (removed by
:func:`stop_spark`, and those of a killed process by the next session), and
:func:`stop_spark` ends the JVM, so a long-lived process (``cratedigger demo`` serving
pages) does not keep its heap.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
#: The logger the JVM's lines go to.
jvm_log = logging.getLogger("spark")

#: log4j2 configuration of a JVM this process starts: one line per record, ``LEVEL logger:
#: message`` with the stack trace on the same line, read back by :func:`_forward_jvm_log`.
LOG4J2_PROPERTIES = """\
rootLogger.level = {level}
rootLogger.appenderRef.stderr.ref = stderr
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.alwaysWriteExceptions = false
appender.stderr.layout.pattern = %p %c: %replace{{%m %throwable}}{{[\\r\\n\\t]+}}{{ }}%n
# Hadoop's "Unable to load native-hadoop library": the built-in Java classes are fine here.
logger.nativecode.name = org.apache.hadoop.util.NativeCodeLoader
logger.nativecode.level = error
"""

_JVM_LINE = re.compile(r"^(TRACE|DEBUG|INFO|WARN|ERROR|FATAL) (\S+): (.*)$")
_LEVELS = {"TRACE": 5, "DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40, "FATAL": 50}


def jvm_log_level(python_level: int) -> str:
    """The JVM's log4j level for this process's: Spark's INFO is a flood, so its records
    show from ``-v`` (INFO) as WARN and up, and only at DEBUG as INFO and up."""
    if python_level <= logging.DEBUG:
        return "info"
    if python_level <= logging.INFO:
        return "warn"
    return "error"


def get_spark(
    master: str | None,
    *,
    app_name: str = "cratedigger",
    shuffle_partitions: int = 8,
    local_dir: Path | None = None,
    driver_memory: str = "4g",
) -> SparkSession:
    """Start (or reuse) a SparkSession.

    ``master=None`` leaves the master to ``spark-submit`` (a cluster run); otherwise it is
    set, e.g. ``local[*]`` for the embedded default. Timestamps are always UTC.
    ``local_dir``: the folder for Spark's scratch files (its local directories, the JVM's
    temporary folder and the SQL warehouse), one ``session-<pid>-*`` folder per session;
    default: ``cratedigger-spark`` in the system's temporary folder. ``driver_memory``: the
    heap of a local JVM started here (``spark.driver.memory``).
    """
    conf = SparkConf().setAppName(app_name)
    if master is not None:
        conf.setMaster(master)
    # A JVM started here gets its own folder; a running one (a test's) keeps its own.
    launching = master is not None and _may_launch_jvm()
    session_dir: Path | None = None
    if master is not None and master.startswith("local"):
        if launching:
            default = Path(tempfile.gettempdir()) / "cratedigger-spark"
            session_dir = _session_dir(local_dir or default)
            conf.set("spark.sql.warehouse.dir", str(session_dir / "warehouse"))
        conf.setAll(
            [
                ("spark.ui.enabled", "false"),
                ("spark.ui.showConsoleProgress", "false"),
                ("spark.driver.bindAddress", "127.0.0.1"),
                ("spark.driver.host", "127.0.0.1"),
                ("spark.driver.memory", driver_memory),
                # Python workers (if a job ever needs them) run in this interpreter, with its
                # packages, not whatever `python3` is first on the PATH.
                ("spark.pyspark.python", sys.executable),
            ]
        )
    conf.setAll(
        [
            ("spark.sql.session.timeZone", "UTC"),
            ("spark.sql.shuffle.partitions", str(shuffle_partitions)),
            ("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS"),
        ]
    )
    if launching:
        _launch_jvm(conf, session_dir)
    spark = SparkSession.builder.config(conf=conf).getOrCreate()
    spark.sparkContext.setLogLevel(jvm_log_level(logging.getLogger().getEffectiveLevel()).upper())
    if session_dir is not None:
        spark.conf.set("cratedigger.session.dir", str(session_dir))
    return spark


def stop_spark(spark: SparkSession) -> None:
    """Stop the session, end the JVM this process started for it (the next
    :func:`get_spark` starts a new one) and remove its scratch folder."""
    session_dir = spark.conf.get("cratedigger.session.dir", None)
    spark.stop()
    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None) if gateway is not None else None
    if gateway is not None and proc is not None:  # not spark-submit's JVM: ours to end
        gateway.shutdown()
        if proc.stdin is not None:
            proc.stdin.close()  # the gateway server exits when its stdin ends
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log.warning("the Spark JVM (pid %d) did not exit; killing it", proc.pid)
            proc.kill()
            proc.wait()
        SparkContext._gateway = None
        SparkContext._jvm = None
    if session_dir:
        shutil.rmtree(session_dir, ignore_errors=True)


@contextmanager
def spark_session(
    master: str | None,
    *,
    app_name: str = "cratedigger",
    shuffle_partitions: int = 8,
    local_dir: Path | None = None,
    driver_memory: str = "4g",
) -> Iterator[SparkSession]:
    """A session for one job: the active one if there is one (a test's, a worker's), left
    running; else a new one, stopped with its JVM when the block ends (:func:`stop_spark`)."""
    if SparkSession.getActiveSession() is not None:
        yield get_spark(master, app_name=app_name, shuffle_partitions=shuffle_partitions)
        return
    spark = get_spark(
        master,
        app_name=app_name,
        shuffle_partitions=shuffle_partitions,
        local_dir=local_dir,
        driver_memory=driver_memory,
    )
    try:
        yield spark
    finally:
        stop_spark(spark)


@contextmanager
def task_progress(spark: SparkSession, bar: Any, every_s: float = 0.5) -> Iterator[None]:
    """Show the block's Spark work on ``bar`` (a tqdm bar): tasks done of the tasks of every
    stage seen so far, and the stages, polled from Spark's status tracker by a thread."""
    tracker = spark.sparkContext.statusTracker()
    bar.unit = "task"
    stages: dict[int, tuple[int, int]] = {}  # stage id -> (tasks, done)
    stop = threading.Event()

    def poll() -> None:
        while True:
            for stage_id in tracker.getActiveStageIds():
                info = tracker.getStageInfo(stage_id)
                if info is not None:
                    stages[stage_id] = (info.numTasks, info.numCompletedTasks)
            _show(bar, stages)
            if stop.wait(every_s):
                return

    thread = threading.Thread(target=poll, name="spark-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        # Stages that ended between two polls: done.
        _show(bar, {stage: (tasks, tasks) for stage, (tasks, _) in stages.items()})
        bar.close()


def _show(bar: Any, stages: dict[int, tuple[int, int]]) -> None:
    bar.total = sum(tasks for tasks, _ in stages.values())
    bar.n = sum(done for _, done in stages.values())
    bar.set_postfix_str(f"{len(stages)} stages", refresh=False)
    bar.refresh()


def _may_launch_jvm() -> bool:
    """Whether getOrCreate would start a JVM here (not under spark-submit, none running)."""
    return SparkContext._gateway is None and "PYSPARK_GATEWAY_PORT" not in os.environ


def _session_dir(local_dir: Path) -> Path:
    """A new ``session-<pid>-*`` folder under ``local_dir``, after removing those of
    processes that are gone (killed before they could clean up)."""
    local_dir.mkdir(parents=True, exist_ok=True)
    for folder in local_dir.glob("session-*"):
        pid = folder.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"session-{os.getpid()}-", dir=local_dir))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _launch_jvm(conf: SparkConf, session_dir: Path | None) -> None:
    """Start the JVM with its log4j2 configuration and its standard error read into
    Python's logging, as pyspark would otherwise start it (with its stderr on ours)."""
    from pyspark.java_gateway import launch_gateway

    folder = session_dir or Path(tempfile.mkdtemp(prefix="cratedigger-spark-"))
    properties = folder / "log4j2.properties"  # read once, as the JVM starts
    level = jvm_log_level(logging.getLogger().getEffectiveLevel())
    properties.write_text(LOG4J2_PROPERTIES.format(level=level))
    options = [f"-Dlog4j2.configurationFile={properties.as_uri()}"]
    if session_dir is not None:
        options.append(f"-Djava.io.tmpdir={session_dir}")
    existing = conf.get("spark.driver.extraJavaOptions", "")
    conf.set("spark.driver.extraJavaOptions", " ".join([existing or "", *options]).strip())
    # The JVM's environment is this process's: Utils' "hostname resolves to a loopback
    # address" is decided before any conf is read, and SPARK_LOCAL_DIRS (unlike
    # spark.local.dir, which Spark warns a cluster manager overrides) puts blockmgr-* and
    # spark-* in the session's folder.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    previous = os.environ.get("SPARK_LOCAL_DIRS")
    if session_dir is not None:
        os.environ["SPARK_LOCAL_DIRS"] = str(session_dir)
    try:
        gateway = launch_gateway(conf, popen_kwargs={"stderr": subprocess.PIPE})  # type: ignore[no-untyped-call]
    finally:
        if session_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
        if previous is None:
            os.environ.pop("SPARK_LOCAL_DIRS", None)
        else:
            os.environ["SPARK_LOCAL_DIRS"] = previous
    proc = gateway.proc
    if proc is not None and proc.stderr is not None:
        threading.Thread(
            target=_forward_jvm_log, args=(proc.stderr,), name="spark-jvm-log", daemon=True
        ).start()
    SparkContext._gateway = gateway
    SparkContext._jvm = gateway.jvm


def _forward_jvm_log(stream: IO[bytes]) -> None:
    """Each line the JVM writes to its standard error, as a record of the ``spark`` logger
    at its log4j level; lines of the JVM itself (its "Using incubator modules" notice) at
    DEBUG."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        if not line:
            continue
        match = _JVM_LINE.match(line)
        if match is None:
            jvm_log.debug("%s", line)
            continue
        level, source, message = match.groups()
        jvm_log.log(_LEVELS[level], "%s", message.strip(), extra={"source": source})
    stream.close()


__all__: list[Any] = ["get_spark", "spark_session", "stop_spark", "task_progress"]
