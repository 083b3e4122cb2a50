"""Starting sessions: balanced cells, quotas that count valid completions only, abandoned slots reclaimed,
returning participants resumed, nobody taking the study twice, previews, pilots and bots kept out of the data;
an MTurk session kept for as long as the worker's assignment runs."""
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from studies import design, services
from studies.demo import demo_spec_text
from studies.models import Participant, Study
from tests.conftest import ParticipantDriver


def with_quota(study, quota, abandon_minutes=45):
    text = demo_spec_text(quick=True).replace("quota: 24", f"quota: {quota}").replace(
        "recruitment:\n", f"recruitment:\n  abandon_after_minutes: {abandon_minutes}\n")
    services.study_load(text=text)
    return Study.objects.get(pk=study.pk)


def start(study, source="direct", external_id=None):
    return services.participant_start(study=study, source=source, external_id=external_id)[0]


def test_cells_fill_evenly(demo_study):
    n_cells = design.cell_count(demo_study.current_version.spec)
    cells = [start(demo_study).cell for _ in range(2 * n_cells)]
    assert sorted(cells) == sorted(list(range(n_cells)) * 2)


def test_quota_counts_only_valid_completions_and_refills_after_exclusions(demo_study, driver):
    study = with_quota(demo_study, 1)
    driver.start()
    driver.complete()
    done = driver.participant
    assert done.status == "completed"
    with pytest.raises(services.StudyUnavailable) as info:
        start(study)
    assert info.value.code == "full"
    services.exclusion_add(participant=done, rule="manual", reason="fell asleep (experimenter's note)")
    assert start(study).status == "active"  # the excluded completion no longer fills the quota


def test_active_sessions_claim_cells_and_abandoned_ones_are_reclaimed(demo_study):
    study = with_quota(demo_study, 6, abandon_minutes=30)
    n_cells = design.cell_count(study.current_version.spec)
    first = [start(study) for _ in range(n_cells)]
    Participant.objects.filter(pk=first[0].pk).update(last_seen_at=timezone.now() - timedelta(minutes=31))
    newcomer = start(study)
    assert Participant.objects.get(pk=first[0].pk).status == "abandoned"
    assert newcomer.cell == first[0].cell  # the freed cell is the least filled one


def test_a_returning_browser_resumes_its_session(demo_study):
    browser = Client()
    entry = reverse("entry", args=[demo_study.public_token])
    browser.get(entry)
    pid = browser.session["participant_sessions"][demo_study.public_token]
    browser.get(entry)
    assert browser.session["participant_sessions"][demo_study.public_token] == pid
    assert Participant.objects.filter(study=demo_study).count() == 1


def test_the_same_worker_cannot_take_the_study_twice(demo_study, driver):
    first, resumed = services.participant_start(study=demo_study, source="mturk", external_id="A1WORKER")
    again, resumed_again = services.participant_start(study=demo_study, source="mturk", external_id="A1WORKER")
    assert again.pk == first.pk and resumed_again
    Participant.objects.filter(pk=first.pk).update(status="completed")
    with pytest.raises(services.StudyUnavailable) as info:
        services.participant_start(study=demo_study, source="mturk", external_id="A1WORKER")
    assert info.value.code == "duplicate"
    assert Participant.objects.filter(study=demo_study).count() == 1
    row = Participant.objects.get(pk=first.pk)
    assert "A1WORKER" not in str(row.__dict__) and len(row.external_id_hash) == 64


def test_a_closed_study_admits_nobody_but_previews(demo_study):
    services.study_set_status(study=demo_study, status="closed")
    with pytest.raises(services.StudyUnavailable):
        start(demo_study)
    r = Client().get(reverse("entry", args=[demo_study.public_token]))
    assert r.status_code == 403 and b"not open" in r.content
    assert start(demo_study, source="preview").source == "preview"


