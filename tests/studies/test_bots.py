"""Bots take the quick demo study over real HTTP (pytest-django's live server): an attentive bot completes
and is kept, a careless one is excluded for its attention check or straight-lining, a speeder for speed;
every acknowledged answer is in the database exactly once, also when a bot sends a submission twice as if
the first response had been lost. `manage.py run_bots` runs against the same server and refuses a study
it cannot run with a one-line reason."""
import threading
from dataclasses import replace

import pytest
import yaml
from django.core.management import CommandError, call_command

from studies import bots, services
from studies.models import Exclusion, Participant, Response, Trial, TrialStimulus

# Still attentive (1.5-6 s per answer), but at the quick end of it to keep the test short.
QUICK_ATTENTIVE = replace(bots.ATTENTIVE, think_ms=(1500, 1800))


@pytest.fixture
def live_site(transactional_db, live_server):
    """The live server; one request at a time when the test database is in-memory SQLite.

    There every server thread shares the test's one connection, so concurrent requests would interleave
    their transactions on it (a test-harness limit: PostgreSQL, and SQLite files, need no such care).
    """
    httpd = live_server.thread.httpd
    app = httpd.get_app()
    if live_server.thread.connections_override:
        lock = threading.Lock()

        def one_at_a_time(environ, start_response):
            with lock:
                return app(environ, start_response)

        httpd.set_app(one_at_a_time)
    yield live_server
    httpd.set_app(app)


def _session(study, bot_id: str) -> Participant:
    return Participant.objects.get(study=study, external_id_hash=services.external_id_hash("bot", bot_id))


def _rules(participant: Participant) -> set[str]:
    return set(Exclusion.objects.filter(participant=participant).values_list("rule", flat=True))


@pytest.mark.slow
def test_bots_are_judged_by_the_quality_rules_and_no_answer_is_lost_or_doubled(live_site, demo_study):
    target = bots.study_target(demo_study, live_site.url)
    assert target.known_answers, "the bots need the check clips' expected answers"
    attentive = bots.Bot(target, bot_id="test-attentive", behaviour=QUICK_ATTENTIVE, lose_responses=1.0)
    careless = bots.Bot(target, bot_id="test-careless", behaviour=bots.CARELESS)
    speeder = bots.Bot(target, bot_id="test-speeder", behaviour=bots.SPEEDER)

    summary = bots.run_bots([attentive, careless, speeder], concurrency=3)

    assert not summary.errors, [(r.bot_id, r.reason) for r in summary.errors]
    assert summary.outcomes["completed"] == 3
    assert all(r.completion_code for r in summary.results)
    kept = _session(demo_study, "test-attentive")
    assert kept.status == Participant.Status.COMPLETED and kept.source == Participant.Source.BOT
    assert _rules(kept) == set()
    # The MUSHRA screens' open references were watched like the other videos, and never rated.
    references = TrialStimulus.objects.filter(trial__participant=kept, role=TrialStimulus.Role.REFERENCE)
    assert references.count() == 3 and all(r.watch.ended for r in references.select_related("watch"))
    rated = set(Response.objects.filter(participant=kept).values_list("trial_id", "slot"))
    assert not rated & set(references.values_list("trial_id", "slot"))
    assert _rules(_session(demo_study, "test-careless")) & {"attention_check", "straight_lining"}
    assert "speed" in _rules(_session(demo_study, "test-speeder"))

    # Every acknowledged submission is stored once; the attentive bot sent each of its answers twice.
    resent = [s for s in attentive.result.submissions if s.resent]
    assert resent and len(resent) == len(attentive.result.submissions) // 2
    assert {s.status for s in resent} == {200}
    check = bots.submissions_verify(summary.submissions)
    assert check["lost"] == 0 and check["duplicates"] == 0 and check["unacknowledged"] == 0
    sessions = Participant.objects.filter(study=demo_study, source=Participant.Source.BOT)
    assert Response.objects.filter(participant__in=sessions).count() == check["rows_acknowledged"] == check["rows_in_db"]
    answered = Trial.objects.filter(participant__in=sessions, answered_at__isnull=False)
    assert answered.count() == check["acknowledged"] == Trial.objects.filter(participant__in=sessions).count()
    assert {str(t.submission_id) for t in answered} == {s.submission_id for s in summary.submissions}

    lat = summary.as_dict()["latency_ms"]
    assert {"entry", "page", "form", "video", "answer"} <= set(lat)
    assert "watch" not in lat  # as trial.js, the videos' facts go with the answer, not in requests of their own
    assert lat["answer"]["n"] == len(summary.submissions)
    assert all(stats["failed"] == 0 for stats in lat.values()), lat  # no 5xx and no network error, retried or not


@pytest.fixture
def small_study(demo_study):
    """The quick demo corpus with a single likert page and no checks: a run takes seconds."""
    from studies.demo import demo_spec_text

    spec = yaml.safe_load(demo_spec_text(quick=True))
    spec["slug"] = "bots-small"
    spec["pages"] = [{"type": "consent"}, {"type": "trials", "question": "naturalness", "attention_checks": 0},
                     {"type": "completion"}]
    version, _ = services.study_load(text=yaml.safe_dump(spec, sort_keys=False))
    services.study_set_status(study=version.study, status="live")
    return version.study


