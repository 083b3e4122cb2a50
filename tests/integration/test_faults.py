"""Faults that must lose nothing, injected into real processes (issue 7, section 3): a gunicorn worker
SIGKILLed while answers are being saved (and while a session is being set up), Redis restarted in the
middle of a study, a render worker SIGKILLed in the middle of a render, PostgreSQL restarted in the middle
of a study.

The moment a worker is killed is not left to chance: the test holds a database lock that makes the
statement of interest wait (an answer's claim of its trial, a new session's trials), finds the gunicorn
workers running those statements from the database sessions' client ports, and kills one of them.

Bot participants (studies/bots.py) take a study over real HTTP and retry a failed request with the same
submission id, as the participant's page does. Every test judges by what the database holds afterwards
(studies.bots.submissions_verify and direct queries), never by the platform's own bookkeeping.

All of them are PostgreSQL-only: the server and worker processes must share the test's database, and the
SQLite pass's test database is in memory, where no other process can open it. Servers a test restarts are
its own (servers.PrivateRedis, servers.PrivatePostgres); the machine's shared ones are never touched.
"""
from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from evalsite.celery import app
from render.checks import check_stimulus
from studies import bots, tasks
from studies.models import Condition, Participant, RenderJob, Response, Stimulus, Trial, Utterance
from tests.integration import servers
from tests.integration.servers import wait_until

pytestmark = [pytest.mark.pg_only, pytest.mark.slow]

# Attentive bots that think briefly (the clips are ~1 s), so answers keep arriving while faults strike.
BRISK = replace(bots.ATTENTIVE, think_ms=(150, 400))
TRACE_MARKERS = ("Traceback", 'File "/', "Exception Value", "OperationalError", "psycopg", "django.db")


def _run_in_background(crowd: list[bots.Bot]):
    """Run the bots on a thread of their own; returns (future of the RunSummary, executor)."""
    pool = ThreadPoolExecutor(max_workers=1)
    return pool.submit(bots.run_bots, crowd), pool


def _acknowledged(crowd: list[bots.Bot]) -> int:
    return sum(len(b.result.submissions) for b in crowd)


def _assert_nothing_lost_or_doubled(summary: bots.RunSummary, study) -> dict:
    """Every bot finished; every acknowledged answer is in the database once; every trial is answered."""
    assert not summary.errors, [(r.bot_id, r.reason) for r in summary.errors]
    assert summary.outcomes["completed"] == len(summary.results)
    check = bots.submissions_verify(summary.submissions)
    assert (check["lost"], check["duplicates"], check["unacknowledged"]) == (0, 0, 0), check
    sessions = Participant.objects.filter(study=study)
    assert sessions.count() == len(summary.results)
    assert set(sessions.values_list("status", flat=True)) == {Participant.Status.COMPLETED}
    trials = Trial.objects.filter(participant__in=sessions)
    assert not trials.filter(answered_at__isnull=True).exists()
    assert trials.count() == check["acknowledged"]
    items = len(study.current_version.spec["questions"]["naturalness"]["items"])
    assert Response.objects.filter(participant__in=sessions).count() == items * trials.count() == check["rows_in_db"]
    return check


def _get(url: str) -> tuple[int, str]:
    """GET as a browser that just opened the link would: (status, body)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def _assert_no_trace_shown(summary: bots.RunSummary) -> list[str]:
    """No 5xx answer showed a participant a stack trace or a database error; returns the bodies seen."""
    bodies = [c.body for c in summary.calls() if c.status is not None and c.status >= 500]
    for body in bodies:
        assert not any(marker in body for marker in TRACE_MARKERS), body
    return bodies


# ------------------------------------------------------------------------------- 1. a web worker killed
ANSWER_CLAIM = 'UPDATE "studies_trial" SET answered_at'  # services.trial_answer's claim (hand-written SQL)
TRIALS_MADE = 'INSERT INTO "studies_trial"'


def _statements_waiting_on(lock_holder_pid: int, statement: str) -> list[tuple[int, str]]:
    """(client port, SQL) of the database sessions whose `statement...` waits on a lock of our session."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT client_port, query FROM pg_stat_activity WHERE datname = current_database() "
            "AND %s = ANY(pg_blocking_pids(pid)) AND query LIKE %s", [lock_holder_pid, statement + "%"])
        return cursor.fetchall()