def test_previews_and_pilots_neither_claim_cells_nor_fill_the_quota(demo_study):
    study = with_quota(demo_study, 1)
    pilot = start(study, source="pilot")
    Participant.objects.filter(pk=pilot.pk).update(status="completed", completed_at=timezone.now())
    real = start(study)
    assert real.status == "active"  # the completed pilot did not fill the quota of 1


def idle(participant, minutes):
    Participant.objects.filter(pk=participant.pk).update(last_seen_at=timezone.now() - timedelta(minutes=minutes))


def status(participant):
    return Participant.objects.get(pk=participant.pk).status


def test_an_mturk_session_is_kept_while_the_workers_assignment_runs(demo_study):
    """abandon_after_minutes 45 (the default) and an MTurk assignment of 60 minutes (the default): a worker idle
    for 50 minutes still holds the assignment and may come back and submit it, so their session stays theirs."""
    study = with_quota(demo_study, 24)
    recruitment = study.current_version.spec["recruitment"]
    assert (recruitment["abandon_after_minutes"], recruitment["mturk"]["assignment_duration_minutes"]) == (45, 60)
    worker = start(study, source="mturk", external_id="A1IDLEWORKER")
    other = start(study, source="prolific", external_id="PROLIFIC-IDLE")
    idle(worker, 50), idle(other, 50)
    start(study)  # a newcomer: reclaims what is abandoned
    assert status(other) == "abandoned"  # Prolific's limit is not in the spec: abandon_after_minutes holds
    assert status(worker) == "active"
    back, resumed = services.participant_start(study=study, source="mturk", external_id="A1IDLEWORKER")
    assert resumed and back.pk == worker.pk
    idle(worker, 61)  # the assignment has run out
    start(study)
    assert status(worker) == "abandoned"


def test_an_mturk_session_keeps_the_longest_assignment_any_version_published(demo_study):
    """A HIT keeps the duration it was published with: shortening it in a new version of the study does not
    cut short the workers who accepted the longer one."""
    study = with_quota(demo_study, 24)
    text = study.current_version.spec_yaml
    assert "assignment_duration_minutes" not in text
    longer = "recruitment:\n  mturk:\n    assignment_duration_minutes: 120\n"
    services.study_load(text=text.replace("recruitment:\n", longer))
    worker = start(study, source="mturk", external_id="A1LONGHIT")
    services.study_load(text=text)  # back to the default 60 minutes
    idle(worker, 90)
    start(study)
    assert status(worker) == "active"
    idle(worker, 121)
    start(study)
    assert status(worker) == "abandoned"


def test_a_worker_who_accepts_a_new_assignment_gets_its_full_time(demo_study):
    """A worker who returned the HIT and accepted another assignment resumes their session; the new
    assignment's time runs from then, and so does the session's."""
    study = with_quota(demo_study, 24)
    first, _ = services.participant_start(study=study, source="mturk", external_id="A1RETURNS",
                                          external_session={"assignment_id": "ASSIGN-1"})
    idle(first, 70)  # the first assignment ran out; the worker accepts a second one
    again, resumed = services.participant_start(study=study, source="mturk", external_id="A1RETURNS",
                                                external_session={"assignment_id": "ASSIGN-2"})
    assert resumed and again.pk == first.pk
    start(study)
    assert status(first) == "active"


def test_bots_neither_fill_the_quota_nor_take_real_participants_cells(demo_study):
    """Running bots on a live study must not steal real participants' places: a completed bot fills none of
    the quota of 1, and five live bots in cell 0 do not push real participants out of it."""
    study = with_quota(demo_study, 1)
    n_cells = design.cell_count(study.current_version.spec)
    for i in range(5):
        Participant.objects.create(study=study, version=study.current_version, source="bot", cell=0, seed=i)
    Participant.objects.create(study=study, version=study.current_version, source="bot", cell=1, seed=9,
                               status="completed", completed_at=timezone.now())
    cells = [start(study).cell for _ in range(n_cells)]
    assert sorted(cells) == list(range(n_cells))


