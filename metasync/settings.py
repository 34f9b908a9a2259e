"""metasync settings: read from the environment (or an env file) only.

Every variable is read through :mod:`metasync.env`, listed in `.env.example`
and documented in `docs/configuration.md` (a test keeps the three in step).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import environ
from kombu import Queue

from metasync import env
from metasync.env import ConfigError

BASE_DIR = Path(__file__).resolve().parent.parent

# An env file is optional: compose passes variables directly. Without
# METASYNC_ENV_FILE the first of `.env` and the devstack's `.devstack/env` that
# exists is read. Real environment variables always win over the file.
_ENV_FILE = os.environ.get("METASYNC_ENV_FILE") or next(
    (str(p) for p in (BASE_DIR / ".env", BASE_DIR / ".devstack" / "env") if p.is_file()), "")
if _ENV_FILE and Path(_ENV_FILE).is_file():
    environ.Env.read_env(_ENV_FILE, overwrite=False)

# --- identity of this deployment -------------------------------------------------
METASYNC_ENV = env.string("METASYNC_ENV", "dev")
METASYNC_NODE = env.string("METASYNC_NODE", socket.gethostname())

# --- Django core -----------------------------------------------------------------
SECRET_KEY = env.string("DJANGO_SECRET_KEY", secret=True)
if len(SECRET_KEY) < 32:
    raise ConfigError("DJANGO_SECRET_KEY", "must be at least 32 characters")
DEBUG = env.boolean("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env.csv("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1")
CSRF_TRUSTED_ORIGINS = env.csv("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "django_prometheus",
    # the flow: MQTT -> ingest -> catalog -> cdcsync -> canary, watched by monitoring
    "catalog",
    "ingest",
    "cdcsync",
    "canary",
    "monitoring",
]
# Development and test aids (Canary mock, edge simulator, demo users): on in the dev stack and
# the tests, off in production (docs/architecture.md).
METASYNC_DEVTOOLS = env.boolean("METASYNC_DEVTOOLS", False)
if METASYNC_DEVTOOLS:
    INSTALLED_APPS.append("devtools")

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "metasync.urls"
WSGI_APPLICATION = "metasync.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database --------------------------------------------------------------------
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# A database URL weaker than sslmode=verify-full is refused unless this is true (local development).
DATABASE_ALLOW_WEAK_TLS = env.boolean("DATABASE_ALLOW_WEAK_TLS", False)


def database_config(name: str, url: str, application_name: str) -> dict:
    """Django DATABASES entry from a postgres:// URL; validates the TLS options."""
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql", "pgsql"):
            raise ValueError
        config = environ.Env.db_url_config(url)
    except (ValueError, KeyError):
        raise ConfigError(name, "expected a postgres://user:password@host:port/db URL") from None
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    sslmode = query.get("sslmode", "verify-full")
    if sslmode not in _SSLMODES:
        raise ConfigError(name, f"sslmode must be one of {', '.join(_SSLMODES)}, got {sslmode!r}")
    # verify-full unless weaker is asked for explicitly (local development only; docs/security.md)
    if sslmode != "verify-full" and not DATABASE_ALLOW_WEAK_TLS:
        raise ConfigError(name, f"sslmode={sslmode} is weaker than verify-full: set DATABASE_ALLOW_WEAK_TLS=true "
                                "to allow it (local development only)")
    rootcert = query.get("sslrootcert")
    if sslmode in ("verify-ca", "verify-full") and rootcert and not Path(rootcert).is_file():
        raise ConfigError(name, f"sslrootcert file {rootcert!r} does not exist")
    config["ENGINE"] = "django.db.backends.postgresql"
    config.setdefault("OPTIONS", {})["application_name"] = application_name
    config["OPTIONS"]["sslmode"] = sslmode  # libpq's own default would be `prefer`
    config["CONN_MAX_AGE"] = env.integer("DATABASE_CONN_MAX_AGE", 60, minimum=0)
    config["CONN_HEALTH_CHECKS"] = True
    return config


