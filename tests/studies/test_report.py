"""A study's significance report: `manage.py report` on the quick demo study after participants took it
through the real pages (one of them failing the attention check), the dashboard's button and its task, the
report files served to the study's researchers only, and `manage.py analyze` on a webMUSHRA results file."""
import json

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from scipy import stats

from studies import reporting
from studies.models import StudyReport
from tests.conftest import ParticipantDriver

QUICK = ["--n-boot", "200", "--bt-boot", "200"]


class MushraAwareDriver(ParticipantDriver):
    """Rates as an attentive assessor does on the MUSHRA page: the hidden reference high, the anchor low."""

    SLIDER = {"hidden_reference": 95, "anchor": 10}

    def answers_for(self, trial, value=4):
        answers = super().answers_for(trial, value)
        roles = {s.slot: s.role for s in trial.slots.all()}
        if self.participant.version.spec["questions"][trial.question]["type"] == "slider":
            for a in answers:
                a["value"] = self.SLIDER.get(roles[a["slot"]], 40 + 10 * a["slot"])
        return answers


def take_study(study, n, *, careless=()):
    """n participants complete the study; those in `careless` answer the attention check wrongly."""
    for i in range(n):
        driver = MushraAwareDriver(Client(), study)
        driver.start()
        driver.complete(attention_value=3 if i in careless else 1)
        assert driver.participant.status == "completed"


@pytest.mark.slow
def test_report_of_the_demo_study_has_every_question_and_lists_the_exclusion(demo_study, tmp_path):
    take_study(demo_study, 4, careless={1})
    out = tmp_path / "report"
    call_command("report", demo_study.slug, "--out", str(out), *QUICK)
    summary = json.loads((out / "summary.json").read_text())
    for name in ("index.html", "report.pdf", "tables/summary.csv", "tables/exclusions.csv"):
        assert (out / name).is_file(), name
    assert summary["source"]["slug"] == demo_study.slug and len(summary["spec_sha256"]) == 64
    excluded = summary["exclusions"]["excluded"]
    assert [e["rule"] for e in excluded] == ["attention_check"]
    assert summary["exclusions"]["n_participants_before"] == 4
    assert summary["exclusions"]["n_participants_after"] == 3
    # likert items as blocks (within), the slider as MUSHRA, the pairwise question as preferences
    designs = {(b["question"], b["item"]): b["design"] for b in summary["blocks"]}
    assert designs[("naturalness", "upper")] == "within" and designs[("naturalness", "lower")] == "within"
    assert {d for (q, _), d in designs.items() if q == "match"} == {"mushra"}
    assert [p["question"] for p in summary["preference"]] == ["preference"]
    assert summary["items"] and summary["items"][0]["question"] == "naturalness"
    # the kept participants' ratings, and nothing of the excluded one, make the numbers
    block = next(b for b in summary["blocks"] if (b["question"], b["item"]) == ("naturalness", "upper"))
    assert block["n_participants"] == 3
    assert sum(r["n_ratings"] for r in block["summary"]) == block["n_ratings"]


def test_report_of_a_study_without_responses_says_so(demo_study, tmp_path):
    call_command("report", demo_study.slug, "--out", str(tmp_path), *QUICK)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["messages"][0]["level"] == "error" and "no ratings" in summary["messages"][0]["text"].lower()
    assert (tmp_path / "index.html").is_file() and (tmp_path / "report.pdf").is_file()


def test_report_refuses_an_unknown_study(db, tmp_path):
    with pytest.raises(CommandError, match="no study 'nope'"):
        call_command("report", "nope", "--out", str(tmp_path))


@pytest.mark.slow
def test_the_dashboard_queues_a_report_whose_files_only_the_studys_researchers_get(
        demo_study, monkeypatch, settings, tmp_path, django_capture_on_commit_callbacks):
    settings.REPORTS_ROOT = tmp_path
    take_study(demo_study, 2)
    queued = []
    monkeypatch.setattr("studies.tasks.report_study.delay", lambda report_id: queued.append(report_id))
    owner = get_user_model().objects.create_user("owner", password="pw")
    demo_study.owner = owner
    demo_study.save()
    client = Client()
    client.force_login(owner)
    dashboard = reverse("study_dashboard", args=[demo_study.slug])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("study_report_request", args=[demo_study.slug]),
                               {"correction": "bonferroni", "n_boot": "300", "seed": "7"})
    assert response.status_code == 302
    report = StudyReport.objects.get(study=demo_study)
    assert queued == [report.pk] and report.status == "queued"
    assert report.options == {"correction": "bonferroni", "n_boot": 300, "seed": 7}
    report = reporting.report_run(report_id=report.pk)  # the task's body, as the worker runs it
    assert report.status == "done", report.error
    page = client.get(dashboard)
    assert b"summary.json" in page.content
    pdf = client.get(reverse("study_report_file", args=[demo_study.slug, report.pk, "report.pdf"]))
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    summary = json.loads(b"".join(client.get(
        reverse("study_report_file", args=[demo_study.slug, report.pk, "summary.json"])).streaming_content))
    assert summary["settings"]["correction"] == "bonferroni" and summary["settings"]["seed"] == 7
    progress = client.get(reverse("study_report_progress", args=[demo_study.slug, report.pk])).json()
    assert progress["status"] == "done" and progress["progress"]["fraction"] == 1.0
    # outside the report's folder, or another researcher: not found
    assert client.get(reverse("study_report_file", args=[demo_study.slug, report.pk, "../../x"])).status_code == 404
    stranger = Client()
    stranger.force_login(get_user_model().objects.create_user("stranger", password="pw"))
    assert stranger.get(reverse("study_report_file", args=[demo_study.slug, report.pk, "index.html"])).status_code == 404
    # a bad request changes nothing
    before = StudyReport.objects.count()
    assert client.post(reverse("study_report_request", args=[demo_study.slug]), {"n_boot": "lots"}).status_code == 400
    assert StudyReport.objects.count() == before


