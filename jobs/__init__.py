"""Spark jobs, the weekly run and its Celery tasks. The Celery app lives in ``jobs.celery``
(found by ``celery -A jobs``) so that importing ``jobs`` itself has no side effects."""