def test_bots_are_balanced_among_themselves_and_still_admitted_to_a_full_study(demo_study):
    """A crowd of bots covers every cell evenly whatever the real participants hold (the demo's report is of
    its bots), and, like a pilot, a bot is admitted when the quota is met."""
    study = with_quota(demo_study, 1)
    n_cells = design.cell_count(study.current_version.spec)
    crowded = [Participant.objects.create(study=study, version=study.current_version, source="lab", cell=0, seed=i)
               for i in range(5)]
    bots = [start(study, source="bot", external_id=f"bot-{i}") for i in range(2 * n_cells)]
    assert sorted(b.cell for b in bots) == sorted(list(range(n_cells)) * 2)
    Participant.objects.filter(pk=crowded[0].pk).update(status="completed", completed_at=timezone.now())
    with pytest.raises(services.StudyUnavailable) as info:
        start(study)  # the real completion meets the quota of 1
    assert info.value.code == "full"
    assert start(study, source="bot", external_id="bot-late").status == "active"


def test_bot_sessions_are_left_out_of_the_dashboard_and_exports_unless_asked_for(demo_study):
    from studies import selectors

    bot = ParticipantDriver(Client(), demo_study)
    bot.start(f"?mode=bot&key={services.pilot_key(demo_study)}&bot_id=bot-1")
    bot.complete()
    assert bot.participant.source == "bot" and bot.participant.status == "completed"
    figures = selectors.dashboard(demo_study)
    assert figures["valid_completions"] == 0 and figures["started"] == 0 and figures["pilot_sessions"] == 1
    assert figures["median_minutes"] is None  # bots' times would tell nothing of fair pay
    assert list(selectors.export_rows(demo_study)) == []
    rows = list(selectors.export_rows(demo_study, include_pilot=True))
    assert rows and {r["participant"] for r in rows} == {str(bot.participant.public_id)}


def test_pilot_link_needs_the_key(demo_study):
    browser = Client()
    entry = reverse("entry", args=[demo_study.public_token])
    browser.get(entry + "?mode=pilot&key=wrong")
    assert Participant.objects.get(study=demo_study).source == "direct"
    other = Client()
    other.get(entry + f"?mode=pilot&key={services.pilot_key(demo_study)}")
    assert Participant.objects.filter(study=demo_study, source="pilot").count() == 1


def test_unknown_study_token_is_a_plain_404(db):
    r = Client().get("/s/not-a-token/")
    assert r.status_code == 404


def test_a_growing_corpus_changes_neither_the_rated_utterances_nor_practice(demo_study):
    """An utterance added after the study was loaded (without the study's stimuli) is neither rated nor
    drawn for practice: the version froze its utterances."""
    from studies.models import Corpus, Trial, Utterance

    corpus = Corpus.objects.get(name="demo-quick")
    Utterance.objects.create(corpus=corpus, name="utt99", speaker="spk-a", metadata={"role": "speech"})
    for _ in range(8):
        p = start(demo_study)
        names = set(Trial.objects.filter(participant=p).values_list("slots__stimulus__utterance__name", flat=True))
        assert "utt99" not in names and {"utt01", "utt02", "utt03"} <= names


def test_a_start_that_fails_to_make_trials_frees_the_cell_and_the_worker(demo_study, monkeypatch):
    real = design.plan_trials

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(design, "plan_trials", broken)
    with pytest.raises(RuntimeError):
        services.participant_start(study=demo_study, source="prolific", external_id="PID-1")
    failed = Participant.objects.get(study=demo_study)
    assert failed.status == "abandoned" and failed.external_id_hash is None
    monkeypatch.setattr(design, "plan_trials", real)
    retry, resumed = services.participant_start(study=demo_study, source="prolific", external_id="PID-1")
    assert not resumed and retry.pk != failed.pk and retry.trials.exists()
