#!/usr/bin/env bash
# The README's two commands: `bash scripts/quickstart.sh demo` and `bash scripts/quickstart.sh test`.
# Each installs only what is missing (Debian packages, the virtual environment, torch==2.13.0, the PyOpenGL
# override, librosa's numba warm-up), so a second run starts in seconds; then it runs the demo study
# (SQLite, embedded broker, http://127.0.0.1:8000) or the whole test suite (SQLite and PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-}
shift || true
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
export NUMBA_CACHE_DIR="$ROOT/var/cache/numba"
export MPLCONFIGDIR="$ROOT/var/cache/matplotlib"
export PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-osmesa}"
mkdir -p "$ROOT/var/cache" "$NUMBA_CACHE_DIR" "$MPLCONFIGDIR"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

setup_python() {
  if ! python3 -c "import venv, ensurepip" 2>/dev/null; then apt_install python3-venv python3-dev; fi
  [ -x "$PY" ] || { say "creating the virtual environment (.venv)"; python3 -m venv "$VENV"; }
  # The stamp names everything that decides the environment's contents; same stamp = nothing to do.
  # Bump ENV_RECIPE when the install steps below change.
  local ENV_RECIPE="torch==2.13.0 PyOpenGL==3.1.10 numba-warm-1"
  local stamp; stamp=$( (cat requirements.txt constraints.txt; echo "$ENV_RECIPE") | sha256sum | cut -c1-16)
  if [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ]; then
    say "installing Python packages (pinned in requirements.txt)"
    "$PY" -m pip install -q --disable-pip-version-check torch==2.13.0
    "$PY" -m pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt
    # pyrender pins PyOpenGL 3.1.0, which breaks OSMesa: override it without touching other packages.
    "$PY" -m pip install -q --disable-pip-version-check --no-deps PyOpenGL==3.1.10
    say "warming librosa's numba cache (once)"
    "$PY" - <<'PYEOF'
import numpy as np, librosa
y = np.random.default_rng(0).standard_normal(16000).astype("float32")
librosa.feature.melspectrogram(y=y, sr=16000, n_mels=40)
librosa.resample(y, orig_sr=16000, target_sr=8000)
PYEOF
    echo "$stamp" > "$VENV/.stamp"
  fi
}

start_services() {
  # PostgreSQL and Redis on 127.0.0.1; on a machine where they already run, nothing happens.
  apt_install postgresql redis-server
  if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
    say "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
    for _ in $(seq 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
  fi
  if [ -z "${PG_DATABASE_URL:-}" ] && ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
    # A stock Debian cluster refuses password-less TCP logins: give the local role a password for the tests.
    say "PostgreSQL wants a password on 127.0.0.1: setting one for the role 'postgres' (local tests only)"
    runuser -u postgres -- psql -qc "ALTER USER postgres PASSWORD 'postgres'"
    export PG_DATABASE_URL="postgres://postgres:postgres@127.0.0.1:5432/evalsite"
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    say "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
  fi
}

case "$MODE" in
  demo)
    apt_install ffmpeg espeak-ng libosmesa6 fonts-dejavu-core
    setup_python
    exec "$PY" manage.py demo "$@"
    ;;
  test)
    apt_install ffmpeg espeak-ng libosmesa6 fonts-dejavu-core chromium docker-compose
    setup_python
    start_services
    export PG_DATABASE_URL="${PG_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/evalsite}"
    export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
    say "tests on PostgreSQL"
    DATABASE_URL="$PG_DATABASE_URL" "$PY" -m pytest -q -p no:cacheprovider "$@"
    say "tests on SQLite (everything that touches the database)"
    DATABASE_URL="sqlite:///$ROOT/var/test.sqlite3" "$PY" -m pytest -q -p no:cacheprovider -m "not pg_only" tests/studies "$@"
    ;;
  *)
    echo "usage: bash scripts/quickstart.sh demo|test [extra arguments]" >&2
    exit 2
    ;;
esac