# Each daemon sets METASYNC_PROCESS so pg_stat_activity shows who is connected.
METASYNC_PROCESS = env.string("METASYNC_PROCESS", "metasync")
DATABASES = {"default": database_config("DATABASE_URL", env.string("DATABASE_URL", secret=True), METASYNC_PROCESS)}
# Superuser/owner URL used only by `setup_roles` (creates roles); optional.
DATABASE_ADMIN_URL = env.string("DATABASE_ADMIN_URL", None, secret=True)
# Passwords `setup_roles` gives the application and CDC roles (unset: roles without password).
METASYNC_APP_DB_PASSWORD = env.string("METASYNC_APP_DB_PASSWORD", None, secret=True)
METASYNC_CDC_DB_PASSWORD = env.string("METASYNC_CDC_DB_PASSWORD", None, secret=True)
# Per-process-kind URLs (docs/security.md, "Roles"): DATABASE_URL is the owner's (migrations);
# compose and scripts/demo hand web/ingest/workers/beat METASYNC_APP_DATABASE_URL as their
# DATABASE_URL and cdc METASYNC_CDC_DATABASE_URL as its CDC_DATABASE_URL.
METASYNC_APP_DATABASE_URL = env.string("METASYNC_APP_DATABASE_URL", None, secret=True)
METASYNC_CDC_DATABASE_URL = env.string("METASYNC_CDC_DATABASE_URL", None, secret=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis / Celery --------------------------------------------------------------
REDIS_URL = env.string("REDIS_URL", secret=True)
if urlsplit(REDIS_URL).scheme not in ("redis", "rediss", "unix"):
    raise ConfigError("REDIS_URL", "expected a redis://, rediss:// or unix:// URL")

CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Longest horizon a message may legitimately stay unacked: a 1M-metric birth
# apply (minutes) or a Canary push with its retries (<= 60 s). Debounce delays
# live in PostgreSQL (pending table), never as ETA tasks, so 2 h is safe and
# still re-delivers work of a worker that vanished.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.integer("CELERY_VISIBILITY_TIMEOUT", 7200, minimum=60)}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Celery's Django fixup closes the database connection around every task unless this is set:
# a new TLS connection per Canary push (~30 ms) would cap the push rate. Broken or old
# connections are still dropped before each task (metasync/celery.py).
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # a killed child re-queues its task
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_SEND_TASK_EVENTS = True  # Flower and celery-exporter
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
# births: applying births; sync: the flush and re-drive (canary workers consume it with `canary`, so a
# drain never occupies the slots that apply births); canary: pushes; default: housekeeping.
CELERY_TASK_QUEUES = [Queue("births"), Queue("sync"), Queue("canary"), Queue("default")]
# Every task's queue is decided here (Celery 5.7 deprecates the per-task `queue` attribute).
CELERY_TASK_ROUTES = {
    "ingest.tasks.prune_ledger": {"queue": "default"},
    "ingest.tasks.*": {"queue": "births"},
    "monitoring.tasks.*": {"queue": "default"},
    "cdcsync.tasks.watchdogs": {"queue": "default"},  # monitoring.tasks.watchdogs's old name
    "canary.tasks.push_batches": {"queue": "canary"},
    "canary.tasks.keepalive": {"queue": "canary"},
    "canary.tasks.flush_due": {"queue": "sync"},
    "canary.tasks.redrive_batches": {"queue": "sync"},
    "canary.tasks.*": {"queue": "default"},
}
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Installed into django-celery-beat's tables at beat start-up; ops can see and
# change them in the admin (Periodic tasks).
CELERY_BEAT_SCHEDULE = {
    "requeue-stuck-frames": {
        "task": "ingest.tasks.requeue_stuck_frames",
        "schedule": 60.0,
        "options": {"queue": "births"},
    },
    "flush-due-changes": {
        "task": "canary.tasks.flush_due",
        "schedule": 2.0,
        "options": {"queue": "sync", "expires": 10},
    },
    "redrive-batches": {
        "task": "canary.tasks.redrive_batches",
        "schedule": 30.0,
        "options": {"queue": "sync", "expires": 60},
    },
    "canary-keepalive": {
        "task": "canary.tasks.keepalive",
        "schedule": 15.0,
        "options": {"queue": "canary", "expires": 15},
    },
    "watchdogs": {
        "task": "monitoring.tasks.watchdogs",
        "schedule": 60.0,
        "options": {"queue": "default", "expires": 60},
    },
    "prune-ledger": {
        "task": "ingest.tasks.prune_ledger",
        "schedule": 3600.0,
        "options": {"queue": "default"},
    },
    "prune-push-batches": {
        "task": "canary.tasks.prune_batches",
        "schedule": 3600.0,
        "options": {"queue": "default", "expires": 600},
    },
}

# Flower's `--basic-auth user:password[,user2:pw2]` (compose passes it on the command line).
FLOWER_BASIC_AUTH = env.string("FLOWER_BASIC_AUTH", None, secret=True)

# --- MQTT ingest -----------------------------------------------------------------
MQTT_HOST = env.string("MQTT_HOST", None)
MQTT_PORT = env.integer("MQTT_PORT", 8883, minimum=1)
MQTT_TLS = env.boolean("MQTT_TLS", True)
MQTT_CA_FILE = env.existing_file("MQTT_CA_FILE", None)
MQTT_USERNAME = env.string("MQTT_USERNAME", None)
MQTT_PASSWORD = env.string("MQTT_PASSWORD", None, secret=True)
MQTT_TOPIC = env.string("MQTT_TOPIC", None)  # one explicit filter; unset: the host subscriptions below
MQTT_KEEPALIVE = env.integer("MQTT_KEEPALIVE", 30, minimum=5)
MQTT_CLIENT_ID = env.string("MQTT_CLIENT_ID", f"uns-spb-dbirth-meta-{METASYNC_ENV}-{METASYNC_NODE}")
MQTT_RECONNECT_MAX_SECONDS = env.integer("MQTT_RECONNECT_MAX_SECONDS", 30, minimum=1)
INGEST_QUEUE_MAX_FRAMES = env.integer("INGEST_QUEUE_MAX_FRAMES", 1000, minimum=1)
INGEST_QUEUE_MAX_BYTES = env.integer("INGEST_QUEUE_MAX_BYTES", 1024 * 1024 * 1024, minimum=1024 * 1024)
INGEST_METRICS_PORT = env.integer("INGEST_METRICS_PORT", 9101, minimum=0)
# --- Sparkplug host application (docs/sparkplug.md, "Host application"; docs/scaling.md) ---
# Groups whose births and lifecycle ingest subscribes to; empty: every group (spBv1.0/+/...).
SPARKPLUG_GROUPS = tuple(env.csv("SPARKPLUG_GROUPS", ""))
# Primary host id: when set, ingest publishes spBv1.0/STATE/<id> (Sparkplug 3.0) so edge nodes
# bound to it re-publish their births whenever it comes online.
SPARKPLUG_HOST_ID = env.string("SPARKPLUG_HOST_ID", None)
# Shared-subscription name: replicas with the same name split the births ($share/<name>/...).
MQTT_SHARE_GROUP = env.string("MQTT_SHARE_GROUP", None)

# --- applying births -------------------------------------------------------------
BIRTH_CHUNK_METRICS = env.integer("BIRTH_CHUNK_METRICS", 20000, minimum=100)
LEDGER_RETENTION_DAYS = env.integer("LEDGER_RETENTION_DAYS", 14, minimum=1)
# A frame whose processing raises something unexpected is retried this often (backoff from
# BIRTH_RETRY_SECONDS, doubling, at most 5 minutes), then ends `failed` with the error.
BIRTH_MAX_ATTEMPTS = env.integer("BIRTH_MAX_ATTEMPTS", 5, minimum=1)
BIRTH_RETRY_SECONDS = env.number("BIRTH_RETRY_SECONDS", 10, minimum=0.1)
# statement_timeout of each statement that applies a birth (COPY of a 1M-metric chunk included).
BIRTH_STATEMENT_TIMEOUT_SECONDS = env.number("BIRTH_STATEMENT_TIMEOUT_SECONDS", 300, minimum=1)
UNS_CONVENTION = env.choice("UNS_CONVENTION", ("default",), "default")
UNS_NON_COUNTRY_EDGES = env.csv("UNS_NON_COUNTRY_EDGES", "Edge,Normalised")
REBIRTH_REQUESTS_ENABLED = env.boolean("REBIRTH_REQUESTS_ENABLED", False)
REBIRTH_MIN_INTERVAL_SECONDS = env.integer("REBIRTH_MIN_INTERVAL_SECONDS", 900, minimum=10)

# --- CDC: replication slot -> durable, debounced pending work ------------------------------
# Connection used for the slot functions (needs REPLICATION; production: the CDC role created
# by `setup_roles`). Defaults to DATABASE_URL (the devstack owner may replicate).
CDC_DATABASE_URL = env.string("CDC_DATABASE_URL", None, secret=True)
CDC_SLOT = env.string("CDC_SLOT", "uns_meta_slot")
CDC_PUBLICATION = env.string("CDC_PUBLICATION", "uns_meta_pub")
CDC_DEBOUNCE_SECONDS = env.number("CDC_DEBOUNCE_SECONDS", 180, minimum=0)
CDC_DEBOUNCE_MAX_SECONDS = env.number("CDC_DEBOUNCE_MAX_SECONDS", 900, minimum=0)
CDC_POLL_SECONDS = env.number("CDC_POLL_SECONDS", 0.5, minimum=0.05)
CDC_MAX_CHANGES = env.integer("CDC_MAX_CHANGES", 100000, minimum=100)
CDC_METRICS_PORT = env.integer("CDC_METRICS_PORT", 9102, minimum=0)
# statement_timeout of the statement that marks a poll's changes pending.
CDC_STATEMENT_TIMEOUT_SECONDS = env.number("CDC_STATEMENT_TIMEOUT_SECONDS", 120, minimum=1)
# logical_decoding_work_mem of the consumer's session: what a big transaction decodes in before spilling.
CDC_DECODING_WORK_MEM_MB = env.integer("CDC_DECODING_WORK_MEM_MB", 512, minimum=64)
# A standby cdc_consume retries the slot's lock this often: the takeover delay after the active one dies.
CDC_STANDBY_POLL_SECONDS = env.number("CDC_STANDBY_POLL_SECONDS", 1.0, minimum=0.1)
if CDC_DEBOUNCE_MAX_SECONDS < CDC_DEBOUNCE_SECONDS:
    raise ConfigError("CDC_DEBOUNCE_MAX_SECONDS", "must be >= CDC_DEBOUNCE_SECONDS")

# --- Canary Write API ------------------------------------------------------------------------
CANARY_URL = env.string("CANARY_URL", "http://127.0.0.1:55293/api/v1")
CANARY_VIEWS_URL = env.string("CANARY_VIEWS_URL", "http://127.0.0.1:55293/api/v2")
CANARY_API_TOKEN = env.string("CANARY_API_TOKEN", None, secret=True)
CANARY_HISTORIANS = env.csv("CANARY_HISTORIANS", "localhost")
CANARY_CLIENT_ID = env.string("CANARY_CLIENT_ID", f"uns-meta-{METASYNC_ENV}-{METASYNC_NODE}")
CANARY_CLIENT_TIMEOUT_MS = env.integer("CANARY_CLIENT_TIMEOUT_MS", 120000, minimum=1000)
CANARY_VERIFY = env.string("CANARY_VERIFY", "true")  # true, false (dev only) or a CA bundle path
CANARY_BATCH_TAGS = env.integer("CANARY_BATCH_TAGS", 100, minimum=1)
CANARY_BATCH_MAX_BYTES = env.integer("CANARY_BATCH_MAX_BYTES", 1_000_000, minimum=10_000)
CANARY_RATE_LIMIT_RPS = env.number("CANARY_RATE_LIMIT_RPS", 500, minimum=1)
CANARY_TIMEOUT_SECONDS = env.number("CANARY_TIMEOUT_SECONDS", 10, minimum=0.1)
CANARY_ATTEMPTS = env.integer("CANARY_ATTEMPTS", 6, minimum=1)
CANARY_BACKOFF_SECONDS = env.number("CANARY_BACKOFF_SECONDS", 0.2, minimum=0)
CANARY_BACKOFF_MAX_SECONDS = env.number("CANARY_BACKOFF_MAX_SECONDS", 6.4, minimum=0)
CANARY_OPERATION_DEADLINE_SECONDS = env.number("CANARY_OPERATION_DEADLINE_SECONDS", 60, minimum=1)
CANARY_BREAKER_FAIL_MAX = env.integer("CANARY_BREAKER_FAIL_MAX", 20, minimum=1)
CANARY_BREAKER_RESET_SECONDS = env.number("CANARY_BREAKER_RESET_SECONDS", 60, minimum=1)
CANARY_BREAKER_5XX_RATIO = env.number("CANARY_BREAKER_5XX_RATIO", 0.02, minimum=0)
CANARY_BREAKER_MIN_REQUESTS = env.integer("CANARY_BREAKER_MIN_REQUESTS", 100, minimum=1)
CANARY_KEEPALIVE_SECONDS = env.number("CANARY_KEEPALIVE_SECONDS", 20, minimum=1)
CANARY_PUSH_TASK_BATCHES = env.integer("CANARY_PUSH_TASK_BATCHES", 50, minimum=1)
CANARY_PUSH_THREADS = env.integer("CANARY_PUSH_THREADS", 8, minimum=1)
CANARY_BATCH_RETENTION_DAYS = env.number("CANARY_BATCH_RETENTION_DAYS", 14, minimum=0.01)
SYNC_FLUSH_BATCH_METRICS = env.integer("SYNC_FLUSH_BATCH_METRICS", 2000, minimum=1)
SYNC_FLUSH_MAX_SECONDS = env.number("SYNC_FLUSH_MAX_SECONDS", 20, minimum=1)
SYNC_FLUSH_THREADS = env.integer("SYNC_FLUSH_THREADS", 2, minimum=1)
# statement_timeout of the flush's and the push's statements (claims, acknowledgements, pruning).
SYNC_STATEMENT_TIMEOUT_SECONDS = env.number("SYNC_STATEMENT_TIMEOUT_SECONDS", 30, minimum=1)

# --- watchdogs (beat, every minute): the alert conditions checked in-process, published on MQTT ----
WATCHDOG_TOPIC = env.string("WATCHDOG_TOPIC", f"metasync/watchdog/{METASYNC_NODE}")
WATCHDOG_PUBLISH_TIMEOUT_SECONDS = env.number("WATCHDOG_PUBLISH_TIMEOUT_SECONDS", 10, minimum=1)
WATCHDOG_INGEST_SILENT_SECONDS = env.integer("WATCHDOG_INGEST_SILENT_SECONDS", 3600, minimum=60)
WATCHDOG_DECODE_WINDOW_SECONDS = env.integer("WATCHDOG_DECODE_WINDOW_SECONDS", 900, minimum=60)
WATCHDOG_DECODE_FAILURES = env.integer("WATCHDOG_DECODE_FAILURES", 3, minimum=1)
WATCHDOG_CANARY_WINDOW_SECONDS = env.integer("WATCHDOG_CANARY_WINDOW_SECONDS", 900, minimum=60)
WATCHDOG_CANARY_FAILED_BATCHES = env.integer("WATCHDOG_CANARY_FAILED_BATCHES", 1, minimum=1)
WATCHDOG_CIRCUIT_OPEN_SECONDS = env.integer("WATCHDOG_CIRCUIT_OPEN_SECONDS", 600, minimum=60)
WATCHDOG_SLOT_RETAINED_BYTES = env.integer("WATCHDOG_SLOT_RETAINED_BYTES", 5 * 1024**3, minimum=1)
WATCHDOG_SLOT_STALLED_SECONDS = env.integer("WATCHDOG_SLOT_STALLED_SECONDS", 3600, minimum=60)
WATCHDOG_BACKLOG_MARGIN_SECONDS = env.integer("WATCHDOG_BACKLOG_MARGIN_SECONDS", 300, minimum=0)

# --- auth / admin / static -------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "admin:login"
DEFAULT_EXCEPTION_REPORTER_FILTER = "metasync.logging.SecretSettingsReporterFilter"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = env.string("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles"))
if not DEBUG:  # gunicorn serves the admin's static files (collected at image build)
    MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
                      "whitenoise.middleware.WhiteNoiseMiddleware")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage" if not DEBUG
                    else "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- observability (docs/metrics.md) ----------------------------------------------
