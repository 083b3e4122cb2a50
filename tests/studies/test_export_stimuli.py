"""`export_stimuli`: a study's videos as a bundle that checks itself. The bundle holds exactly the study's
stimuli with their database hashes, verifies after export (and with plain hashlib after unzipping), fails
verification naming a tampered video, keeps a blind bundle free of every condition and utterance name,
refuses bad inputs without writing anything, and exports byte for byte the same twice."""
import csv
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from studies import bundles
from studies.models import Condition, Stimulus, Utterance


def export(slug, out, **opts):
    stdout = io.StringIO()
    call_command("export_stimuli", slug, out=str(out), stdout=stdout, stderr=io.StringIO(), **opts)
    return stdout.getvalue()


def verify(path):
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        call_command("export_stimuli", verify=str(path), stdout=stdout, stderr=stderr)
    except CommandError as exc:
        return False, stderr.getvalue(), str(exc)
    return True, stdout.getvalue(), ""


def study_stimuli(study):
    return {s.token: (s, role) for s, role in bundles.study_stimuli(study.current_version)}


def text_members(zf):
    return {n: zf.read(n).decode("utf-8") for n in zf.namelist() if not n.endswith(".mp4")}


def test_export_then_verify_passes(demo_study, tmp_path):
    out = tmp_path / "bundle.zip"
    printed = export(demo_study.slug, out)
    assert "written to" in printed and out.exists()
    ok, text, _ = verify(out)
    assert ok, text
    n = len(study_stimuli(demo_study))
    assert f"{n} video(s) match the manifest" in text
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


def test_unzipped_bundle_checks_with_plain_sha256(demo_study, tmp_path):
    out = tmp_path / "bundle.zip"
    export(demo_study.slug, out)
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(out) as zf:
        zf.extractall(folder)
        members = set(zf.namelist())
    lines = (folder / "CHECKSUMS.sha256").read_text().splitlines()
    listed = {}
    for line in lines:
        digest, name = line.split("  ", 1)
        listed[name] = digest
    assert set(listed) == members - {"CHECKSUMS.sha256"}
    for name, digest in listed.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name


def test_manifest_rows_are_the_study_stimuli_with_their_hashes(demo_study, tmp_path):
    out = tmp_path / "bundle.zip"
    export(demo_study.slug, out)
    expected = study_stimuli(demo_study)
    # The quick demo: 3 utterances x 3 conditions, 2 attention checks and the A/V check clip.
    assert len(expected) == 12
    assert {role for _, role in expected.values()} == {"rated", "attention_check", "av_check"}
    with zipfile.ZipFile(out) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        rows_csv = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode())))
        batch = list(csv.DictReader(io.StringIO(zf.read("mturk_batch.csv").decode())))
        assert zf.read("study.yaml").decode() == demo_study.current_version.spec_yaml
        readme = zf.read("README.txt").decode()
        for row in manifest["stimuli"]:
            data = zf.read(row["file"])
            assert hashlib.sha256(data).hexdigest() == row["sha256"] == expected[row["token"]][0].sha256
            assert len(data) == row["size_bytes"]
    assert manifest["study"] == demo_study.slug and manifest["version"] == 1 and manifest["blind"] is False
    assert {r["token"] for r in manifest["stimuli"]} == set(expected)
    assert [r["token"] for r in rows_csv] == [r["token"] for r in manifest["stimuli"]]
    for row in rows_csv:
        stimulus, role = expected[row["token"]]
        assert row["file"] == f"stimuli/{stimulus.token}.mp4"
        assert (row["condition"], row["condition_kind"], row["embodiment"]) == (
            stimulus.condition.name, stimulus.condition.kind, stimulus.embodiment)
        assert (row["utterance"], row["speaker"], row["transcript"]) == (
            stimulus.utterance.name, stimulus.utterance.speaker, stimulus.utterance.transcript)
        assert row["role"] == role and row["sha256"] == stimulus.sha256 and row["is_placeholder"] == "1"
        assert row["seed"] == str(stimulus.recipe["seed"])
        assert json.loads(row["render_settings"])["maker"] == "placeholder"
        assert row["model"] == row["checkpoint"] == ""  # placeholders come from no model
    assert sorted(b["stimulus_token"] for b in batch) == sorted(expected)
    assert all(b["video_url"] == f"http://127.0.0.1:8000/bundle/{b['stimulus_token']}.mp4" for b in batch)
    assert demo_study.slug in readme and "version 1" in readme and "sha256sum -c CHECKSUMS.sha256" in readme


def test_base_url_sets_the_mturk_video_urls(demo_study, tmp_path):
    out = tmp_path / "bundle.zip"
    export(demo_study.slug, out, base_url="https://cdn.example.org/study-videos")
    with zipfile.ZipFile(out) as zf:
        batch = list(csv.DictReader(io.StringIO(zf.read("mturk_batch.csv").decode())))
    assert batch and all(b["video_url"] == f"https://cdn.example.org/study-videos/{b['stimulus_token']}.mp4"
                         for b in batch)


