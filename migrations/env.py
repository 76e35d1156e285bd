"""Alembic environment: the URL comes from the config (``migrations.alembic_config``) or
the settings."""

from __future__ import annotations

from alembic import context

from recsys.db.engine import make_engine
from recsys.db.models import Base

config = context.config
#: Key of the PostgreSQL advisory lock held while migrating (any constant; "crate" in ASCII).
MIGRATION_LOCK = 0x6372617465
target_metadata = Base.metadata


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from recsys.settings import load_settings

    return load_settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_database_url())
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # Batch migrations rebuild tables (copy, drop, rename); with foreign keys on,
            # dropping a parent table would cascade-delete its children's rows. The pragma
            # only takes effect outside a transaction, hence before it begins.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        if connection.dialect.name == "postgresql":
            # Processes that start together (workers, web, CLI) may all upgrade at once: one
            # migrates, the others wait and then find nothing to do. The lock is released
            # when the connection closes.
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
            connection.commit()
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
