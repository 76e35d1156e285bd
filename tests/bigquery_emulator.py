"""Start bqemulator (BigQuery's REST API on DuckDB) for the tests, offline.

``python -m tests.bigquery_emulator --port N``. Two patches, applied in this process
before the server starts (see ../shared/TESTING.md): DuckDB's spatial extension is not
loaded (it would be downloaded), and uploads of any media type are accepted (the client's
load jobs send ``*/*``). ``BQEMU_ENABLE_FORMAT_EXTENSIONS=false`` keeps the avro extension
from being downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--project", default="cratedigger-test")
    args = parser.parse_args()
    os.environ["BQEMU_ENABLE_FORMAT_EXTENSIONS"] = "false"

    from bqemulator.api.routes import upload
    from bqemulator.storage import engine

    engine.DuckDBEngine._load_spatial = lambda self: None  # type: ignore[method-assign]
    upload._PERMITTED_MEDIA_CONTENT_TYPES += ("*/*",)  # type: ignore[assignment]
    from bqemulator.cli import main as emulator

    sys.argv = [
        "bqemulator",
        "start",
        "--rest-host",
        "127.0.0.1",
        "--rest-port",
        str(args.port),
        "--grpc-host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--project",
        args.project,
    ]
    emulator()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
