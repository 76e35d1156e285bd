"""Parquet schemas of the event files, kept for the modules that import them from here.

Every table's schema is the data contract's (:mod:`recsys.contract`: ``PLAYS.schema``,
``THUMBS.schema``, ``TRACKS.schema``...); import them from there.
"""

from __future__ import annotations

from recsys.contract import PLAYS, THUMBS

PLAY_SCHEMA = PLAYS.schema
THUMB_SCHEMA = THUMBS.schema
