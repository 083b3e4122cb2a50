"""`manage.py capture --background`: the captures are queued on the `hardware` queue and a real Celery worker
process consuming only that queue (on Redis, writing to the test database on PostgreSQL) films them on the
simulated robot and registers them, as the hardware worker of the compose file does."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from evalsite.celery import app
from studies import tasks
from studies.models import RenderJob, Stimulus
from tests.integration import test_celery_worker as worker_tests
from tests.studies import test_capture as capture_tests
from tests.studies.test_capture import CAMERA, _spec_file

# Fixtures shared with those tests: Redis on a database of its own; the short corpus and its inverse model.
redis_broker = worker_tests.redis_broker
utterances = capture_tests.utterances
corpus = capture_tests.corpus

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.pg_only, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def hardware_worker(redis_broker, corpus, settings):
    if connection.vendor != "postgresql":
        pytest.skip("the worker shares the test database, which needs PostgreSQL")
    db = connection.settings_dict
    env = dict(os.environ, CELERY_BROKER_URL=redis_broker, MEDIA_ROOT=str(settings.MEDIA_ROOT),
               EVALSITE_VAR_DIR=str(settings.VAR_DIR), PYOPENGL_PLATFORM="osmesa",
               DATABASE_URL=f"postgres://{db['USER']}{':' + db['PASSWORD'] if db['PASSWORD'] else ''}"
                            f"@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "evalsite", "worker", "-Q", "hardware", "--pool", "solo",
         "--loglevel", "INFO", "--without-heartbeat", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def broker_of_the_command(redis_broker):
    """The command's `.delay` goes to the test's Redis (the app's default broker is the embedded one)."""
    before = app.conf.broker_url, app.conf.broker_transport_options
    app.conf.broker_url, app.conf.broker_transport_options = redis_broker, {}
    app._pool = app.amqp._producer_pool = None   # connection pools made for the old broker are not reused
    yield
    app.conf.broker_url, app.conf.broker_transport_options = before
    app._pool = app.amqp._producer_pool = None


def test_background_captures_are_made_by_a_worker_on_the_hardware_queue(hardware_worker, broker_of_the_command,
                                                                         tmp_path):
    assert app.amqp.router.route({}, tasks.hardware_capture.name)["queue"].name == "hardware"
    spec = _spec_file(tmp_path)
    call_command("capture", str(spec), "--stimuli", "short000/ground_truth", "short001/still", "--background",
                 "--robot", "sim", "--camera", CAMERA)
    jobs = RenderJob.objects.filter(embodiment="robot_physical")
    assert jobs.count() == 2 and all(j.task_id for j in jobs)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and jobs.exclude(status__in=["done", "failed"]).exists():
        assert hardware_worker.poll() is None, hardware_worker.stdout.read()
        time.sleep(0.5)
    assert set(jobs.values_list("status", "error")) == {("done", "")}
    stimuli = Stimulus.objects.filter(embodiment="robot_physical")
    assert stimuli.count() == 2 and all(s.recipe["maker"] == "capture" for s in stimuli)
    assert all((Path(settings.MEDIA_ROOT) / s.file).exists() for s in stimuli)
