"""Rendering spread over Celery workers (issue 7, section 2): two real worker processes consume one `render`
queue on a Redis of the test's own; a batch of render jobs is split between them, and each stimulus is made
once — also when the whole batch is queued a second time while the first is still being worked on (as a
second `render_study --background` does), so that two workers hold the same job at once.

The test judges by the database (one Stimulus per cell, every job done after exactly one render) and by the
files (one whole, checked file per stimulus), and it tells the workers apart by their own logs (which
hostname ran each task). PostgreSQL only: the workers share the test's database, and the SQLite pass's test
database is in memory, where no other process can open it.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings

from evalsite.celery import app
from render.checks import check_stimulus
from studies import tasks
from studies.models import Condition, RenderJob, Stimulus, Utterance
from tests.integration.servers import wait_until

pytestmark = [pytest.mark.pg_only, pytest.mark.slow]

VARIANTS = 4  # per utterance: still faces on four backgrounds, four different renders


@pytest.fixture
def render_batch(transactional_db):
    """Render jobs for 3 short utterances x 4 variants of the still condition (small frames: the test is about
    who renders what, not how well). Each variant has its own background, so every job is a real render."""
    from studies.demo import demo_corpus_build

    demo_corpus_build(quick=True)
    utterances = Utterance.objects.filter(corpus__name="demo-quick", metadata__role="speech").order_by("name")
    jobs = []
    for i in range(VARIANTS):
        condition, _ = Condition.objects.get_or_create(name=f"scale-still-{i}", kind=Condition.Kind.STILL)
        for utterance in utterances:
            jobs.append(RenderJob.objects.create(
                utterance=utterance, condition=condition, embodiment="avatar",
                settings={"width": 64, "height": 64, "background": [120 + 40 * i, 200, 220]}))
    return jobs


def test_two_workers_split_a_batch_and_make_each_stimulus_once(render_batch, private_redis, celery_workers):
    workers = [celery_workers(name, private_redis.url()) for name in ("alpha", "beta")]
    for worker in workers:
        worker.wait_ready()
    stimuli_folder = Path(settings.MEDIA_ROOT) / "stimuli"
    files_before = set(stimuli_folder.iterdir())

    # The batch, then the batch again in reverse order: the last job's second task is taken by the worker
    # that comes free first while the other is still rendering it (a second render_study --background, or
    # a redelivery, while the first is being worked on).
    with app.connection_for_write(private_redis.url()) as conn:
        first = {job.pk: tasks.render_stimulus.apply_async(args=(job.pk,), connection=conn).id for job in render_batch}
        again = [tasks.render_stimulus.apply_async(args=(job.pk,), connection=conn).id for job in render_batch[::-1]]

    def every_task_succeeded():
        for worker in workers:
            assert worker.proc.poll() is None, worker.log_text()[-3000:]
        return sum(len(w.succeeded()) for w in workers) == len(first) + len(again)

    wait_until(every_task_succeeded, timeout_s=150, interval_s=0.5, what="every task to succeed")

    ran = {w.hostname: w.succeeded() for w in workers}
    assert Counter(t for ids in ran.values() for t in ids) == Counter([*first.values(), *again]), "each ran once"
    # Split: each job is rendered by its first task (the second finds it made); both workers rendered some.
    rendered_by = {job: next(h for h, ids in ran.items() if task in ids) for job, task in first.items()}
    assert set(rendered_by.values()) == {w.hostname for w in workers}, Counter(rendered_by.values())
    # Once: every job done after exactly one render, one stimulus per cell, one new file per stimulus.
    jobs = RenderJob.objects.filter(pk__in=first)
    assert set(jobs.values_list("status", "attempts", "error")) == {(RenderJob.Status.DONE, 1, "")}
    stimuli = Stimulus.objects.filter(condition__name__startswith="scale-still-")
    assert stimuli.count() == len(render_batch)
    assert max(Counter(stimuli.values_list("utterance_id", "condition_id")).values()) == 1
    assert set(jobs.values_list("stimulus_id", flat=True)) == set(stimuli.values_list("pk", flat=True))
    new_files = set(stimuli_folder.iterdir()) - files_before
    assert sorted(p.name for p in new_files) == sorted(Path(s.file).name for s in stimuli)
    for stimulus in stimuli:
        assert check_stimulus(Path(settings.MEDIA_ROOT) / stimulus.file).sha256 == stimulus.sha256
