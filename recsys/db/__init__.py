"""Persistence: SQLAlchemy models, engine set-up, the schema revision check and repositories
(the migrations themselves live in ``migrations/``)."""