def test_blind_bundle_names_nothing_and_its_key_maps_every_token(demo_study, tmp_path):
    out = tmp_path / "blind.zip"
    printed = export(demo_study.slug, out, blind=True)
    key = tmp_path / "blind.key.zip"
    assert key.exists() and str(key) in printed
    expected = study_stimuli(demo_study)
    conditions = {s.condition.name for s, _ in expected.values()}
    conditions |= set(Condition.objects.values_list("name", flat=True))
    utterances = {s.utterance.name for s, _ in expected.values()}
    utterances |= set(Utterance.objects.filter(corpus__name="demo-quick").values_list("name", flat=True))
    transcripts = {s.utterance.transcript for s, _ in expected.values()}
    assert {"ground_truth", "random_alignment", "still", "utt01", "avcheck"} <= conditions | utterances
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        texts = text_members(zf)
        manifest = json.loads(zf.read("manifest.json"))
    assert "study.yaml" not in names  # it names the conditions: it travels with the key
    assert set(texts) == {"CHECKSUMS.sha256", "README.txt", "manifest.csv", "manifest.json", "mturk_batch.csv"}
    for name in names:
        for word in conditions | utterances:
            assert word not in name, (word, name)
    for name, text in texts.items():
        for word in conditions | utterances | transcripts:
            assert word not in text, f"{word!r} appears in {name}"
    assert manifest["blind"] is True
    assert set(manifest["stimuli"][0]) == set(bundles.BLIND_COLUMNS)
    with zipfile.ZipFile(key) as zf:
        key_rows = json.loads(zf.read("condition_key.json"))["stimuli"]
        key_csv = list(csv.DictReader(io.StringIO(zf.read("condition_key.csv").decode())))
        assert zf.read("study.yaml").decode() == demo_study.current_version.spec_yaml
    assert {r["token"] for r in key_rows} == {r["token"] for r in manifest["stimuli"]} == set(expected)
    for row in key_csv:
        stimulus, role = expected[row["token"]]
        assert (row["condition"], row["utterance"], row["embodiment"], row["role"]) == (
            stimulus.condition.name, stimulus.utterance.name, stimulus.embodiment, role)
    ok, text, _ = verify(out)
    assert ok, text
    assert "no file name reveals any of" in text and "covers the same tokens" in text
    ok, text, _ = verify(key)
    assert ok and "condition key" in text


def test_blind_verify_refuses_a_file_named_after_a_condition(demo_study, tmp_path):
    out = tmp_path / "blind.zip"
    export(demo_study.slug, out, blind=True)
    tampered = tmp_path / "renamed.zip"
    _rewrite(out, tampered, rename={"README.txt": "ground_truth-notes.txt"})
    ok, errors, reason = verify(tampered)
    assert not ok
    assert "ground_truth-notes.txt: the file name contains ground_truth" in errors


