"""Fixtures for the tests that run real processes: private Redis and PostgreSQL servers a test may restart
(never the machine's shared ones), Celery workers started and always stopped, and a small likert study on
the quick demo corpus for bots to take. The helpers themselves are in servers.py."""
from __future__ import annotations

import pytest

from tests.integration import servers

LIKERT_STUDY = """\
slug: {slug}
title: Faults and scale
stimuli:
  corpus: demo-quick
  conditions: [ground_truth, random_alignment, still]
  allow_placeholders: true
questions:
  naturalness:
    type: likert
    prompt: How natural is the motion of this face?
    points: 7
    labels: [Very unnatural, Very natural]
    items:
      - {{key: upper, text: "Upper face: how natural is its motion?"}}
      - {{key: lower, text: "Lower face: how natural is its motion?"}}
pages:
  - type: consent
  - type: instructions
  - type: trials
    question: naturalness
    attention_checks: 0
  - type: completion
recruitment:
  quota: 100000
"""


@pytest.fixture
def likert_study(transactional_db):
    """A live likert-only study over the quick demo corpus's short clips (about a second each): consent,
    instructions, the rated trials, completion. Committed, so server processes see it."""
    from studies import services
    from studies.demo import demo_corpus_build

    demo_corpus_build(quick=True)
    version, _ = services.study_load(text=LIKERT_STUDY.format(slug="faults-likert"))
    services.study_set_status(study=version.study, status="live")
    return version.study


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of this test's own (append-only file, as in the compose file), stopped afterwards."""
    server = servers.PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_postgres():
    """A PostgreSQL cluster of this test's own on a free port, removed afterwards."""
    server = servers.PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def celery_workers(tmp_path):
    """Start Celery workers with `celery_workers(name, broker_url, **options)`; every one is stopped at the
    end. Each has a cache folder of its own (EVALSITE_VAR_DIR), as a worker on another machine would, so
    renders are really made rather than found in this checkout's cache."""
    started: list[servers.CeleryWorker] = []

    def start(name: str, broker_url: str, *, pool: str = "solo", database_url: str | None = None,
              env: dict | None = None):
        var = tmp_path / f"var-{name}"
        var.mkdir(exist_ok=True)
        worker = servers.CeleryWorker(name=name, broker_url=broker_url,
                                      database_url=database_url or servers.url_of_test_database(),
                                      log_dir=tmp_path, pool=pool, env={"EVALSITE_VAR_DIR": str(var), **(env or {})})
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        worker.stop()
