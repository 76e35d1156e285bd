"""The one settings object: every option comes from ``CRATEDIGGER_*`` environment variables.

Nothing else in the project reads ``os.environ``; the CLI, the Spark jobs, the Celery
tasks and ``webapp.create_app()`` all call :func:`load_settings`, so setting
``CRATEDIGGER_DATA_DIR`` and ``CRATEDIGGER_DATABASE_URL`` points every part at the
same state.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys.contract import EARLIEST_EVENT, ConfidenceParams

ENV_PREFIX = "CRATEDIGGER_"
#: A host a Content-Security-Policy source may name: labels, optionally ``*.`` first, an
#: optional port, and ``http://`` or ``https://`` (the default) before it.
_MEDIA_HOST = re.compile(
    r"(https?://)?(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(:[0-9]{1,5})?"
)
#: Hosts an OpenID issuer may be served from over plain http: this machine only.
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: An OAuth scope token (RFC 6749, section 3.3): printable ASCII but space, quote, backslash.
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
#: A BigQuery table name (letters, digits, underscores), as the settings accept it.
BQ_TABLE = r"^[A-Za-z0-9_]{1,1024}$"


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("cratedigger", appauthor=False))


def _confidence_field(name: str, description: str) -> Any:
    """A confidence weight: default and range from :class:`recsys.contract.ConfidenceParams`."""
    low, high = ConfidenceParams.RANGES[name]
    default = getattr(ConfidenceParams(), name)
    return Field(default=default, ge=low, le=high, description=description)


class Settings(BaseSettings):
    """Runtime configuration of every part of cratedigger."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Where the service keeps its state: aggregates, models, quarantine, SQLite.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; default: SQLite file cratedigger.db in the data directory.",
    )
    source_dir: str | None = Field(
        default=None,
        description="What the scheduled weekly run reads: a data directory (catalog/ and "
        "events/) or bigquery://PROJECT/DATASET; default: DATA_DIR/source.",
    )
    earliest_event_at: dt.datetime = Field(
        default=EARLIEST_EVENT,
        description="Events before this time are quarantined (timestamp_before_earliest).",
    )
    unreadable_files: Literal["fail", "quarantine"] = Field(
        default="fail",
        description="A data file that cannot be read at all: fail the run naming the file, "
        "or record the whole file in the quarantine (kind 'file') and go on.",
    )
    run_heartbeat_seconds: int = Field(
        default=15,
        ge=1,
        le=3600,
        description="How often a running weekly run renews its lease.",
    )
    run_lease_seconds: int = Field(
        default=120,
        ge=5,
        le=7 * 24 * 3600,
        description="A run whose lease was not renewed for this long is abandoned by the next "
        "run of its week (a run on this host whose process is gone, at once).",
    )
    spark_master: str = Field(default="local[*]", description="Spark master URL.")
    spark_shuffle_partitions: int = Field(
        default=8, ge=1, le=100_000, description="spark.sql.shuffle.partitions for aggregation."
    )
    spark_driver_memory: str = Field(
        default="4g",
        pattern=r"^[1-9][0-9]{0,6}[kmgt]$",
        description="The heap of the Spark JVM a local aggregation starts (spark.driver.memory: "
        "512m, 4g, ...); on a cluster spark-submit's --driver-memory decides.",
    )
    # ALS defaults: the best trial of the validation search on HetRec 2011 Last.fm 2K, also
    # the best tried on the simulator (benchmarks/results/quality.md).
    als_factors: int = Field(default=32, ge=2, le=1024, description="ALS latent factors.")
    als_regularization: float = Field(default=1.0, ge=0.0, le=100.0)
    als_alpha: float = Field(default=5.0, gt=0.0, le=1000.0, description="ALS confidence scale.")
    als_iterations: int = Field(default=15, ge=1, le=200)
    als_random_seed: int = Field(default=42, ge=0)
    als_use_gpu: Literal["auto", "true", "false"] = Field(
        default="auto",
        description="Train ALS (and the search's trials) with implicit's CUDA solver: 'auto' "
        "when the installed implicit has CUDA, 'true' always (refused without it), 'false' "
        "never.",
    )
    use_tuned_params: bool = Field(
        default=True,
        description="Train with DATA_DIR/tuned_params.json (written by `cratedigger tune`) "
        "for every ALS parameter whose CRATEDIGGER_ALS_* variable is not set.",
    )
    blend: str = Field(
        default="rp3beta:0.5",
        description="Partners blended with ALS and their weights (ALS weighs 1), e.g. "
        "'rp3beta:0.5,bm25:0.3'; partners itemknn, bm25, rp3beta, ease; 'none' for ALS "
        "alone.",
    )
    ease_memory_mb: float = Field(
        default=4096.0,
        ge=1.0,
        le=1_048_576.0,
        description="MiB EASE's dense track x track matrix may take; above it EASE is left "
        "out of the blend.",
    )
    # Self-tuning: the weekly run searches ALS parameters on its own recent weeks.
    tune_every_weeks: int = Field(
        default=4,
        ge=0,
        le=520,
        description="Weeks between the weekly run's own parameter searches (also when there "
        "is no tuned configuration yet); 0 turns self-tuning off.",
    )
    tune_budget_s: float = Field(
        default=600.0, ge=1.0, le=7 * 24 * 3600, description="Seconds a search may take."
    )
    tune_trials: int = Field(
        default=32, ge=1, le=10_000, description="Most configurations a search tries."
    )
    playlist_length: int = Field(default=50, ge=1, le=500)
    max_tracks_per_artist: int = Field(default=2, ge=1, le=500)
    min_user_interactions: int = Field(
        default=1, ge=1, description="Listeners with fewer (user, track) rows get no playlist."
    )
    generate_block_size: int = Field(
        default=2048, ge=1, le=1_000_000, description="Most listeners scored per matrix product."
    )
    generate_memory_mb: float = Field(
        default=1024,
        gt=0,
        le=1_048_576,
        description="Most memory (MiB) one block of generation allocates: blocks are made "
        "smaller than the block size when it would not hold them.",
    )
    skip_weight: float = _confidence_field("skip_weight", "Weight of a skipped play.")
    thumb_up_boost: float = _confidence_field(
        "thumb_up_boost", "Confidence a latest thumb up adds to a listened track."
    )
    thumb_down_confidence: float = _confidence_field(
        "thumb_down_confidence", "Size of the negative confidence of a track thumbed down last."
    )
    confidence_scale: Literal["log", "linear"] = Field(
        default="log",
        description="How completed and skipped plays become confidence: log(1 + plays) or "
        "the plays themselves.",
    )
    half_life_days: float = _confidence_field(
        "half_life_days",
        "Recency: a pair last heard this many days before the cut-off weighs half as much as "
        "one heard at it (0: no decay).",
    )
    # Cold start, re-ranking and the playlist of listeners without history.
    cold_min_plays: int = Field(
        default=5,
        ge=1,
        le=1_000_000,
        description="Tracks with content and at least this many listeners train the "
        "content-to-factor projection that scores tracks nobody has played yet.",
    )
    cold_slots: int = Field(
        default=5,
        ge=0,
        le=500,
        description="Most cold-start tracks per playlist; 0 turns cold start off.",
    )
    cold_min_score_ratio: float = Field(
        default=0.5,
        ge=0.0,
        le=10.0,
        description="A cold track must score at least this times the listener's weakest "
        "personal pick to take a cold slot.",
    )
    # Re-ranking defaults: the most diversity that costs under 2 % NDCG@50 on both benchmark
    # data sets (the sweep in benchmarks/results/quality.md).
    mmr_diversity: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="MMR lambda of the re-ranking: 0 ranks by score only, 1 by dissimilarity "
        "to the tracks already picked only.",
    )
    popularity_penalty: float = Field(
        default=0.1,
        ge=0.0,
        le=10.0,
        description="Relevance the most popular track loses in the re-ranking (beta; 0: none).",
    )
    artist_thumbs_down_limit: int = Field(
        default=2,
        ge=0,
        le=1000,
        description="A listener who thumbed down this many tracks of one artist gets no more "
        "of that artist's tracks; 0 turns this off.",
    )
    rerank_pool_factor: int = Field(
        default=4,
        ge=1,
        le=100,
        description="Personal candidates re-ranked per playlist slot (pool = factor x length).",
    )
    popular_for_new_listeners: bool = Field(
        default=True,
        description="Listeners of the users table without usable history get a popular, "
        "varied playlist (kind 'popular').",
    )
    # BigQuery: a source named bigquery://PROJECT/DATASET reads these tables (jobs.bigquery).
    bigquery_plays_table: str = Field(
        default="plays", pattern=BQ_TABLE, description="Plays table (partition on played_at)."
    )
    bigquery_thumbs_table: str = Field(
        default="thumbs", pattern=BQ_TABLE, description="Thumbs table (partition on rated_at)."
    )
    bigquery_tracks_table: str = Field(default="tracks", pattern=BQ_TABLE)
    bigquery_artists_table: str = Field(default="artists", pattern=BQ_TABLE)
    bigquery_users_table: str = Field(
        default="", pattern=f"^$|{BQ_TABLE}", description="Optional users table; empty: none."
    )
    bigquery_export_table: str = Field(
        default="",
        pattern=r"^$|^[a-z][a-z0-9-]{4,29}\.[A-Za-z0-9_]{1,1024}\.[A-Za-z0-9_]{1,1024}$",
        description="PROJECT.DATASET.TABLE the published playlists are exported to (day "
        "partitions on week_start); empty: no export.",
    )
    bigquery_maximum_bytes_billed: int = Field(
        default=0, ge=0, description="Queries that would bill more bytes fail; 0: no cap."
    )
    bigquery_labels: dict[str, str] = Field(
        default={"app": "cratedigger"}, description="Labels on every BigQuery job (JSON)."
    )
    bigquery_location: str = Field(default="", description="Jobs' location (US, EU, ...).")
    bigquery_storage_api: bool = Field(
        default=True, description="Read query results through the Storage Read API."
    )
    bigquery_retry_deadline_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="How long a BigQuery call is retried while the service is unreachable.",
    )
    bigquery_api_endpoint: str = Field(
        default="",
        description="Another REST endpoint (an emulator) with anonymous credentials; empty: "
        "Google's, with the application default credentials.",
    )
    # Weekly scheduling (Celery). The embedded default runs the same tasks in-process.
    broker_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Celery broker (Redis or RabbitMQ)."
    )
    result_backend: str = Field(
        default="redis://127.0.0.1:6379/1",
        description="Celery result backend (task results; chunks are counted in the database).",
    )
    broker_visibility_timeout: int = Field(
        default=3600,
        ge=5,
        le=7 * 24 * 3600,
        description="Redis: seconds before an unacknowledged task is redelivered.",
    )
    task_time_limit: int = Field(default=3600, ge=10, description="Hard limit per task, seconds.")
    weekly_cron: str = Field(
        default="0 0 * * 1", description="Beat schedule of the weekly run: min hour dom mon dow."
    )
    weekly_timezone: str = Field(default="UTC", description="Time zone of weekly_cron.")
    generate_chunk_size: int = Field(
        default=500, ge=1, le=1_000_000, description="Listeners per Celery generate task."
    )
    # Validation gate: a model must reach these shares of the baselines' holdout NDCG@50.
    gate_min_vs_popular: float = Field(default=1.0, ge=0.0, le=100.0)
    gate_min_vs_previous: float = Field(default=0.9, ge=0.0, le=100.0)
    gate_holdout_days: int = Field(
        default=7, ge=1, le=365, description="Days before the cut-off held out to test the model."
    )
    # Web app.
    secret_key: SecretStr | None = Field(
        default=None,
        description="Signs the web sessions' cookies. Required: the web app refuses to start "
        "without it (only `cratedigger demo`, `serve --dev` and tests make a throwaway one).",
    )
    ratelimit_storage_url: str = Field(
        default="memory://",
        description="Where sign-in attempts are counted: memory:// per process, or a "
        "redis:// URL shared by every web worker.",
    )
    signin_rate_limit: str = Field(
        default="10 per minute;100 per day",
        description="Failed sign-in attempts allowed per client address and per token "
        "prefix; a valid token is never refused.",
    )
    trusted_proxies: int = Field(
        default=0,
        ge=0,
        le=5,
        description="Reverse proxies in front of the web app whose X-Forwarded-For/-Proto "
        "headers are trusted (client address, HTTPS for Secure cookies).",
    )
    playlist_max_age: int = Field(
        default=60,
        ge=0,
        le=7 * 24 * 3600,
        description="Seconds clients may reuse a playlist response before revalidating it.",
    )
    api_cache_entries: int = Field(
        default=2048,
        ge=0,
        le=1_000_000,
        description="Playlist answers (and tokens) each web worker keeps in memory "
        "(PostgreSQL only; kept true by change notifications); 0 turns the cache off.",
    )
    serving_redis_url: str = Field(
        default="",
        description="redis:// URL where the weekly run publishes each listener's newest "
        "playlist and the web workers keep tokens, so that a request no worker has cached "
        "is one Redis read (PostgreSQL only; the database stays the truth and the fallback). "
        "Empty: off.",
    )
    media_hosts: str = Field(
        default="",
        description="Hosts the pages may load the catalog's cover images and audio previews "
        "from (comma-separated, e.g. coverartarchive.org,*.scdn.co; HTTPS unless a host says "
        "http://); a track whose image is elsewhere shows a placeholder.",
    )
    # OpenID Connect sign-in (webapp/auth.py): listeners sign in at the provider; tokens stay
    # for the API and operators.
    oidc_issuer: str = Field(
        default="",
        description="Issuer URL of the OpenID provider (its /.well-known/openid-configuration "
        "is read); HTTPS, or http on 127.0.0.1/localhost for development; empty: OpenID "
        "Connect sign-in is off.",
    )
    oidc_client_id: str = Field(
        default="", max_length=255, description="The app's client id at the provider."
    )
    oidc_client_secret: SecretStr | None = Field(
        default=None, description="The app's client secret at the provider."
    )
    oidc_user_claim: str = Field(
        default="sub",
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="The claim (ID token, else userinfo) whose value is the listener's "
        "user_id; the listener must already exist.",
    )
    oidc_scopes: str = Field(
        default="openid profile",
        description="Scopes asked for (space-separated; must include openid).",
    )
    oidc_provider_name: str = Field(
        default="",
        max_length=64,
        description="Name on the sign-in button (Sign in with ...); default: the issuer's host.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] = "console"

    @field_validator("blend")
    @classmethod
    def _known_blend(cls, value: str) -> str:
        from recsys.blend import BlendParams  # the models' module, only when one is named

        return BlendParams.parse(value).text()

    @field_validator("weekly_cron")
    @classmethod
    def _five_field_cron(cls, value: str) -> str:
        # The fields' values are checked by Celery when the beat schedule is built.
        if len(value.split()) != 5:
            raise ValueError(f"{value!r} is not a cron expression of five fields")
        return value

    @field_validator("weekly_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone name") from None
        return value

    @field_validator("secret_key")
    @classmethod
    def _strong_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError(
                "must be at least 32 characters "
                '(python -c "import secrets; print(secrets.token_hex(32))")'
            )
        return value

    @field_validator("media_hosts")
    @classmethod
    def _media_host_names(cls, value: str) -> str:
        hosts = [h.strip().lower() for h in value.replace(" ", ",").split(",") if h.strip()]
        for host in hosts:
            if not _MEDIA_HOST.fullmatch(host):
                raise ValueError(
                    f"{host!r} is not a host name (a name such as i.scdn.co, or *.scdn.co)"
                )
        return ",".join(hosts)

    @field_validator("oidc_issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return ""
        parts = urlsplit(value)
        loopback = parts.hostname in _LOOPBACK_HOSTS
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError(
                f"{value!r} must be an https:// URL (http:// only on 127.0.0.1 or localhost)"
            )
        if not parts.hostname or parts.query or parts.fragment or parts.username:
            raise ValueError(f"{value!r} is not an issuer URL (no query, fragment or user)")
        try:
            parts.port  # noqa: B018 (urlsplit checks the port only when asked)
        except ValueError:
            raise ValueError(f"{value!r} has an invalid port") from None
        return value

    @field_validator("oidc_scopes")
    @classmethod
    def _openid_scope(cls, value: str) -> str:
        scopes = value.split()
        if "openid" not in scopes:
            raise ValueError(f"{value!r} must include the scope openid")
        if any(not _SCOPE.fullmatch(scope) for scope in scopes):
            raise ValueError(f"{value!r} is not a space-separated list of scopes")
        return " ".join(dict.fromkeys(scopes))

    @field_validator("earliest_event_at")
    @classmethod
    def _aware_earliest_event(cls, value: dt.datetime) -> dt.datetime:
        # A time without an offset is UTC, as event times without one are.
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _default_database_url(self) -> Settings:
        if not self.database_url:
            object.__setattr__(
                self, "database_url", f"sqlite:///{self.data_dir / 'cratedigger.db'}"
            )
        elif "://" not in self.database_url:
            raise ValueError(
                f"database_url {self.database_url!r} is not a SQLAlchemy URL "
                "(expected e.g. sqlite:///path.db or postgresql+psycopg://host/db)"
            )
        if self.spark_master.strip() == "":
            raise ValueError("spark_master must not be empty")
        if self.oidc_issuer and not self.oidc_client_id.strip():
            raise ValueError(
                f"{ENV_PREFIX}OIDC_CLIENT_ID must be set when {ENV_PREFIX}OIDC_ISSUER is "
                "(the client id the provider gave this app)"
            )
        if self.oidc_issuer and not (
            self.oidc_client_secret and self.oidc_client_secret.get_secret_value()
        ):
            raise ValueError(
                f"{ENV_PREFIX}OIDC_CLIENT_SECRET must be set when {ENV_PREFIX}OIDC_ISSUER is "
                "(the web app is a confidential client)"
            )
        if self.tune_every_weeks and self.tune_budget_s >= self.task_time_limit:
            raise ValueError(
                f"tune_budget_s ({self.tune_budget_s:g}) must be below task_time_limit "
                f"({self.task_time_limit}): the Celery tune task would be killed"
            )
        return self

    # Paths of the state kept under data_dir.
    @property
    def events_source(self) -> str:
        """The scheduled run's source: a ``bigquery://`` name or an absolute directory."""
        if self.source_dir and self.source_dir.startswith("bigquery://"):
            return self.source_dir
        return str(Path(self.source_dir or self.data_dir / "source").expanduser().resolve())

    @property
    def aggregates_dir(self) -> Path:
        return self.data_dir / "aggregates"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def media_host_list(self) -> tuple[str, ...]:
        """:attr:`media_hosts` as a tuple of lower-case names."""
        return tuple(self.media_hosts.split(",")) if self.media_hosts else ()

    @property
    def confidence(self) -> ConfidenceParams:
        """The confidence formula's weights (``skip_weight`` ... ``half_life_days``) as one
        object."""
        return ConfidenceParams.of(self)


# Read by the test suite and CI, not by the service.
_OTHER_KNOWN_VARIABLES = frozenset(
    {"CRATEDIGGER_REQUIRE_SERVICES", "CRATEDIGGER_TEST_POSTGRES_URL"}
)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment, with keyword overrides (used by tests and the CLI).

    Raises
    ------
    ConfigError
        If a variable has an invalid value; the message names the ``CRATEDIGGER_`` variable.
    """
    unknown = sorted(
        name
        for name in os.environ
        if name.startswith(ENV_PREFIX)
        and name[len(ENV_PREFIX) :].lower() not in Settings.model_fields
        and name not in _OTHER_KNOWN_VARIABLES
    )
    if unknown:
        raise ConfigError(
            f"unknown variable(s) {', '.join(unknown)}; known: "
            + ", ".join(ENV_PREFIX + field.upper() for field in Settings.model_fields)
        )
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "settings"
            name = f"{ENV_PREFIX}{field.upper()}" if field != "settings" else "settings"
            problems.append(f"{name}: {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