@pytest.mark.slow
def test_run_bots_command_reports_from_the_database(live_site, small_study, capsys):
    call_command("run_bots", small_study.slug, n=2, behaviour="speeder", base_url=live_site.url)
    out = capsys.readouterr().out
    assert "completed 2" in out
    assert "excluded by quality rules: 2 of 2 completed" in out and "speed 2" in out
    assert "lost 0, duplicates 0" in out
    assert Participant.objects.filter(study=small_study, source="bot", status="completed").count() == 2


def test_run_bots_refuses_what_it_cannot_run(demo_study):
    with pytest.raises(CommandError, match="no study with slug 'nope'"):
        call_command("run_bots", "nope", n=1)
    services.study_set_status(study=demo_study, status="draft")
    with pytest.raises(CommandError, match="not live"):
        call_command("run_bots", demo_study.slug, n=1, base_url="http://127.0.0.1:9")


def test_run_bots_mix_names_what_is_wrong(demo_study):
    for bad in ("attentive=2,lazy=1", "attentive", "attentive=two", "careless=0"):
        with pytest.raises(CommandError, match="--mix|at least 1"):
            call_command("run_bots", demo_study.slug, mix=bad, base_url="http://127.0.0.1:9")
    assert not Participant.objects.filter(study=demo_study).exists()


def test_attentive_bots_rate_by_what_they_see_and_careless_ones_do_not():
    """Perceived naturalness (from the condition's kind, via the harness) drives attentive bots' answers:
    recorded above a model above a still face on Likert, the hidden reference near 100 on MUSHRA sliders,
    the better clip of a pair chosen; a careless bot's answers do not follow it."""
    from collections import Counter
    from statistics import mean

    target = bots.StudyTarget("http://x", "t", "k", perceived={"gt": 0.96, "model": 0.62, "still": 0.15})
    video = {name: bots.Video(src=f"/v/{name}.mp4", token=name, slot=0, duration=1.0) for name in ("gt", "model", "still")}
    likert = {name: [] for name in video}
    picks = Counter()
    for i in range(40):
        bot = bots.Bot(target, bot_id=f"b{i}", behaviour=bots.ATTENTIVE)
        for name in video:
            likert[name].append(bot._likert(7, None, bot._seen(video[name])))
        assert bot._slider(None, video["gt"]) >= 92
        assert bot._slider(None, video["still"]) < 60
        pair = [bots.Video("/a", "model", 0, 1.0), bots.Video("/b", "still", 1, 1.0)]
        picks[bot._pairwise(["A", "tie", "B"], pair)["choice"]] += 1
    assert mean(likert["gt"]) > mean(likert["model"]) + 1 > mean(likert["still"]) + 2
    assert picks["A"] >= 38  # a model's motion against a still face: nearly always the model
    careless = bots.Bot(target, bot_id="c", behaviour=bots.CARELESS)
    assert len({careless._likert(7, None, careless._seen(video[name])) for name in video for _ in range(5)}) <= 2


def test_a_model_scored_by_evaluate_models_looks_as_natural_as_its_motion_follows_the_recording(
        demo_study, settings, tmp_path):
    """Between random alignment (0.42) and the recording (0.96) by the mean held-out CCC of its landmark
    regions (other rows ignored, the mean clipped to 0..1); a model without scores looks like any model."""
    from studies.models import Condition, Stimulus, TrainedModel

    settings.MEDIA_ROOT = str(tmp_path)
    corpus = demo_study.current_version.spec["stimuli"]["corpus"]
    template = Stimulus.objects.filter(utterance__corpus__name=corpus, condition__name="ground_truth").first()
    tokens = {}
    for name, model in (("model-good", "m-good"), ("model-poor", "m-poor"), ("model-unscored", "m-unscored")):
        TrainedModel.objects.create(name=model, kind="joint", corpus=template.utterance.corpus, status="done")
        condition = Condition.objects.create(name=name, kind="model", params={"model": model})
        fields = {f.name: getattr(template, f.name) for f in Stimulus._meta.fields if f.name not in ("id", "token")}
        tokens[name] = Stimulus.objects.create(**{**fields, "condition": condition}).token
    table = tmp_path / "reports" / corpus / "objective_metrics.csv"
    table.parent.mkdir(parents=True)
    table.write_text("model,region,utterances,ccc,rmse\n"
                     "m-good,landmarks:lower,3,0.8,0.1\n"
                     "m-good,landmarks:upper,3,0.6,0.2\n"
                     "m-good,head,3,0.0,2.0\n"            # not a face region in landmark space: ignored
                     "m-good,arkit52:lower,3,0.1,0.3\n"   # another space: ignored
                     "m-poor,landmarks:lower,3,0.2,0.4\n"
                     "m-poor,landmarks:upper,3,-0.3,0.5\n"  # mean -0.05: clipped to 0
                     "m-unscored,landmarks:lower,3,–,–\n")
    version = demo_study.current_version
    version.spec["stimuli"]["conditions"] += ["model-good", "model-poor", "model-unscored"]
    version.save(update_fields=["spec"])

    perceived = bots.study_target(demo_study, "http://x").perceived
    assert perceived[tokens["model-good"]] == pytest.approx(0.42 + 0.54 * 0.7)
    assert perceived[tokens["model-poor"]] == pytest.approx(0.42)
    assert perceived[tokens["model-unscored"]] == pytest.approx(0.62)
    assert perceived[template.token] == pytest.approx(0.96)