def _kill_the_busiest_holder(server: bots.LocalServer, waiting: list[tuple[int, str]]) -> tuple[int, list[str]]:
    """SIGKILL the gunicorn worker (never the master) that holds the most of the `waiting` statements, as
    found by the client port of their database sessions; returns its pid and the statements it held."""
    workers = servers.child_pids(server.proc.pid)
    database_port = int(connection.settings_dict["PORT"] or 5432)
    holders = [(servers.pid_with_local_port(port, workers, remote_port=database_port), query)
               for port, query in waiting]
    assert {pid for pid, _ in holders} <= set(workers), (holders, workers)
    victim = max(workers, key=[pid for pid, _ in holders].count)
    os.kill(victim, signal.SIGKILL)
    return victim, [query for pid, query in holders if pid == victim]


def _wait_for_a_replacement(server: bots.LocalServer, victim: int, workers: int) -> None:
    def replaced():
        now = servers.child_pids(server.proc.pid)
        return len(now) == workers and victim not in now

    wait_until(replaced, timeout_s=30, what="gunicorn to replace the killed worker")


def test_a_web_worker_killed_while_saving_answers_loses_and_doubles_nothing(likert_study, tmp_path):
    """Answers are held in flight inside gunicorn workers (their claiming UPDATE waits on a row lock this
    test holds); the workers holding them are SIGKILLed (never the master, which starts new ones). The
    killed requests' transactions never commit; each bot resends the same submission id and it is saved
    exactly once. Some bots also resend answers that were acknowledged, as if the response had been lost."""
    import psycopg

    url = servers.url_of_test_database()
    server = bots.LocalServer(workers=3, threads=4, log_path=tmp_path / "gunicorn.log",
                              env={"DATABASE_URL": url, "DEBUG": "1", "DB_CONN_MAX_AGE": "60"})
    with server:
        crowd = bots.make_bots(bots.study_target(likert_study, server.base_url), n=24, behaviour=BRISK,
                               ramp_s=3, lose_responses=0.1)
        running, pool = _run_in_background(crowd)
        shown = Trial.objects.filter(participant__study=likert_study, first_shown_at__isnull=False,
                                     answered_at__isnull=True)
        wait_until(lambda: shown.count() >= 8, timeout_s=30, what="bots to be watching trials")
        with psycopg.connect(url) as locker:  # one transaction, rolled back at the end of the block
            locked = locker.execute("SELECT id FROM studies_trial WHERE id = ANY(%s) FOR UPDATE",
                                    [list(shown.values_list("id", flat=True))]).fetchall()
            assert locked
            wait_until(lambda: _statements_waiting_on(locker.info.backend_pid, ANSWER_CLAIM), timeout_s=15,
                       what="an answer to wait on the locked trials")
            time.sleep(0.5)  # let more answers arrive and wait
            victim, held = _kill_the_busiest_holder(
                server, _statements_waiting_on(locker.info.backend_pid, ANSWER_CLAIM))
            locker.rollback()
        summary = running.result(timeout=120)
        pool.shutdown()
        assert server.proc.poll() is None, "the gunicorn master must survive its workers"
        _wait_for_a_replacement(server, victim, workers=3)

    killed = [int(re.search(r"WHERE id = (\d+)", query).group(1)) for query in held]
    cut = [c for c in summary.calls("answer") if c.status is None]
    assert killed and len(cut) >= len(killed), "the answers held in the killed worker lost their connection"
    check = _assert_nothing_lost_or_doubled(summary, likert_study)
    assert check["acknowledged"] and any(s.resent for s in summary.submissions)
    # The answers that were in flight in the killed workers are each saved once, with the bot's submission.
    acked = {s.trial: s for s in summary.submissions}
    for trial_id in killed:
        trial = Trial.objects.get(pk=trial_id)
        assert str(trial.submission_id) == acked[trial.public_id].submission_id
        assert Response.objects.filter(trial=trial).count() == acked[trial.public_id].answers
    _assert_no_trace_shown(summary)


