"""Shared fixtures: media in a temporary folder, the quick demo study (placeholder clips are cached by
content hash under var/cache, so only the first run of a machine renders them), and a helper that takes a
participant through the pages with Django's test client."""
from __future__ import annotations

import os
import uuid

import pytest
from django.conf import settings
from django.urls import reverse


# Hypothesis tests run a share of their examples in the suite (FUZZ_SCALE, default 0.4) so it stays quick;
# `FUZZ_SCALE=3 pytest tests/studies/test_fuzz_*.py` searches deeper. Derandomised: the same examples each run.
FUZZ_SCALE = float(os.environ.get("FUZZ_SCALE", "0.4"))


def fuzz_examples(n: int) -> int:
    return max(10, round(n * FUZZ_SCALE))


@pytest.fixture(autouse=True, scope="session")
def _media_root(tmp_path_factory):
    settings.MEDIA_ROOT = tmp_path_factory.mktemp("media")
    yield settings.MEDIA_ROOT


@pytest.fixture(autouse=True, scope="session")
def _no_rate_limits():
    """Every test client comes from one address in one process: the participant rate limits are off, except in
    the tests of the limits themselves (tests/studies/test_security.py), which set their own."""
    settings.PARTICIPANT_RATE_LIMITS = ""
    yield


@pytest.fixture(scope="session")
def django_db_modify_db_settings():
    """One test database per pytest process, so parallel runs on one PostgreSQL never collide."""
    from django.db import connections

    for alias in connections:
        test = connections[alias].settings_dict.setdefault("TEST", {})
        base = test.get("NAME") or connections[alias].settings_dict["NAME"]
        if connections[alias].vendor == "postgresql":
            test["NAME"] = f"test_{os.path.basename(str(base))}_{os.getpid()}"


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Make the quick demo corpus once in the test database; each test's transaction rolls back to it.
    Transactional tests (live server, real workers) flush the tables and rebuild it from the clip cache."""
    from studies.demo import demo_corpus_build

    with django_db_blocker.unblock():
        demo_corpus_build(quick=True)


@pytest.fixture
def demo_study(db):
    """The quick demo study (3 utterances x ground_truth / random_alignment / still), open to participants."""
    from studies import services
    from studies.demo import demo_corpus_build, demo_spec_text

    demo_corpus_build(quick=True)
    version, _ = services.study_load(text=demo_spec_text(quick=True))
    services.study_set_status(study=version.study, status="live")
    return version.study


class ParticipantDriver:
    """Walks one participant through the study with Django's test client, as a browser would."""

    def __init__(self, client, study):
        self.client = client
        self.study = study

    @property
    def participant(self):
        from studies.models import Participant

        public_id = self.client.session["participant_sessions"][self.study.public_token]
        return Participant.objects.get(public_id=public_id)

    def start(self, query: str = ""):
        return self.client.get(reverse("entry", args=[self.study.public_token]) + query)

    def page(self):
        return self.client.get(reverse("take", args=[self.study.public_token]))

    def submit_page(self, data=None):
        p = self.participant
        return self.client.post(reverse("page_post", args=[self.study.public_token, p.page_index]), data or {})

    def current_trial(self):
        from studies import selectors

        return selectors.current_trial(self.participant)

    def pretend_shown(self, trial, seconds_ago: float = 60.0):
        """Move the trial's first showing back, as if its videos had had time to play (instead of sleeping)."""
        from datetime import timedelta

        from django.utils import timezone

        from studies.models import Trial

        Trial.objects.filter(pk=trial.pk).update(first_shown_at=timezone.now() - timedelta(seconds=seconds_ago))

    def watch_all(self, trial, *, pretend_shown_seconds_ago: float = 60.0, references: bool = True):
        """Report every video of the trial as played to the end (moving the shown time back instead of sleeping);
        a slider trial's open reference too unless `references` is false (watching it is optional)."""
        self.pretend_shown(trial, pretend_shown_seconds_ago)
        for slot in trial.slots.all():
            if slot.role == "reference" and not references:
                continue
            r = self.post_json("watch", {"trial": trial.public_id, "slot": slot.slot, "ended": True,
                                         "watched_fraction": 1.0, "seeks": 0, "pauses": 0, "replays": 0,
                                         "hidden_ms": 0, "playback_errors": 0})
            assert r.status_code == 200, r.content

    def post_json(self, name, body):
        return self.client.post(reverse(name, args=[self.study.public_token]), body, content_type="application/json")

    def answers_for(self, trial, value=4):
        spec = self.participant.version.spec
        q = spec["questions"][trial.question]
        slots = [s for s in trial.slots.all() if s.role != "reference"]  # the open reference is not rated
        if q["type"] == "likert":
            return [{"item": i["key"], "slot": 0, "value": value} for i in q["items"]]
        if q["type"] == "slider":
            return [{"item": i["key"], "slot": s.slot, "value": 50} for i in q["items"] for s in slots]
        return [{"item": i["key"], "slot": 0, "choice": "A"} for i in q["items"]]

    def answer(self, trial, answers=None, answer_ms=2500, submission_id=None):
        return self.post_json("answer", {"trial": trial.public_id, "submission_id": submission_id or str(uuid.uuid4()),
                                         "answers": answers if answers is not None else self.answers_for(trial),
                                         "answer_ms": answer_ms})

    def complete(self, *, attention_value=1, value=None, references=True):
        """Take every page to the end with plausible answers (playing the open references unless `references` is
        false); returns the final page response."""
        from studies import selectors
        from studies.models import Trial

        for _ in range(500):
            p = self.participant
            if p.status != "active":
                break
            kind = selectors.current_page(p)["type"]
            if kind == "consent":
                self.submit_page({"agree": "yes"})
            elif kind == "av_check":
                self.submit_page({"digits": selectors.av_check_stimulus(p.version.spec).expected_answer["digits"]})
            elif kind in ("training", "trials"):
                self.page()
                trial = self.current_trial()
                self.watch_all(trial, references=references)
                answers = self.answers_for(trial, value=value if value is not None else 1 + trial.position % 7)
                if trial.kind == Trial.Kind.ATTENTION:
                    answers = self.answers_for(trial, value=attention_value)
                r = self.answer(trial, answers)
                assert r.status_code == 201, r.content
            else:
                self.submit_page({})
        return self.page()


@pytest.fixture
def driver(client, demo_study):
    return ParticipantDriver(client, demo_study)