def _rewrite(src: Path, dst: Path, *, change=None, rename=None):
    """Copy a zip entry by entry, changing one member's bytes or names (valid CRCs: a deliberate edit)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if change and info.filename in change:
                data = change[info.filename](data)
            zout.writestr((rename or {}).get(info.filename, info.filename), data)


def test_one_changed_byte_in_a_video_fails_verify_naming_it(demo_study, tmp_path):
    out = tmp_path / "bundle.zip"
    export(demo_study.slug, out)
    with zipfile.ZipFile(out) as zf:
        victim = sorted(n for n in zf.namelist() if n.startswith("stimuli/"))[3]
    tampered = tmp_path / "tampered.zip"
    _rewrite(out, tampered, change={victim: lambda b: b[:1000] + bytes([b[1000] ^ 0x01]) + b[1001:]})
    ok, errors, reason = verify(tampered)
    assert not ok
    assert f"{victim}: sha256" in errors and "CHECKSUMS.sha256" in errors and "the manifest's" in errors
    assert "does not verify" in reason
    others = [line for line in errors.splitlines() if line and not line.startswith(victim)]
    assert others == []


def test_missing_stimulus_file_fails_export_and_writes_nothing(demo_study, tmp_path):
    stimulus = next(s for s, role in bundles.study_stimuli(demo_study.current_version) if role == "rated")
    Stimulus.objects.filter(pk=stimulus.pk).update(file="stimuli/not-there.mp4")
    out = tmp_path / "bundle.zip"
    err = io.StringIO()
    with pytest.raises(CommandError, match="nothing was written"):
        call_command("export_stimuli", demo_study.slug, out=str(out), stdout=io.StringIO(), stderr=err)
    assert stimulus.token in err.getvalue() and "missing" in err.getvalue()
    assert list(tmp_path.iterdir()) == []


def test_hash_that_does_not_match_the_row_fails_export_naming_the_token(demo_study, tmp_path):
    stimulus = next(s for s, role in bundles.study_stimuli(demo_study.current_version) if role == "attention_check")
    Stimulus.objects.filter(pk=stimulus.pk).update(sha256="0" * 64)
    err = io.StringIO()
    with pytest.raises(CommandError, match="1 stimulus file"):
        call_command("export_stimuli", demo_study.slug, out=str(tmp_path / "b.zip"), blind=True,
                     stdout=io.StringIO(), stderr=err)
    assert f"stimulus {stimulus.token}" in err.getvalue() and "sha256" in err.getvalue()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_without_force(demo_study, tmp_path):
    out = tmp_path / "bundle.zip"
    out.write_bytes(b"keep me")
    with pytest.raises(CommandError, match="exists already; pass --force"):
        export(demo_study.slug, out)
    assert out.read_bytes() == b"keep me"
    export(demo_study.slug, out, force=True)
    assert verify(out)[0]
    # A blind export also refuses to replace an existing key.
    (tmp_path / "blind.key.zip").write_bytes(b"an older key")
    with pytest.raises(CommandError, match="blind.key.zip exists already"):
        export(demo_study.slug, tmp_path / "blind.zip", blind=True)
    assert not (tmp_path / "blind.zip").exists()


def test_two_exports_are_byte_identical(demo_study, tmp_path):
    for blind in (False, True):
        a, b = tmp_path / f"a{blind}.zip", tmp_path / f"b{blind}.zip"
        export(demo_study.slug, a, blind=blind)
        export(demo_study.slug, b, blind=blind)
        assert a.read_bytes() == b.read_bytes()
        if blind:
            assert bundles.key_path_for(a).read_bytes() == bundles.key_path_for(b).read_bytes()
    with zipfile.ZipFile(tmp_path / "aFalse.zip") as zf:
        names = zf.namelist()
    assert names == sorted(names)


def test_command_errors_are_one_line(demo_study, tmp_path):
    with pytest.raises(CommandError, match="no study 'nope'"):
        export("nope", tmp_path / "x.zip")
    with pytest.raises(CommandError, match="give a study and a file"):
        call_command("export_stimuli", demo_study.slug)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    ok, errors, reason = verify(tmp_path / "junk.zip")
    assert not ok and "not a readable zip" in errors


def test_practice_utterances_with_every_treatment_are_in_the_bundle(demo_study):
    """Utterances outside the rated ones are practice material when they have every treatment's video."""
    corpus = demo_study.current_version.spec["stimuli"]["corpus"]
    template = {s.condition.name: s for s in Stimulus.objects.filter(utterance__corpus__name=corpus,
                                                                     utterance__name="utt01")}
    complete = Utterance.objects.create(corpus_id=template["still"].utterance.corpus_id, name="practice01")
    partial = Utterance.objects.create(corpus_id=complete.corpus_id, name="practice02")
    for utterance, conditions in ((complete, ["ground_truth", "random_alignment", "still"]), (partial, ["still"])):
        for name in conditions:
            source = template[name]
            Stimulus.objects.create(
                utterance=utterance, condition=source.condition, embodiment=source.embodiment, file=source.file,
                sha256=source.sha256, size_bytes=source.size_bytes, duration_s=source.duration_s, width=source.width,
                height=source.height, fps=source.fps, video_codec=source.video_codec)
    chosen = bundles.study_stimuli(demo_study.current_version)
    practice = sorted((s.utterance.name, s.condition.name) for s, role in chosen if role == "training")
    assert practice == [("practice01", "ground_truth"), ("practice01", "random_alignment"), ("practice01", "still")]
    assert len(chosen) == 15


def test_a_video_that_changes_while_packing_leaves_nothing_behind(demo_study, tmp_path, monkeypatch):
    stimulus = next(s for s, role in bundles.study_stimuli(demo_study.current_version) if role == "rated")
    Stimulus.objects.filter(pk=stimulus.pk).update(sha256="f" * 64)
    monkeypatch.setattr(bundles, "_video_problem", lambda path, row: None)  # as if it changed after the check
    with pytest.raises(bundles.BundleError, match=f"stimulus {stimulus.token}: the file changed"):
        bundles.export_bundle(version=demo_study.current_version, out=tmp_path / "b.zip", blind=True)
    assert list(tmp_path.iterdir()) == []


def test_an_attention_check_rendered_on_a_rated_utterance_keeps_it_rated(demo_study):
    """render_study puts attention checks on rated utterances: `utterances: all` must still count them
    (the check clips are left out by their role, not by having a check stimulus)."""
    from studies import services

    spec = dict(demo_study.current_version.spec)
    spec["stimuli"] = {k: v for k, v in spec["stimuli"].items() if k != "resolved_utterances"} | {"utterances": "all"}
    before = services.study_utterance_names(spec)
    check = Stimulus.objects.filter(utterance__corpus__name=spec["stimuli"]["corpus"],
                                    condition__kind="attention_check").first()
    rated = Utterance.objects.get(corpus__name=spec["stimuli"]["corpus"], name=before[0])
    Stimulus.objects.create(utterance=rated, condition=check.condition, embodiment=check.embodiment, file=check.file,
                            sha256=check.sha256, size_bytes=check.size_bytes, duration_s=check.duration_s,
                            width=check.width, height=check.height, fps=check.fps, video_codec=check.video_codec)
    assert services.study_utterance_names(spec) == before
    assert not any(name.startswith(("attention", "avcheck")) for name in before)