@pytest.mark.slow
def test_bot_sessions_are_in_a_dashboard_report_only_when_the_researcher_asks(demo_study, monkeypatch, settings,
                                                                               tmp_path):
    """Bots, like pilots, are not data: a report leaves them out unless the dashboard's "with preview, pilot and
    bot sessions" box is ticked (`manage.py demo` asks for them: its report is of its bots)."""
    from studies import services

    settings.REPORTS_ROOT = tmp_path
    monkeypatch.setattr("studies.tasks.report_study.delay", lambda report_id: None)
    bot = MushraAwareDriver(Client(), demo_study)
    bot.start(f"?mode=bot&key={services.pilot_key(demo_study)}&bot_id=bot-1")
    bot.complete()
    assert bot.participant.source == "bot" and bot.participant.status == "completed"
    owner = get_user_model().objects.create_user("owner", password="pw")
    demo_study.owner = owner
    demo_study.save()
    client = Client()
    client.force_login(owner)
    form = {"correction": "holm", "n_boot": "200", "seed": "0"}
    for extra in ({}, {"include_pilot": "1"}):
        response = client.post(reverse("study_report_request", args=[demo_study.slug]), {**form, **extra})
        assert response.status_code == 302
    without, with_bots = StudyReport.objects.filter(study=demo_study).order_by("pk")
    assert "include_pilot" not in without.options and with_bots.options["include_pilot"] is True
    summaries = {}
    for report in (without, with_bots):
        report = reporting.report_run(report_id=report.pk)
        assert report.status == "done", report.error
        summaries[report.pk] = json.loads((tmp_path / report.folder / "summary.json").read_text())
    assert "no ratings" in summaries[without.pk]["messages"][0]["text"].lower()
    assert summaries[with_bots.pk]["source"]["include_pilot"] is True
    assert summaries[with_bots.pk]["exclusions"]["n_participants_before"] == 1
    page = (tmp_path / StudyReport.objects.get(pk=with_bots.pk).folder / "index.html").read_text()
    assert "preview, pilot and bot responses included" in page


def webmushra_csv(path, *, assessors=8, seed=0):
    """A webMUSHRA `mushra.csv` (service/write.php's columns) with a hidden reference, an anchor and two
    conditions; assessor 0 rates the hidden reference low (BS.1534 excludes them)."""
    rng = np.random.default_rng(seed)
    lines = ["session_test_id,age,session_uuid,trial_id,rating_stimulus,rating_score,rating_time,rating_comment"]
    truth = {"reference": 95, "anchor": 20, "model": 60, "baseline": 45}
    rows = []
    for a in range(assessors):
        for trial in range(4):
            for stimulus, mean in truth.items():
                score = int(np.clip(rng.normal(mean, 8), 0, 100))
                if a == 0 and stimulus == "reference" and trial < 2:
                    score = 70
                if a != 0 and stimulus == "reference":
                    score = max(score, 91)
                if stimulus == "anchor":
                    score = min(score, 80)
                rows.append((f"s{a}", f"trial{trial}", stimulus, score))
                lines.append(f"demo,30,s{a},trial{trial},{stimulus},{score},{1000 + a},")
    path.write_text("\n".join(lines) + "\n")
    return rows


@pytest.mark.slow
def test_analyze_reads_a_webmushra_file_applies_bs1534_and_matches_scipy(tmp_path):
    rows = webmushra_csv(tmp_path / "mushra.csv")
    out = tmp_path / "out"
    call_command("analyze", "--csv", str(tmp_path / "mushra.csv"), "--design", "mushra", "--out", str(out), *QUICK)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"]["format"] == "webmushra"
    assert [(e["participant"], e["rule"]) for e in summary["exclusions"]["excluded"]] == [("s0", "bs1534_reference")]
    (block,) = summary["blocks"]
    kept = [r for r in rows if r[0] != "s0"]
    means = {}
    for assessor, _trial, stimulus, score in kept:
        means.setdefault(stimulus, {}).setdefault(assessor, []).append(score)
    order = sorted(means)
    matrix = [[np.mean(means[c][a]) for a in sorted(means[c])] for c in order]
    expected = stats.friedmanchisquare(*matrix)
    assert block["omnibus"]["statistic"] == pytest.approx(expected.statistic)
    assert block["omnibus"]["p"] == pytest.approx(expected.pvalue)


def test_analyze_refuses_a_missing_file_and_an_unreadable_one(tmp_path):
    with pytest.raises(CommandError, match="no file"):
        call_command("analyze", "--csv", str(tmp_path / "none.csv"), "--design", "within", "--out", str(tmp_path))
    bad = tmp_path / "bad.csv"
    bad.write_text("hello,world\n1,2\n")
    with pytest.raises(CommandError):
        call_command("analyze", "--csv", str(bad), "--design", "within", "--out", str(tmp_path / "o"))
    assert not (tmp_path / "o" / "summary.json").exists()
