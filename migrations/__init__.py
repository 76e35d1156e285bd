"""Alembic environment and revisions, and the functions that run them from code.

Only ``cratedigger db upgrade`` / ``downgrade`` (and the CLI for a database it owns, see
:mod:`cli.options`), the containers' entry point and the tests migrate. The web app and the
weekly run only check the revision (:mod:`recsys.db.schema`).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

SCRIPT_LOCATION = Path(__file__).parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    # '%' is ConfigParser's interpolation character and may occur in passwords.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (default: the newest)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def head_revision() -> str | None:
    """The newest revision in ``versions/``."""
    return ScriptDirectory(str(SCRIPT_LOCATION)).get_current_head()
