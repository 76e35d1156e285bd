"""gunicorn configuration for the web app:
``gunicorn -c python:webapp.gunicorn_conf "webapp:create_app()"``.

gunicorn's own ``GUNICORN_CMD_ARGS`` (e.g. ``--workers 8``) and command-line flags override
these. The app itself reads only ``CRATEDIGGER_*`` settings.
"""

from __future__ import annotations

import multiprocessing

from recsys.logs import gunicorn_logconfig
from recsys.settings import load_settings

bind = "0.0.0.0:8000"
# Sync workers: every request is a few indexed reads of precomputed playlists, so processes
# (not threads) use the cores; 2 x cores + 1 is gunicorn's own advice.
workers = multiprocessing.cpu_count() * 2 + 1
worker_class = "sync"
timeout = 30
graceful_timeout = 30
keepalive = 5
# Restart workers now and then, so that a slow leak cannot grow for ever.
max_requests = 10_000
max_requests_jitter = 1_000
# Load the app (and its settings check) once in the master: a missing
# CRATEDIGGER_SECRET_KEY stops the server at start, not in every worker.
preload_app = True
# Behind a reverse proxy: set CRATEDIGGER_TRUSTED_PROXIES, which the app applies itself.
forwarded_allow_ips = "127.0.0.1"
accesslog = "-"
errorlog = "-"
# gunicorn's own lines in CRATEDIGGER_LOG_FORMAT at CRATEDIGGER_LOG_LEVEL, like the app's.
_settings = load_settings()
logconfig_dict = gunicorn_logconfig(_settings.log_level, _settings.log_format)
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
