"""Real server processes for the fault and scale tests: a private PostgreSQL cluster and a private Redis
that a test may stop, kill and restart, Celery workers on a broker of the test's choosing, and the
gunicorn worker processes behind studies.bots.LocalServer.

Other people use the shared PostgreSQL (127.0.0.1:5432) and Redis (6379) of the machine at the same time,
so nothing here ever stops or restarts those: a test that restarts a server starts its own, on a free
port, in a temporary folder, and removes it afterwards. Missing binaries skip the test with the reason
(the test command, scripts/quickstart.sh test, installs them).
"""
from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path

import pytest

from studies.bots import free_port

ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition, *, timeout_s: float, interval_s: float = 0.1, what: str = "the condition"):
    """Poll `condition()` until it returns something true (returned), or fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def stop_process(proc: subprocess.Popen, timeout_s: float = 20) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ----------------------------------------------------------------------------------------- databases
def database_url(settings_dict: dict) -> str:
    """A DATABASE_URL for a Django PostgreSQL connection's settings (other processes use the same DB)."""
    db = settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def url_of_test_database() -> str:
    """The test database as a DATABASE_URL, for the server and worker processes a test starts; skips the
    test on SQLite, whose in-memory test database no other process can open."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the server processes share the test database, which needs PostgreSQL")
    return database_url(connection.settings_dict)


def _postgres_bin(name: str) -> Path:
    found = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        pytest.skip(f"PostgreSQL's {name} is not installed (Debian package postgresql)")
    return Path(found[-1])


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb in a temporary folder, trust authentication, a free
    port on 127.0.0.1) that the test may stop and start. PostgreSQL refuses to run as root, so under root
    the cluster belongs to the `postgres` user (as scripts/quickstart.sh runs the shared one)."""

    def __init__(self):
        self.bin = _postgres_bin("pg_ctl").parent
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no `postgres` user to run a private PostgreSQL")
            self._as = ["runuser", "-u", "postgres", "--"]
        # Not under pytest's tmp_path: its folders are private to root, and the postgres user must enter it.
        self.home = Path(tempfile.mkdtemp(prefix="evalsite-pg-"))
        if self._as:
            os.chown(self.home, owner.pw_uid, owner.pw_gid)
        self.data = self.home / "data"
        self.log = self.home / "postgres.log"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*self._as, str(self.bin / tool), *args], capture_output=True, text=True)
        if check and result.returncode:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
                               f"\n{self.log_tail()}")
        return result

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self) -> None:
        options = f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` rolls back open transactions and closes every session; `immediate` is a
        crash (no shutdown checkpoint; the next start recovers from the write-ahead log)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def create_database_from(self, source_url: str, name: str) -> str:
        """A new database here holding a copy of `source_url`'s schema and rows; returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        dump = subprocess.run([str(self.bin / "pg_dump"), "--no-owner", "--no-privileges", source_url],
                              capture_output=True, check=True)
        subprocess.run([str(self.bin / "psql"), "-q", "-v", "ON_ERROR_STOP=1", self.url(name)],
                       input=dump.stdout, capture_output=True, check=True)
        return self.url(name)

    def remove(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.home, ignore_errors=True)


@contextlib.contextmanager
def orm_on(url: str):
    """Point this process's ORM (the `default` connection) at another PostgreSQL database for the block,
    so a test reads what servers wrote there with the same code it uses on the test database."""
    import dj_database_url
    from django.db import connection

    other = dj_database_url.parse(url)
    keys = ("NAME", "USER", "PASSWORD", "HOST", "PORT")
    before = {k: connection.settings_dict[k] for k in keys}
    connection.close()
    connection.settings_dict.update({k: other[k] for k in keys})
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.update(before)


# ------------------------------------------------------------------------------------------------ Redis
class PrivateRedis:
    """A redis-server of the test's own on a free port, persisted as the compose file's is (append-only
    file), so a restart keeps the queues."""

    def __init__(self, folder: Path):
        self.exe = shutil.which("redis-server")
        if not self.exe:
            pytest.skip("redis-server is not installed (Debian package redis-server)")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--save", "", "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.proc.poll() is not None or self.ping(), timeout_s=20, what="redis-server to start")
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited ({self.proc.returncode}); see {self.folder / 'redis.log'}")

    def stop(self) -> None:
        """A clean shutdown (SIGTERM: the append-only file is flushed first)."""
        if self.proc is not None:
            stop_process(self.proc)

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------- Celery workers
TASK_SUCCEEDED = re.compile(r"Task (\S+)\[([0-9a-f-]{36})\] succeeded")


@dataclass
class CeleryWorker:
    """One real `celery worker` process with its log in a file; `env` adds to this process's environment.
    Pool `solo`: the worker process runs the task itself, so killing it kills the task; `prefork` (as
    deployed): one pool process runs the tasks, a child of the worker process."""

    name: str
    broker_url: str
    database_url: str
    log_dir: Path
    queue: str = "render"
    pool: str = "solo"
    env: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def hostname(self) -> str:
        return f"{self.name}@faults"

    @property
    def log(self) -> Path:
        return Path(self.log_dir) / f"{self.name}.log"

    def start(self) -> CeleryWorker:
        from django.conf import settings

        env = {**os.environ, "CELERY_BROKER_URL": self.broker_url, "DATABASE_URL": self.database_url,
               "MEDIA_ROOT": str(settings.MEDIA_ROOT), "PYOPENGL_PLATFORM": "osmesa", **self.env}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "evalsite", "worker", "-Q", self.queue, "--pool", self.pool,
                 "--concurrency", "1", "--hostname", self.hostname, "--loglevel", "INFO", "--without-heartbeat", "--without-gossip",
                 "--without-mingle"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float = 60) -> None:
        def ready():
            assert self.proc.poll() is None, f"worker {self.name} exited:\n{self.log_text()[-3000:]}"
            return " ready." in self.log_text()

        wait_until(ready, timeout_s=timeout_s, what=f"worker {self.name} to be ready")

    def succeeded(self) -> list[str]:
        """Ids of the tasks this worker reports as succeeded, in order (from its log)."""
        return [m.group(2) for m in TASK_SUCCEEDED.finditer(self.log_text())]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


# ------------------------------------------------------------------------------------ gunicorn workers
def child_pids(parent: int) -> list[int]:
    """Processes whose parent is `parent` (gunicorn's workers are its master's children)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        if int(fields[1]) == parent and fields[0] != "Z":
            out.append(int(entry))
    return out


def pid_with_local_port(port: int, candidates: list[int], *, remote_port: int) -> int | None:
    """Which of `candidates` owns the TCP connection from local `port` to `remote_port` (e.g. the client end
    of a database session: pg_stat_activity reports its client port)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                local, remote = (int(end.rsplit(":", 1)[1], 16) for end in cols[1:3])
                if (local, remote) == (port, remote_port):
                    inodes.add(cols[9])
    for pid in candidates:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        return pid
    return None