# Prometheus port of a Celery worker's main process, serving the metrics of all its pool
# children (prometheus_client multiprocess mode, see metasync/celery.py); 0 = off.
WORKER_METRICS_PORT = env.integer("WORKER_METRICS_PORT", 0, minimum=0)
# Per-dependency timeout of /readyz and `manage.py healthcheck`.
HEALTH_CHECK_TIMEOUT_SECONDS = env.number("HEALTH_CHECK_TIMEOUT_SECONDS", 3, minimum=0.1)

# --- logging (metasync/logging.py): JSON lines, correlation ids, secrets redacted ------------
LOG_LEVEL = env.choice("LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO")
LOG_FORMAT = env.choice("LOG_FORMAT", ("json", "plain"), "json")  # of the console; the file is always JSON
LOG_STREAM = env.choice("LOG_STREAM", ("stderr", "stdout"), "stderr")
# Optional rotating file; `{process}` becomes METASYNC_PROCESS (one file per process).
LOG_FILE = env.string("LOG_FILE", "").replace("{process}", METASYNC_PROCESS)
LOG_FILE_MAX_BYTES = env.integer("LOG_FILE_MAX_BYTES", 50 * 1024 * 1024, minimum=64 * 1024)
LOG_FILE_BACKUPS = env.integer("LOG_FILE_BACKUPS", 5, minimum=1)
if LOG_FILE and not os.access(Path(LOG_FILE).parent, os.W_OK):
    raise ConfigError("LOG_FILE", f"directory {str(Path(LOG_FILE).parent)!r} does not exist or is not writable")

