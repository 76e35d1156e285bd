"""Listeners' thumbs from the web app back into the weekly run, as thumb events.

The web app stores each thumb in the ``feedback`` table (durable when the request
answers). Before a week is aggregated, every thumb given before the week's cut-off is
written as one Parquet file in the data contract's thumbs format, and the Spark job reads
that folder beside ``events/thumbs/``: the same validation, deduplication and quarantine
apply, and the export is deterministic, so re-running a week reads the same rows.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from recsys.contract import THUMBS, week_cutoff
from recsys.db.feedback import feedback_before

log = logging.getLogger(__name__)


def export_feedback(db: Any, folder: Path, week_start: dt.date) -> tuple[Path, int]:
    """Write the thumbs of the database ``db`` (a session factory) given before the week's
    cut-off into ``folder``, an aggregation's feedback folder (:meth:`jobs.week.Storage.feedback`).

    Returns the folder and the number of thumbs written. The file is replaced whole
    (written to a temporary file, then renamed), so a reader never sees half a file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "thumbs.parquet"
    partial = folder / "thumbs.parquet.partial"
    cutoff = week_cutoff(week_start)
    written = 0
    with db() as session, pq.ParquetWriter(partial, THUMBS.schema) as writer:
        for batch in feedback_before(session, cutoff):
            users, tracks, rated, values = zip(*batch, strict=True)
            writer.write_table(
                pa.table(
                    {
                        "user_id": pa.array(users, pa.string()),
                        "track_id": pa.array(tracks, pa.string()),
                        "rated_at": pa.array(
                            [_utc(t) for t in rated], THUMBS.schema.field("rated_at").type
                        ),
                        "value": pa.array(values, THUMBS.schema.field("value").type),
                    },
                    schema=THUMBS.schema,
                )
            )
            written += len(batch)
    partial.replace(target)
    log.info("exported %d web thumbs before %s to %s", written, cutoff.isoformat(), target)
    return folder, written


def _utc(moment: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