def test_a_web_worker_killed_while_a_session_is_set_up_leaves_a_session_the_retry_resumes(likert_study, tmp_path):
    """A session is made in two steps: the participant (with its cell, under the study's lock), then its
    trials. Bots open the link while this test holds a lock that makes the trials' INSERT wait; the worker
    holding the most of them is SIGKILLed, leaving sessions without trials. Each bot opens its link again
    (same external id), resumes its session, which gets its trials then, and completes the study: one
    session per bot, every trial answered once."""
    import psycopg

    url = servers.url_of_test_database()
    server = bots.LocalServer(workers=2, threads=4, log_path=tmp_path / "gunicorn.log",
                              env={"DATABASE_URL": url, "DEBUG": "1", "DB_CONN_MAX_AGE": "60"})
    with server:
        crowd = bots.make_bots(bots.study_target(likert_study, server.base_url), n=6, behaviour=BRISK)
        with psycopg.connect(url) as locker:  # one transaction, rolled back at the end of the block
            locker.execute("LOCK TABLE studies_trial IN EXCLUSIVE MODE")  # reads go on; writes wait
            running, pool = _run_in_background(crowd)
            wait_until(lambda: len(_statements_waiting_on(locker.info.backend_pid, TRIALS_MADE)) >= 3,
                       timeout_s=30, what="new sessions to be making their trials")
            time.sleep(0.5)  # let more arrive and wait
            victim, held = _kill_the_busiest_holder(server, _statements_waiting_on(locker.info.backend_pid,
                                                                                  TRIALS_MADE))
            locker.rollback()
        summary = running.result(timeout=120)
        pool.shutdown()
        _wait_for_a_replacement(server, victim, workers=2)

    # The bots' link (a GET) was resent by their HTTP client itself, as browsers resend an idempotent
    # request whose connection closed (RFC 9112, 9.3.1), so the bots saw no error: the database tells.
    assert held
    _assert_nothing_lost_or_doubled(summary, likert_study)


# -------------------------------------------------------------------------------------- 2. Redis restarted
def _publish(broker_url: str, task, *args) -> str:
    """Queue `task(*args)` on `broker_url` (not the app's configured broker); returns the task id."""
    with app.connection_for_write(broker_url) as conn:
        return task.apply_async(args=args, connection=conn).id


def _stimulus_files_are_whole(stimuli) -> None:
    """Each stimulus's file exists, passes the platform's checks and is the file that was registered, and no
    temporary file is left among the stimuli."""
    folder = Path(settings.MEDIA_ROOT) / "stimuli"
    for stimulus in stimuli:
        facts = check_stimulus(Path(settings.MEDIA_ROOT) / stimulus.file)
        assert facts.sha256 == stimulus.sha256, stimulus
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".") or not p.name.endswith(".mp4")]
    assert not leftovers, f"temporary files among the stimuli: {leftovers}"


