"""Commands researchers type: load_study / dump_study round-trip byte for byte, errors name the line and
change nothing, export_responses writes one tidy row per rating that matches the database."""
import csv
import io

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from studies.demo import demo_spec_text
from studies.models import Response, Study, StudyVersion


def test_load_then_dump_round_trips_exactly(db, tmp_path, demo_study):
    text = demo_spec_text(quick=True).replace("quota: 24", "quota: 30") + "# a trailing comment stays\n"
    path = tmp_path / "study.yaml"
    path.write_text(text)
    out = io.StringIO()
    call_command("load_study", str(path), stdout=out)
    assert "version 2" in out.getvalue()
    dumped = tmp_path / "dumped.yaml"
    call_command("dump_study", demo_study.slug, output=str(dumped))
    assert dumped.read_bytes() == path.read_bytes()
    out = io.StringIO()
    call_command("load_study", str(dumped), stdout=out)
    assert "unchanged" in out.getvalue()
    assert StudyVersion.objects.filter(study=demo_study).count() == 2
    old = io.StringIO()
    call_command("dump_study", demo_study.slug, study_version=1, stdout=old)
    assert old.getvalue() == demo_spec_text(quick=True)
    with pytest.raises(CommandError, match=f"study {demo_study.slug} has no version 9"):
        call_command("dump_study", demo_study.slug, study_version=9)


def test_malformed_spec_names_the_line_and_changes_nothing(db, tmp_path, demo_study, capsys):
    bad = demo_spec_text(quick=True).replace("    points: 7", "    points: seven")
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    err = io.StringIO()
    with pytest.raises(CommandError, match="nothing was changed"):
        call_command("load_study", str(path), stderr=err)
    line = bad.splitlines().index("    points: seven") + 1
    assert f"line {line}, questions.naturalness.points" in err.getvalue()
    assert StudyVersion.objects.filter(study=demo_study).count() == 1


def test_spec_that_names_missing_things_is_refused_with_the_fix(db, tmp_path):
    text = demo_spec_text(quick=True).replace("slug: demo-face-motion-quick", "slug: another").replace(
        "conditions: [ground_truth, random_alignment, still]", "conditions: [ground_truth, glow_t07, still]")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("load_study", str(path), stderr=err)
    assert "condition `glow_t07` does not exist" in err.getvalue()
    assert not Study.objects.filter(slug="another").exists()


def test_unbalanced_design_is_refused_with_the_numbers(db, tmp_path):
    text = demo_spec_text(quick=True).replace("slug: demo-face-motion-quick", "slug: unbalanced").replace(
        "  allow_placeholders: true", "  allow_placeholders: true\n  utterances: [utt01, utt02]")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("load_study", str(path), stderr=err)
    assert "multiple of the 3" in err.getvalue()


def test_placeholders_need_an_explicit_yes(db, tmp_path):
    text = demo_spec_text(quick=True).replace("slug: demo-face-motion-quick", "slug: real-only").replace(
        "  allow_placeholders: true\n", "")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("load_study", str(path), stderr=err)
    assert "placeholder clips" in err.getvalue() and "allow_placeholders" in err.getvalue()


def test_export_has_one_row_per_rating_matching_the_database(driver, tmp_path):
    driver.start()
    driver.complete()
    p = driver.participant
    out = tmp_path / "responses.csv"
    call_command("export_responses", driver.study.slug, output=str(out), stdout=io.StringIO())
    rows = list(csv.DictReader(out.open()))
    responses = Response.objects.filter(participant=p).select_related("stimulus__condition", "trial")
    assert len(rows) == responses.count()
    by_key = {(int(r["trial_position"]), r["item"], int(r["slot"])): r for r in rows}
    for resp in responses:
        row = by_key[(resp.trial.position, resp.item, resp.slot)]
        assert float(row["value"]) == resp.value
        assert row["participant"] == str(p.public_id)
        if resp.stimulus is not None:
            assert row["stimulus"] == resp.stimulus.token
            assert row["condition"] == resp.stimulus.condition.name
    pairwise = [r for r in rows if r["question_type"] == "pairwise"]
    assert pairwise and all(r["pair_a"] and r["pair_b"] for r in pairwise)
    assert all(r["watched_fraction"] == "1.0" for r in rows)


def test_export_leaves_out_preview_sessions_unless_asked(demo_study, client, django_user_model, tmp_path):
    from studies import services
    from tests.conftest import ParticipantDriver

    preview = services.participant_start(study=demo_study, source="preview")[0]
    session = client.session
    session["participant_sessions"] = {demo_study.public_token: str(preview.public_id)}
    session.save()
    client.cookies[settings.SESSION_COOKIE_NAME] = session.session_key  # sessions are signed cookies
    ParticipantDriver(client, demo_study).complete()
    plain, with_pilot = io.StringIO(), io.StringIO()
    call_command("export_responses", demo_study.slug, stdout=plain, stderr=io.StringIO())
    call_command("export_responses", demo_study.slug, include_pilot=True, stdout=with_pilot, stderr=io.StringIO())
    assert len(plain.getvalue().splitlines()) == 1  # header only
    assert len(with_pilot.getvalue().splitlines()) > 10


def test_unknown_slug_is_a_one_line_error(db):
    with pytest.raises(CommandError, match="no study 'nope'"):
        call_command("dump_study", "nope")
    with pytest.raises(CommandError, match="no study 'nope'"):
        call_command("export_responses", "nope")
