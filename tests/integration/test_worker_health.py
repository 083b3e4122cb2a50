"""The workers' health check (`manage.py worker_health`, used by the compose file's healthchecks) against a
real Celery worker process on a private Redis: no worker → unhealthy, naming the queue and how to start
one; a worker consuming `render` → healthy for render, unhealthy for inference; only this host's workers
count with --hostname; a killed worker → unhealthy again."""
import json
import os
import subprocess
import sys

import pytest

from tests.integration.servers import ROOT

pytestmark = [pytest.mark.pg_only, pytest.mark.django_db(transaction=True)]


def _health(broker_url, *args):
    env = {**os.environ, "CELERY_BROKER_URL": broker_url}
    return subprocess.run([sys.executable, "manage.py", "worker_health", "--timeout", "2", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def test_worker_health_follows_a_real_worker(private_redis, celery_workers):
    broker = private_redis.url()
    none = _health(broker, "--queue", "render")
    assert none.returncode == 1 and "no worker answered" in none.stderr and "-Q render" in none.stderr

    worker = celery_workers("healthy", broker)  # node healthy@faults, queue render
    worker.wait_ready()
    ok = _health(broker, "--queue", "render", "--json")
    assert ok.returncode == 0, ok.stderr
    facts = json.loads(ok.stdout)
    assert facts["ok"] is True and facts["workers"]["healthy@faults"]["queues"] == ["render"]

    other_queue = _health(broker, "--queue", "render", "--queue", "inference")
    assert other_queue.returncode == 1 and "queue(s) inference" in other_queue.stderr
    assert "healthy@faults: queues render" in other_queue.stdout
    elsewhere = _health(broker, "--queue", "render", "--hostname", "another-host")
    assert elsewhere.returncode == 1 and "on host another-host" in elsewhere.stderr
    assert _health(broker, "--queue", "render", "--hostname", "faults").returncode == 0

    worker.kill()
    gone = _health(broker, "--queue", "render")
    assert gone.returncode == 1 and "no worker answered" in gone.stderr


def test_worker_health_refuses_the_embedded_broker():
    r = _health("filesystem://")
    assert r.returncode == 1 and "embedded broker" in r.stderr
