"""``cratedigger bigquery``: what a week would scan, and the export of a published week."""

from __future__ import annotations

import datetime as dt

import click

from cli.options import command_settings, friendly_errors, source_option, week_option
from recsys.contract import week_cutoff


@click.group()
def bigquery() -> None:
    """BigQuery: the cost of a week's queries, and the export of published playlists.

    A source named bigquery://PROJECT/DATASET (`--data` of run-week and aggregate, or
    CRATEDIGGER_SOURCE_DIR) reads the tables CRATEDIGGER_BIGQUERY_*_TABLE name.
    """


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.2f} {unit}"
        size /= 1024
    return f"{n} B"


@bigquery.command()
@source_option("bigquery://PROJECT/DATASET; default: CRATEDIGGER_SOURCE_DIR.")
@week_option()
@friendly_errors
def estimate(data_dir: str | None, week: dt.date) -> None:
    """Dry-run the week's queries and print the bytes each would scan (nothing billed)."""
    from jobs.bigquery import BigQueryConfig, BigQuerySource
    from jobs.bigquery import estimate as estimate_week
    from jobs.sources import SourceError, open_source

    settings = command_settings()
    source = open_source(data_dir or settings.events_source, BigQueryConfig.of(settings))
    if not isinstance(source, BigQuerySource):
        raise SourceError(f"{source.describe()} is not a BigQuery source (bigquery://...)")
    scans = estimate_week(source, week_cutoff(week))
    for table, scanned in scans:
        click.echo(f"{table:<30} {_human(scanned):>14}")
    total = sum(scanned for _, scanned in scans)
    cap = settings.bigquery_maximum_bytes_billed
    limit = (
        f" (cap {_human(cap)} per query)"
        if cap
        else " (no cap: CRATEDIGGER_BIGQUERY_MAXIMUM_BYTES_BILLED)"
    )
    click.echo(f"{'the week of ' + str(week):<30} {_human(total):>14}{limit}")


@bigquery.command()
@week_option()
@friendly_errors
def export(week: dt.date) -> None:
    """Export the week's published playlists to CRATEDIGGER_BIGQUERY_EXPORT_TABLE again
    (its partition of the week is replaced, never duplicated)."""
    from jobs.bigquery import BigQueryConfig, export_week
    from jobs.db import sessions

    settings = command_settings(database=True)
    rows = export_week(BigQueryConfig.of(settings), sessions(settings), week)
    click.echo(f"exported {rows:,} playlist rows of {week} to {settings.bigquery_export_table}")
