"""Real Celery worker processes on Redis, writing to the test database (PostgreSQL): one consuming the
`render` queue makes a stimulus that did not exist (and it passes the ffprobe checks); one consuming the
`inference` queue trains a model registered by the researcher and publishes its progress."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings

from evalsite.celery import app
from studies import tasks
from studies.demo import demo_corpus_build
from studies.models import Condition, Stimulus, Utterance
from tests.integration import servers

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
pytestmark = [pytest.mark.pg_only, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def redis_broker():
    url = REDIS_URL.rsplit("/", 1)[0] + "/9"  # a database of its own, emptied before and after
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"Redis is not reachable at {url}; the test command starts it (scripts/quickstart.sh test)")
    client.flushdb()
    yield url
    client.flushdb()


def _start_worker(redis_broker, queue):
    env = dict(
        os.environ,
        CELERY_BROKER_URL=redis_broker,
        DATABASE_URL=servers.url_of_test_database(),
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "evalsite", "worker", "-Q", queue, "--pool", "solo",
         "--loglevel", "INFO", "--without-heartbeat", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def worker(redis_broker):
    proc = _start_worker(redis_broker, "render")
    yield proc
    _stop(proc)


@pytest.fixture
def inference_worker(redis_broker):
    proc = _start_worker(redis_broker, "inference")
    yield proc
    _stop(proc)


def test_each_task_is_queued_once_on_its_own_queue(redis_broker):
    """A task goes to its family's queue and to no other: a render worker never runs training, the hardware
    worker never renders (queues bound to one shared routing key would each get a copy of every task)."""
    client = redis.Redis.from_url(redis_broker)
    sent = {"render": "studies.tasks.render_ping", "inference": "studies.tasks.inference_train_model",
            "hardware": "studies.tasks.hardware_health"}
    with app.connection_for_write(redis_broker) as conn:
        for queue, name in sent.items():
            app.send_task(name, args=[0], connection=conn)
            # kombu's Redis transport keeps each queue's messages in a list named after the queue
            assert {q: client.llen(q) for q in sent} == {q: int(q == queue) for q in sent}, name
            client.delete(queue)


def test_a_worker_process_renders_a_queued_stimulus(worker, redis_broker):
    demo_corpus_build(quick=True)
    shifted, _ = Condition.objects.get_or_create(name="lipsync-shift-300ms", defaults={"kind": "time_shift", "params": {"ms": 300}})
    utt = Utterance.objects.get(corpus__name="demo-quick", name="utt01")
    assert not Stimulus.objects.filter(condition=shifted).exists()
    with app.connection_for_write(redis_broker) as conn:
        result = tasks.render_placeholder_stimulus.apply_async(args=(utt.pk, shifted.pk, "avatar", 7), connection=conn)
    assert result.id
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not Stimulus.objects.filter(condition=shifted).exists():
        assert worker.poll() is None, worker.stdout.read()
        time.sleep(0.5)
    stimulus = Stimulus.objects.get(condition=shifted)
    assert stimulus.recipe["shift_frames"] == round(0.3 * 25) and stimulus.is_placeholder
    from render.checks import check_stimulus

    facts = check_stimulus(Path(settings.MEDIA_ROOT) / stimulus.file)
    assert facts.sha256 == stimulus.sha256
    # The task was routed to the render queue and acknowledged only after it finished (acks_late).
    assert app.amqp.router.route({}, tasks.render_placeholder_stimulus.name)["queue"].name == "render"
    assert tasks.render_placeholder_stimulus.acks_late is True


def test_an_inference_worker_trains_a_registered_model(inference_worker, redis_broker, tmp_path):
    from django.core.management import call_command

    from inference.synthetic import make_corpus
    from studies import generators
    from studies.models import Corpus, TrainedModel

    make_corpus(tmp_path / "synthetic", n_utterances=6, seed=3)
    call_command("import_corpus", str(tmp_path / "synthetic"), "--name", "worker-synth", "--split-by", "utterance",
                 "--split", "0.5,0.25,0.25")
    model = generators.trained_model_create(
        name="worker-joint", kind="joint", corpus=Corpus.objects.get(name="worker-synth"),
        config={"hidden": 8, "train": {"max_epochs": 3}})
    with app.connection_for_write(redis_broker) as conn:
        tasks.inference_train_model.apply_async(args=(model.pk,), connection=conn)
    assert app.amqp.router.route({}, tasks.inference_train_model.name)["queue"].name == "inference"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        model.refresh_from_db()
        if model.status in ("done", "failed"):
            break
        assert inference_worker.poll() is None, inference_worker.stdout.read()
        time.sleep(0.5)
    assert model.status == "done", model.error
    assert model.progress["fraction"] == 1.0 and model.progress["epochs"] == 3
    assert (Path(settings.MEDIA_ROOT) / model.checkpoint_path).exists()
    assert TrainedModel.objects.get(pk=model.pk).checkpoint_path == "models/worker-joint.pt"


def test_an_inference_worker_writes_a_queued_significance_report(inference_worker, redis_broker):
    import shutil

    from studies import reporting, services
    from studies.demo import demo_spec_text
    from studies.models import StudyReport

    demo_corpus_build(quick=True)
    version, _ = services.study_load(text=demo_spec_text(quick=True))
    report = StudyReport.objects.create(study=version.study, options={"n_boot": 200})
    with app.connection_for_write(redis_broker) as conn:
        tasks.report_study.apply_async(args=(report.pk,), connection=conn)
    assert app.amqp.router.route({}, tasks.report_study.name)["queue"].name == "inference"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            report.refresh_from_db()
            if report.status in ("done", "failed"):
                break
            assert inference_worker.poll() is None, inference_worker.stdout.read()
            time.sleep(0.5)
        assert report.status == "done", report.error
        assert report.progress == {"stage": "done", "fraction": 1.0} and report.snapshot_at is not None
        summary = reporting.report_file(report, "summary.json").read_text()
        assert '"slug": "' + version.study.slug + '"' in summary and '"n_boot": 200' in summary
        assert reporting.report_file(report, "report.pdf").read_bytes().startswith(b"%PDF")
    finally:
        shutil.rmtree(Path(settings.REPORTS_ROOT) / version.study.slug, ignore_errors=True)
