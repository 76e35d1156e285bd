"""``cratedigger import listenbrainz|lastfm|spotify FILE...``: listening histories into a data
directory (:mod:`jobs.imports`)."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import F, command_settings, friendly_errors, progress
from recsys.contract import is_valid_id


def _check_user(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not is_valid_id(value):
        raise click.BadParameter(
            f"{value!r} is not a listener id (1-128 letters, digits and _.:@+=-)"
        )
    return value


def _import_options(command: F) -> F:
    options = [
        click.argument(
            "files",
            nargs=-1,
            required=True,
            type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
        ),
        click.option(
            "--data",
            "data_dir",
            type=click.Path(file_okay=False, path_type=Path),
            required=True,
            help="Data directory to add to (created if missing).",
        ),
        click.option(
            "--user",
            "user_id",
            callback=_check_user,
            help="Listener of rows whose file names none; a listener the file names wins.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _run(fmt: str, files: tuple[Path, ...], data_dir: Path, user_id: str | None) -> None:
    from jobs.imports import describe, import_history

    command_settings()
    for source in files:
        report = import_history(fmt, source, data_dir, default_user=user_id, progress=progress)
        for line in describe(report):
            click.echo(line)


@click.group("import")
def import_group() -> None:
    """Import listening histories (ListenBrainz, Last.fm, Spotify) into a data directory.

    Each FILE adds its tracks and artists to the catalog and its plays to
    events/plays/imported/; importing a file again adds nothing. Rows that cannot be
    imported are counted by reason and written to DIR/imports/refused/.
    """


@import_group.command("listenbrainz")
@_import_options
@friendly_errors
def listenbrainz(files: tuple[Path, ...], data_dir: Path, user_id: str | None) -> None:
    """ListenBrainz exports: the ZIP of listens, its listens/*.jsonl files, or a JSON array."""
    _run("listenbrainz", files, data_dir, user_id)


@import_group.command("lastfm")
@_import_options
@friendly_errors
def lastfm(files: tuple[Path, ...], data_dir: Path, user_id: str | None) -> None:
    """Last.fm scrobbles: CSV (artist,album,track,date, or a header naming the columns) or
    the JSON of user.getRecentTracks pages. A CSV names no listener: give --user."""
    _run("lastfm", files, data_dir, user_id)


@import_group.command("spotify")
@_import_options
@friendly_errors
def spotify(files: tuple[Path, ...], data_dir: Path, user_id: str | None) -> None:
    """Spotify extended streaming history (Streaming_History_Audio_*.json); podcasts and
    audiobooks are refused as not music."""
    _run("spotify", files, data_dir, user_id)
