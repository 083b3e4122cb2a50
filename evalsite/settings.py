"""Settings, all taken from the environment.

Defaults give a single-machine set-up (SQLite file, an embedded file-system Celery broker, media under
./var); production sets EVALSITE_ENV=production, SECRET_KEY, ALLOWED_HOSTS, DATABASE_URL (PostgreSQL)
and CELERY_BROKER_URL (Redis).
"""
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("EVALSITE_VAR_DIR", BASE_DIR / "var"))


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


PRODUCTION = os.environ.get("EVALSITE_ENV", "development") == "production"
DEBUG = _env_bool("DEBUG", not PRODUCTION)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set in the environment when EVALSITE_ENV=production.")
    SECRET_KEY = "dev-only-insecure-key-change-me-" + "x" * 32
# Worker IDs from MTurk/Prolific are stored only as HMACs keyed with this secret (never an empty key).
PARTICIPANT_ID_HMAC_KEY = os.environ.get("PARTICIPANT_ID_HMAC_KEY") or SECRET_KEY

ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS", "")
# The public base URL participants reach (used for MTurk ExternalQuestion and Prolific links).
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "studies",
]

MIDDLEWARE = [
    "studies.middleware.HealthCheckMiddleware",  # first: probes come by 127.0.0.1 over plain HTTP
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "studies.middleware.ContentSecurityPolicyMiddleware",
    "studies.middleware.ParticipantErrorMiddleware",
    "studies.throttle.ParticipantRateLimitMiddleware",
]

ROOT_URLCONF = "evalsite.urls"
WSGI_APPLICATION = "evalsite.wsgi.application"

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

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'evalsite.sqlite3'}"),
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")),
        # No "SELECT 1" before every request: a broken persistent connection fails that request cleanly
        # and Django drops it, so the next request reconnects.
        conn_health_checks=False,
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Concurrent participants on SQLite: wait for the write lock instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
    DATABASES["default"]["CONN_MAX_AGE"] = 0
elif DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # Prepared statements for studies/rawsql.py's few hot statements (the participant endpoints), which bind
    # their parameters server-side: psycopg prepares a statement after five runs on a connection, and
    # PostgreSQL then skips parsing and planning it (about half the database's CPU per trial). The ORM's
    # cursors bind client-side and never prepare. DB_PREPARED_STATEMENTS=0 turns it off, for a pooler in
    # transaction mode that cannot keep them (PgBouncer before 1.21).
    if _env_bool("DB_PREPARED_STATEMENTS", True):
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault("prepare_threshold", 5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "static"))
if not PRODUCTION:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise wants it to exist, even when empty
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
# Significance reports (researchers only, served by the app): shared by the web app and the workers.
REPORTS_ROOT = Path(os.environ.get("REPORTS_ROOT", VAR_DIR / "reports"))
# Media are never served under a guessable URL: stimulus videos go through studies.views.stimulus_video,
# which checks that the participant is entitled to the token, then streams (or hands off to nginx).
MEDIA_URL = "/media-internal/"
# When set (e.g. "/protected-media/"), video responses are X-Accel-Redirect hand-offs to nginx.
MEDIA_ACCEL_REDIRECT_PREFIX = os.environ.get("MEDIA_ACCEL_REDIRECT_PREFIX", "")
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Outside production the app serves its own static files (whitenoise finds them in the app folders).
WHITENOISE_USE_FINDERS = not PRODUCTION

LOGIN_URL = "admin:login"
# Sessions live in a signed cookie: a participant's session only maps study tokens to their own opaque
# participant id, and participant requests then need no session query.
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# Rate limits on participant endpoints (studies.throttle): BUCKET=COUNT/UNIT for start (new sessions, per
# address), page, api (watch reports and answers, per session) and video; a bucket left out is not limited.
PARTICIPANT_RATE_LIMITS = os.environ.get("PARTICIPANT_RATE_LIMITS", "start=60/m,page=240/m,api=300/m,video=1200/m")
# Behind a proxy, the header holding the client's address (nginx here sets X-Real-IP: "HTTP_X_REAL_IP").
RATE_LIMIT_CLIENT_IP_HEADER = os.environ.get("RATE_LIMIT_CLIENT_IP_HEADER", "")
RATE_LIMIT_CACHE = "default"
# The cache: Redis in production (shared by all web workers; short timeouts, and the rate limiter lets
# requests through when it is down), one per process otherwise.
CACHE_URL = os.environ.get("CACHE_URL", "")
if CACHE_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL,
                          "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.25}}}

# Who may frame participant pages: MTurk shows ExternalQuestion HITs in an iframe.
PARTICIPANT_FRAME_ANCESTORS = ["'self'"] + _env_list(
    "PARTICIPANT_FRAME_ANCESTORS", "https://worker.mturk.com,https://workersandbox.mturk.com"
)

if PRODUCTION:
    # Cookies must reach the site inside MTurk's (cross-site) frame; HTTPS-only, as SameSite=None requires.
    SESSION_COOKIE_SAMESITE = "None"
    CSRF_COOKIE_SAMESITE = "None"
    SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }

# --- Celery -----------------------------------------------------------------------------------------
# Default: kombu's file-system transport, an embedded broker that needs no server (one machine).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
EMBEDDED_BROKER = CELERY_BROKER_URL.startswith("filesystem")
_BROKER_DIR = VAR_DIR / "broker"
if EMBEDDED_BROKER:
    for _sub in ("queue", "processed", "results", "control"):
        (_BROKER_DIR / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        "control_folder": str(_BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "3600"))}
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or (
    f"file://{_BROKER_DIR / 'results'}" if EMBEDDED_BROKER else None
)
CELERY_TASK_ALWAYS_EAGER = _env_bool("CELERY_TASK_ALWAYS_EAGER", False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}
