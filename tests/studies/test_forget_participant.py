"""Deleting a participant's data on request (`manage.py forget_participant`): found by the platform's id or
by their recruiting service's id through the keyed hash; a dry run changes nothing; --yes removes their
responses, trials, watch records, exclusions, session and the reports that hold their rows, and nothing of
anyone else's."""
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from studies import reporting
from studies.models import Exclusion, Participant, Response, StudyReport, Trial, WatchRecord


def _other_rows(keep):
    return (Response.objects.filter(participant=keep).count(), Trial.objects.filter(participant=keep).count(),
            WatchRecord.objects.filter(trial_stimulus__trial__participant=keep).count())


def test_forget_by_prolific_id_removes_their_data_and_only_theirs(driver, demo_study, settings, tmp_path, capsys):
    settings.REPORTS_ROOT = tmp_path / "reports"
    driver.start("?PROLIFIC_PID=5f00aa11bb22cc33dd44ee55&STUDY_ID=s1&SESSION_ID=x1")
    driver.complete(attention_value=5)  # fails the attention check: an exclusion to delete too
    gone = driver.participant
    keep_driver = type(driver)(Client(), demo_study)
    keep_driver.start("?PROLIFIC_PID=6a00aa11bb22cc33dd44ee66&STUDY_ID=s1&SESSION_ID=x2")
    keep_driver.complete()
    keep = keep_driver.participant
    assert Exclusion.objects.filter(participant=gone).exists()
    before_keep = _other_rows(keep)
    # a report made now holds both participants' rows; one made of an empty study holds neither
    folder = settings.REPORTS_ROOT / demo_study.slug / "1"
    folder.mkdir(parents=True)
    (folder / "responses.csv").write_text(f"participant,value\n{gone.public_id},3\n{keep.public_id},4\n")
    with_rows = StudyReport.objects.create(study=demo_study, status="done", folder=f"{demo_study.slug}/1")
    (settings.REPORTS_ROOT / demo_study.slug / "2").mkdir()
    (settings.REPORTS_ROOT / demo_study.slug / "2" / "responses.csv").write_text("participant,value\n")
    without = StudyReport.objects.create(study=demo_study, status="done", folder=f"{demo_study.slug}/2")

    call_command("forget_participant", demo_study.slug, "--prolific", "5f00aa11bb22cc33dd44ee55")
    out = capsys.readouterr().out
    assert f"participant {gone.public_id}" in out and f"in report {with_rows.pk}" in out and "nothing deleted" in out
    assert Participant.objects.filter(pk=gone.pk).exists() and Response.objects.filter(participant=gone).exists()

    call_command("forget_participant", demo_study.slug, "--prolific", "5f00aa11bb22cc33dd44ee55", "--yes")
    assert not Participant.objects.filter(pk=gone.pk).exists()
    assert not Response.objects.filter(participant_id=gone.pk).exists()
    assert not Trial.objects.filter(participant_id=gone.pk).exists()
    assert not Exclusion.objects.filter(participant_id=gone.pk).exists()
    assert not WatchRecord.objects.filter(trial_stimulus__trial__participant_id=gone.pk).exists()
    assert _other_rows(keep) == before_keep and all(before_keep)
    assert not StudyReport.objects.filter(pk=with_rows.pk).exists() and not folder.exists()
    assert StudyReport.objects.filter(pk=without.pk).exists()
    assert reporting.reports_mentioning(demo_study, str(gone.public_id)) == []


def test_forget_by_platform_id_and_clear_errors(driver, demo_study):
    driver.start()
    driver.complete()
    p = driver.participant
    with pytest.raises(CommandError, match="not a participant id"):
        call_command("forget_participant", demo_study.slug, "--participant", "not-a-uuid", "--yes")
    with pytest.raises(CommandError, match="no prolific worker nobody"):
        call_command("forget_participant", demo_study.slug, "--prolific", "nobody", "--yes")
    with pytest.raises(CommandError, match="no study"):
        call_command("forget_participant", "no-such-study", "--participant", str(p.public_id))
    assert Participant.objects.filter(pk=p.pk).exists()
    call_command("forget_participant", demo_study.slug, "--participant", str(p.public_id), "--yes")
    assert not Participant.objects.filter(pk=p.pk).exists()