def test_redis_restarted_during_a_study_stops_no_participant_and_queued_renders_resume(
        likert_study, private_redis, celery_workers, tmp_path):
    """The web app and a render worker use a Redis of the test's own. With renders queued and bots rating,
    Redis is shut down; every bot completes the study while it is down (rating never touches the broker).
    Then Redis starts again on its append-only file: the worker reconnects and the renders that were
    still queued are made, each once."""
    from django.utils import timezone

    worker = celery_workers("render", private_redis.url())
    worker.wait_ready()
    shifts = [Condition.objects.get_or_create(name=f"faults-shift-{ms}ms", kind=Condition.Kind.TIME_SHIFT,
                                              params={"ms": ms})[0] for ms in (120, 280)]
    utterances = list(Utterance.objects.filter(corpus__name="demo-quick", metadata__role="speech"))
    cells = Stimulus.objects.filter(condition__in=shifts, embodiment="avatar")
    stimuli_folder = Path(settings.MEDIA_ROOT) / "stimuli"
    files_before = set(stimuli_folder.iterdir())
    server = bots.LocalServer(workers=2, threads=4, log_path=tmp_path / "gunicorn.log",
                              env={"DATABASE_URL": servers.url_of_test_database(), "DEBUG": "1",
                                   "CELERY_BROKER_URL": private_redis.url()})
    with server:
        crowd = bots.make_bots(bots.study_target(likert_study, server.base_url), n=20, behaviour=BRISK, ramp_s=2)
        running, pool = _run_in_background(crowd)
        for shift in shifts:
            for i, utterance in enumerate(utterances):
                _publish(private_redis.url(), tasks.render_placeholder_stimulus, utterance.pk, shift.pk, "avatar", i)
        wait_until(lambda: cells.exists() and _acknowledged(crowd) >= 5, timeout_s=60,
                   what="the first render and the first answers")
        private_redis.stop()
        down_at, redis_down = time.perf_counter(), timezone.now()
        made_before = cells.count()
        summary = running.result(timeout=120)
        pool.shutdown()
        assert not private_redis.ping(), "Redis stayed down while the bots finished"
    assert made_before < len(shifts) * len(utterances), "renders were still queued when Redis went down"
    assert any(s.at > down_at for s in summary.submissions), "answers were saved while Redis was down"
    _assert_nothing_lost_or_doubled(summary, likert_study)
    assert not [c for c in summary.calls() if c.status is None or c.status >= 500]

    private_redis.start()
    wait_until(lambda: cells.count() == len(shifts) * len(utterances), timeout_s=90, interval_s=0.5,
               what=f"the queued renders after Redis came back\n{worker.log_text()[-3000:]}")
    assert worker.proc.poll() is None, "the worker rode out the outage"
    assert cells.filter(created_at__gt=redis_down).exists(), "renders queued before the outage resumed after it"
    assert sorted(cells.values_list("utterance_id", "condition_id")) == sorted(
        (u.pk, s.pk) for s in shifts for u in utterances), "one stimulus per cell"
    _stimulus_files_are_whole(cells)
    assert set(stimuli_folder.iterdir()) - files_before == {Path(settings.MEDIA_ROOT) / s.file for s in cells}


# ---------------------------------------------------------------------------- 3. a render worker killed
@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_a_render_worker_killed_mid_render_is_redelivered_and_no_partial_file_is_referenced(
        pool, transactional_db, private_redis, celery_workers):
    """A render is killed (SIGKILL) while the encoder is writing the stimulus. The task is acknowledged
    only when done (acks_late), so it is not lost:
    - prefork, as deployed (docker/Dockerfile): the pool process rendering is killed, as the kernel's OOM
      killer would; the worker sees it lost, puts the task back (reject_on_worker_lost) and a new pool
      process renders it;
    - solo: the whole worker is killed (a host lost); Redis still holds the unacknowledged task and a
      worker started in its place gets it after the visibility timeout (3 s here, CELERY_VISIBILITY_TIMEOUT).
    The stimulus registered is a whole, checked file and the only new file among the stimuli; the killed
    render's partial output is left under a temporary name only, referenced by nothing."""
    from studies.demo import demo_corpus_build

    demo_corpus_build(quick=True)
    quick_redelivery = {"CELERY_VISIBILITY_TIMEOUT": "3"}
    first = celery_workers("first", private_redis.url(), pool=pool, env=quick_redelivery)
    first.wait_ready()
    utterance = Utterance.objects.get(corpus__name="demo-quick", name="attention1")  # the longest, ~7 s
    job = RenderJob.objects.create(utterance=utterance, condition=Condition.objects.get(name="still"),
                                   embodiment="avatar", settings={"width": 128, "height": 128})
    stimuli_folder = Path(settings.MEDIA_ROOT) / "stimuli"
    files_before = set(stimuli_folder.iterdir())
    task_id = _publish(private_redis.url(), tasks.render_stimulus, job.pk)

    first_cache = Path(first.env["EVALSITE_VAR_DIR"]) / "cache" / "stimuli"
    partial = wait_until(lambda: [p for p in first_cache.glob(".*partial*") if p.stat().st_size > 0],
                         timeout_s=90, interval_s=0.02, what=f"the encoder to write\n{first.log_text()[-3000:]}")
    if pool == "prefork":
        [renderer] = servers.child_pids(first.proc.pid)
        os.kill(renderer, signal.SIGKILL)
        finisher = first
    else:
        first.kill()
        finisher = celery_workers("second", private_redis.url(), env=quick_redelivery)
    job.refresh_from_db()
    assert job.status == RenderJob.Status.RENDERING and job.attempts == 1
    assert not Stimulus.objects.filter(utterance=utterance, condition=job.condition).exists()

    wait_until(lambda: RenderJob.objects.filter(pk=job.pk, status__in=["done", "failed"]).exists(), timeout_s=120,
               interval_s=0.5, what=f"the redelivered render\n{finisher.log_text()[-3000:]}")
    job.refresh_from_db()
    assert (job.status, job.error, job.attempts) == (RenderJob.Status.DONE, "", 2)
    assert finisher.succeeded() == [task_id]
    if pool == "prefork":
        assert "signal 9 (SIGKILL)" in first.log_text()
    else:
        assert first.succeeded() == []
    stimulus = Stimulus.objects.get(utterance=utterance, condition=job.condition, embodiment="avatar")
    assert job.stimulus == stimulus
    _stimulus_files_are_whole([stimulus])
    assert set(stimuli_folder.iterdir()) - files_before == {Path(settings.MEDIA_ROOT) / stimulus.file}
    # The killed render's output lies under a temporary name only; every file under a final name is whole.
    assert any(p.exists() for p in partial)
    for cache in {first_cache, Path(finisher.env["EVALSITE_VAR_DIR"]) / "cache" / "stimuli"}:
        for finished in cache.glob("[!.]*.mp4"):
            check_stimulus(finished)


