"""Participant pages stay fast under load: the database queries of each participant request are bounded, and
they do not grow with the number of trials done or of other participants in the study (no N+1)."""
from collections import defaultdict

import pytest

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

# The budget per request kind (most queries any one request of that kind may make). A change that needs
# more must say why here; one that grows with the data fails the growth checks below whatever the budget.
# Measured when this test was written: entry 19 (session, cell, every trial made at once), page 4, page
# posts 6-12, watch 5, answer 9, video 1; since the trial endpoints run hand-written SQL (studies/rawsql.py):
# trial pages 3 (other pages up to 5), watch 3, answer 8-9 (two savepoints inside the test's transaction).
BUDGET = {"entry": 22, "page": 5, "page_post": 14, "watch": 3, "answer": 10, "video": 1}


def _kind(path: str) -> str:
    if path.startswith("/s/"):
        return "entry"
    if path.startswith("/v/"):
        return "video"
    if path.endswith("/watch/"):
        return "watch"
    if path.endswith("/answer/"):
        return "answer"
    return "page_post" if "/page/" in path else "page"


def _counted(driver):
    """The driver's client, counting the queries of each request: {kind: [count, ...]} in order."""
    counts = defaultdict(list)
    request = driver.client.request

    def counted(**req):
        with CaptureQueriesContext(connection) as ctx:
            response = request(**req)
        counts[_kind(req["PATH_INFO"])].append(len(ctx.captured_queries))
        # where queries are logged, each shows its text (studies/rawsql.py's prepared statements have none)
        assert all(q["sql"] for q in ctx.captured_queries), ctx.captured_queries
        return response

    driver.client.request = counted
    return counts


def _run(driver, with_videos: bool = True):
    counts = _counted(driver)
    driver.start()
    from studies import selectors
    from studies.models import Participant

    original = driver.page

    def page_and_videos():
        response = original()
        if with_videos and driver.participant.status == Participant.Status.ACTIVE:
            trial = selectors.current_trial(driver.participant)
            if trial is not None:
                for slot in trial.slots.all():
                    driver.client.get(f"/v/{slot.url_token}.mp4", HTTP_RANGE="bytes=0-1023")  # as the page links it
        return response

    driver.page = page_and_videos
    driver.complete()
    return counts


def test_queries_per_participant_request_are_within_budget_and_do_not_grow(driver, demo_study):
    first = _run(driver)
    assert set(first) == set(BUDGET)
    for kind, counts in first.items():
        assert max(counts) <= BUDGET[kind], (kind, counts)
    # the same for every trial: the 1st and the last trial's page, watch reports and answer cost alike
    trial_pages = first["page"][:-1]  # (the last is the completion page)
    for kind, counts in (("page", trial_pages), ("watch", first["watch"]), ("answer", first["answer"]),
                         ("video", first["video"])):
        assert max(counts) - min(counts) <= 1, (kind, counts)
    # ...and for a participant who comes after several others have completed
    for _ in range(4):
        other = type(driver)(Client(), demo_study)
        other.start()
        other.complete()
    later = _run(type(driver)(Client(), demo_study))
    for kind in BUDGET:
        assert max(later[kind]) <= max(first[kind]) + 1, (kind, first[kind], later[kind])


def test_an_answer_carrying_its_videos_watch_facts_costs_two_statements_more_per_video(driver):
    """As trial.js sends it: each video's facts in the answer cost what a watch report of its own would (its
    read and its upsert), and nothing that grows with anything else."""
    import uuid

    from .test_trial_answer import to_first_trial

    trial = to_first_trial(driver)
    driver.pretend_shown(trial)
    videos = list(trial.slots.all())
    body = {"trial": trial.public_id, "submission_id": str(uuid.uuid4()), "answers": driver.answers_for(trial),
            "answer_ms": 2500, "watch": [{"slot": s.slot, "ended": True, "watched_fraction": 1.0} for s in videos]}
    with CaptureQueriesContext(connection) as ctx:
        r = driver.post_json("answer", body)
    assert r.status_code == 201, r.content
    assert len(ctx.captured_queries) <= BUDGET["answer"] + 2 * len(videos), [q["sql"] for q in ctx.captured_queries]


@pytest.mark.pg_only
def test_the_trial_endpoints_statements_are_prepared_once_per_connection(driver):
    """On PostgreSQL the trial endpoints' hand-written statements run as prepared statements (settings.py's
    prepare_threshold: psycopg prepares a statement on its sixth run on a connection): after a participant's
    trials, those run once per trial are in this connection's prepared set."""
    from studies import rawsql

    driver.start()
    driver.complete()
    with connection.cursor() as cur:
        cur.execute("SELECT statement FROM pg_prepared_statements WHERE from_sql = false")
        prepared = [row[0] for row in cur.fetchall()]
    trial = rawsql.T.Trial
    assert any(f"UPDATE {trial} SET answered_at" in text for text in prepared), prepared  # the answer's claim
    assert any(f"UPDATE {trial} SET first_shown_at" in text for text in prepared), prepared  # the trial page