_LOG_FILTERS = ["context", "redact"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "metasync.logging.ContextFilter", "process": METASYNC_PROCESS},
        "redact": {"()": "metasync.logging.RedactFilter"},
    },
    "formatters": {
        "json": {"()": "metasync.logging.JsonFormatter"},
        "plain": {"()": "metasync.logging.PlainFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "stream": f"ext://sys.{LOG_STREAM}",
                    "formatter": LOG_FORMAT, "filters": _LOG_FILTERS},
        **({"file": {"class": "metasync.logging.RotatingFileHandler", "filename": LOG_FILE,
                     "maxBytes": LOG_FILE_MAX_BYTES, "backupCount": LOG_FILE_BACKUPS,
                     "formatter": "json", "filters": _LOG_FILTERS}} if LOG_FILE else {}),
    },
    "root": {"handlers": ["console", "file"] if LOG_FILE else ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own handlers (console in DEBUG, runserver's request log) would bypass the
        # JSON format and the redaction: everything goes through the root handlers.
        "django": {"handlers": [], "propagate": True, "level": "INFO" if LOG_LEVEL == "DEBUG" else LOG_LEVEL},
        "django.server": {"handlers": [], "propagate": True},
        "django.db.backends": {"level": "WARNING"},
    },
}

# --- login protection (docs/security.md, "Admin logins") ---------------------------------
# django-axes: after LOGIN_FAILURE_LIMIT wrong passwords for one user from one address, that
# pair is locked out for LOGIN_LOCKOUT_MINUTES (HTTP 429); a success resets the count. Failed
# logins are logged with the client address by monitoring.logins (never the password).
INSTALLED_APPS.append("axes")
MIDDLEWARE.append("axes.middleware.AxesMiddleware")  # last, as axes asks
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.integer("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env.integer("LOGIN_LOCKOUT_MINUTES", 15, minimum=1) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # our own log line (monitoring.logins) carries what is needed
# Behind the TLS proxy the client address is the proxy's last X-Forwarded-For hop.
LOGIN_TRUSTED_PROXIES = env.integer("LOGIN_TRUSTED_PROXIES", 0, minimum=0)
AXES_IPWARE_PROXY_COUNT = LOGIN_TRUSTED_PROXIES or None
AXES_IPWARE_META_PRECEDENCE_ORDER = (("HTTP_X_FORWARDED_FOR", "REMOTE_ADDR") if LOGIN_TRUSTED_PROXIES
                                     else ("REMOTE_ADDR",))

# --- cheap readiness, protected monitoring endpoints (docs/security.md) -------------------
# /readyz answers from checks at most this old (a burst of probes opens no new connections).
HEALTH_CHECK_CACHE_SECONDS = env.number("HEALTH_CHECK_CACHE_SECONDS", 5, minimum=0)
# Bearer token for /metrics and /readyz's details; unset: both open (the dev stack binds 127.0.0.1).
MONITORING_TOKEN = env.string("MONITORING_TOKEN", None, secret=True)
# Address of the daemons' own metrics servers (ingest, cdc, workers): loopback by default; compose
# sets 0.0.0.0 on its internal network, where only Prometheus reaches them (no published port).
METRICS_BIND_ADDRESS = env.string("METRICS_BIND_ADDRESS", "127.0.0.1")

# --- behind the TLS-terminating proxy (compose's Caddy; docs/security.md, "HTTPS") ----------
# The proxy sets X-Forwarded-Proto: https, so Django builds https URLs, marks requests secure and
# accepts the Secure session/CSRF cookies; never set it without such a proxy in front.
DJANGO_BEHIND_TLS_PROXY = env.boolean("DJANGO_BEHIND_TLS_PROXY", False)
if DJANGO_BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Strict-Transport-Security max-age on HTTPS responses (0: not sent; compose: one year).
SECURE_HSTS_SECONDS = env.integer("DJANGO_HSTS_SECONDS", 0, minimum=0)
