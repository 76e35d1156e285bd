"""Parquet schemas of the event files of the data contract (README, "Data contract"), as
written by the simulator and by the weekly export of the web app's thumbs."""

from __future__ import annotations

import pyarrow as pa

#: ``events/plays/``
PLAY_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("track_id", pa.string()),
        ("played_at", pa.timestamp("us", tz="UTC")),
        ("ms_played", pa.int64()),
    ]
)
#: ``events/thumbs/`` (value +1 or -1)
THUMB_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("track_id", pa.string()),
        ("rated_at", pa.timestamp("us", tz="UTC")),
        ("value", pa.int32()),
    ]
)