# ------------------------------------------------------------------------------ 4. PostgreSQL restarted
def test_postgresql_restarted_during_a_study_fails_requests_cleanly_and_loses_nothing(likert_study, private_postgres,
                                                                                     tmp_path):
    """The study runs on a PostgreSQL of the test's own (a copy of the test database); with bots answering,
    the server is stopped as in a crash (`pg_ctl -m immediate`: sessions cut, no checkpoint) and started
    again two seconds later. Requests in flight and during the outage fail with a friendly 5xx (checked:
    no stack trace or database error in any body a participant got, with DEBUG on); the bots retry; every
    persistent connection broken by the restart is dropped and remade; afterwards no answer is lost or
    doubled in that database."""
    url = private_postgres.create_database_from(servers.url_of_test_database(), "evalsite_faults")
    target_on = lambda base_url: bots.study_target(likert_study, base_url)  # noqa: E731 (same rows in the copy)
    server = bots.LocalServer(workers=2, threads=4, log_path=tmp_path / "gunicorn.log",
                              env={"DATABASE_URL": url, "DEBUG": "1", "DB_CONN_MAX_AGE": "60"})
    with server:
        crowd = bots.make_bots(target_on(server.base_url), n=20, behaviour=BRISK, ramp_s=2)
        running, pool = _run_in_background(crowd)
        wait_until(lambda: _acknowledged(crowd) >= 12, timeout_s=30, what="bots to be answering")
        private_postgres.stop("immediate")
        down_at = time.perf_counter()
        newcomer = _get(f"{server.base_url}/s/{likert_study.public_token}/")  # a page, not JSON, while it is down
        time.sleep(max(0.0, down_at + 2 - time.perf_counter()))
        private_postgres.start()
        up_at = time.perf_counter()
        summary = running.result(timeout=120)
        pool.shutdown()

    failed = [c for c in summary.calls() if c.status is None or c.status >= 500]
    assert failed and all(down_at - 0.5 <= c.at <= up_at + 10 for c in failed), "failures came from the outage"
    assert any(c.at >= down_at for c in summary.calls() if c.status == 201), "answers were saved after the restart"
    bodies = _assert_no_trace_shown(summary)
    assert bodies, "requests during the outage were answered with a 5xx, not left hanging"
    status, page = newcomer
    assert status == 500 and "Something went wrong" in page, (status, page[:500])
    assert not any(marker in page for marker in TRACE_MARKERS), page
    with servers.orm_on(url):
        _assert_nothing_lost_or_doubled(summary, likert_study)
