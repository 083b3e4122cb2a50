"""render_study: every stimulus a study needs is made once — on the avatar and on the simulated robot —
with its recipe recorded; failures are reported with their reason and can be retried; the researcher sees
progress and a gallery."""
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from studies.models import Condition, RenderJob, Stimulus

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

SPEC = """\
slug: render-test
title: Rendering test
stimuli:
  corpus: synth-render
  conditions:
{recorded}    - still
    - {{name: joint-model, kind: model, model: {model}}}
  embodiments: [{embodiments}]
  utterances: [syn000, syn001]
  render: {{width: 96, height: 96, fps: 10}}
questions:
  naturalness: {{type: likert, prompt: "How natural is the motion?", points: 5}}
pages:
  - type: trials
    question: naturalness
    attention_checks: {attention}
  - type: completion
"""


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory):
    from inference.synthetic import make_corpus

    folder = tmp_path_factory.mktemp("synthetic-render")
    make_corpus(folder, n_utterances=6, seed=2)
    return folder


@pytest.fixture
def corpus(synthetic_folder, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.VAR_DIR = tmp_path / "var"  # a cache of rendered files of its own
    call_command("import_corpus", str(synthetic_folder), "--name", "synth-render", "--split-by", "utterance",
                 "--split", "0.5,0.25,0.25")


def _spec_file(tmp_path, *, embodiments="avatar", attention=0, model="synth-render-joint", recorded=True):
    path = tmp_path / "study.yaml"
    recorded_conditions = "    - ground_truth\n    - random_alignment\n" if recorded else ""
    path.write_text(SPEC.format(model=model, embodiments=embodiments, attention=attention,
                                recorded=recorded_conditions))
    return path


def _train(kind, name, *extra):
    call_command("train", "--corpus", "synth-render", "--model", kind, "--name", name,
                 "--set", "train.max_epochs=2", *extra)


def test_every_stimulus_is_made_once_with_its_recipe_on_avatar_and_robot(corpus, tmp_path):
    _train("joint", "synth-render-joint", "--set", "hidden=8")
    _train("inverse", "synth-render-inverse")
    spec = _spec_file(tmp_path, embodiments="avatar, robot_sim", attention=1)
    call_command("render_study", str(spec))
    stimuli = Stimulus.objects.filter(utterance__corpus__name="synth-render")
    # 2 utterances × 4 conditions × 2 embodiments, and 2 attention checks per embodiment.
    assert stimuli.filter(condition__kind__in=["ground_truth", "random_alignment", "still", "model"]).count() == 16
    checks = stimuli.filter(condition__kind="attention_check")
    assert checks.count() == 4
    assert all(s.expected_answer and "value" in s.expected_answer for s in checks)
    assert all(s.duration_s >= 7.0 - 0.1 for s in checks)  # the instruction shows 5 s from 2 s in
    shuffled = stimuli.get(condition__name="random_alignment", utterance__name="syn000", embodiment="avatar")
    assert shuffled.recipe["donor"] != "syn000" and "start_frame" in shuffled.recipe
    model = stimuli.get(condition__name="joint-model", utterance__name="syn001", embodiment="robot_sim")
    assert model.recipe["model"] == "synth-render-joint" and model.recipe["inverse_model"] == "synth-render-inverse"
    assert model.recipe["rig"].startswith("robot_sim:") and model.width == 96 and model.fps == 10
    assert not model.is_placeholder
    tokens = set(stimuli.values_list("token", flat=True))

    # A second run makes nothing and keeps every token; the study now loads.
    call_command("render_study", str(spec))
    assert set(Stimulus.objects.filter(utterance__corpus__name="synth-render").values_list("token", flat=True)) == tokens
    assert RenderJob.objects.filter(status="done").count() == 20


@pytest.mark.pg_only  # the render processes share the test database, so it must be a server's
@pytest.mark.django_db(transaction=True)
def test_two_render_processes_make_each_stimulus_once_and_take_up_a_stopped_run(corpus, tmp_path, settings):
    from studies.rendering import render_jobs_plan
    from studies.spec import parse_spec

    _train("joint", "synth-render-joint", "--set", "hidden=8")
    spec = _spec_file(tmp_path)
    jobs = render_jobs_plan(parse_spec(spec.read_text()))
    assert len(jobs) == 8 and {j.status for j in jobs} == {"queued"}
    # A run that was stopped mid-render left one job "rendering": the next run takes it again.
    RenderJob.objects.filter(pk=jobs[0].pk).update(status="rendering", attempts=1)

    call_command("render_study", str(spec), "--jobs", "2")
    done = RenderJob.objects.filter(utterance__corpus__name="synth-render")
    assert done.count() == 8 and set(done.values_list("status", flat=True)) == {"done"}
    stimuli = Stimulus.objects.filter(utterance__corpus__name="synth-render")
    cells = list(stimuli.values_list("utterance__name", "condition__name", "embodiment"))
    assert len(cells) == len(set(cells)) == 8
    assert done.get(pk=jobs[0].pk).stimulus is not None and done.get(pk=jobs[0].pk).attempts == 2
    # The processes wrote into this test's folders (media and the rendered-file cache), not the defaults.
    assert all((Path(settings.MEDIA_ROOT) / s.file).is_file() for s in stimuli)
    assert len(list((Path(settings.VAR_DIR) / "cache" / "stimuli").glob("*.mp4"))) == 8


def test_render_processes_must_be_at_least_one(corpus, tmp_path):
    with pytest.raises(CommandError, match="--jobs must be at least 1"):
        call_command("render_study", str(_spec_file(tmp_path)), "--jobs", "0")
    assert not RenderJob.objects.exists()


def test_a_failed_render_says_why_and_can_be_retried(corpus, tmp_path, client, django_user_model):
    spec = _spec_file(tmp_path, recorded=False)  # still and a model that has not been trained yet
    with pytest.raises(CommandError, match="could not be rendered"):
        call_command("render_study", str(spec))
    failed = RenderJob.objects.filter(status="failed")
    assert failed.count() == 2 and all("synth-render-joint" in j.error and "train" in j.error for j in failed)
    assert Stimulus.objects.filter(condition__name="still", utterance__corpus__name="synth-render").count() == 2
    assert not Stimulus.objects.filter(condition__name="joint-model").exists()
    assert Condition.objects.get(name="joint-model").params == {"model": "synth-render-joint"}

    # Train the model it names, then retry only the failures.
    _train("joint", "synth-render-joint", "--set", "hidden=8")
    call_command("render_study", str(spec), "--retry-failed")
    assert RenderJob.objects.filter(status="failed").count() == 0
    assert Stimulus.objects.filter(condition__name="joint-model").count() == 2

    call_command("load_study", str(spec))  # every stimulus exists now, so the study loads
    client.force_login(django_user_model.objects.create_superuser("boss", "b@example.org", "x"))
    dashboard = client.get("/r/render-test/").content.decode()
    assert "4 of 4 made" in dashboard
    gallery = client.get("/r/render-test/gallery/?utterance=syn001").content.decode()
    assert gallery.count("<video") == 2 and "joint-model" in gallery


def test_a_robot_stimulus_without_an_inverse_model_is_refused_with_the_fix(corpus, tmp_path):
    _train("joint", "synth-render-joint", "--set", "hidden=8")
    spec = _spec_file(tmp_path, embodiments="robot_sim", recorded=False)
    with pytest.raises(CommandError):
        call_command("render_study", str(spec))
    errors = set(RenderJob.objects.filter(status="failed").values_list("error", flat=True))
    assert errors and all("--model inverse" in e for e in errors)
    assert not Path(tmp_path / "media" / "stimuli").exists() or not any((tmp_path / "media" / "stimuli").iterdir())


def test_uploaded_videos_are_checked_and_reencoded_only_when_asked(corpus, tmp_path, settings):
    import subprocess

    import numpy as np

    from render.checks import sha256_of
    from render.encode import encode_stimulus

    uploads = tmp_path / "uploads" / "theirs"
    uploads.mkdir(parents=True)
    media = Path(settings.MEDIA_ROOT) / "corpora" / "synth-render"
    frames = [np.full((64, 64, 3), 40 * (i % 5), np.uint8) for i in range(50)]
    encode_stimulus(iter(frames), media / "syn000.wav", uploads / "syn000.mp4", fps=25, width=64, height=64)
    # syn001's video breaks the rules a re-encode can fix: 4:4:4 chroma and an odd width.
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=65x64:rate=25",
                    "-i", str(media / "syn001.wav"), "-shortest", "-pix_fmt", "yuv444p", "-c:v", "libx264",
                    "-c:a", "aac", str(uploads / "syn001.mov")], check=True)
    spec = tmp_path / "study.yaml"
    spec.write_text(SPEC.format(model="x", embodiments="avatar", attention=0, recorded="").replace(
        "    - {name: joint-model, kind: model, model: x}", "    - {name: theirs, kind: uploaded}"))

    with pytest.raises(CommandError, match="could not be rendered"):
        call_command("render_study", str(spec), "--uploads", str(tmp_path / "uploads"))
    failed = RenderJob.objects.get(status="failed")
    assert failed.utterance.name == "syn001" and "--reencode" in failed.error and "yuv444p" in failed.error
    kept = Stimulus.objects.get(condition__name="theirs", utterance__name="syn000")
    assert kept.sha256 == sha256_of(uploads / "syn000.mp4") and kept.recipe["maker"] == "uploaded"

    call_command("render_study", str(spec), "--uploads", str(tmp_path / "uploads"), "--retry-failed", "--reencode")
    fixed = Stimulus.objects.get(condition__name="theirs", utterance__name="syn001")
    assert fixed.recipe["reencoded"] is True and fixed.width % 2 == 0
    assert fixed.recipe["source_sha256"] == sha256_of(uploads / "syn001.mov")


def test_a_study_may_render_on_a_custom_avatar_and_a_missing_one_is_named(corpus, tmp_path, settings):
    """`stimuli.render.avatar`: the example head (docs/examples/custom_avatar) renders the study's cells; the
    recipe names it with its files' hash; a path that is not there is refused before anything is made."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "custom_avatar" / "avatar.yaml"
    text = SPEC.format(model="unused", embodiments="avatar", attention=0, recorded="    - ground_truth\n")
    text = text.replace("    - {name: joint-model, kind: model, model: unused}\n", "")
    custom = tmp_path / "custom.yaml"
    custom.write_text(text.replace("render: {width: 96, height: 96, fps: 10}",
                                   f"render: {{width: 96, height: 96, fps: 10, avatar: '{example}'}}"))
    call_command("render_study", str(custom))
    made = Stimulus.objects.filter(utterance__corpus__name="synth-render")
    assert made.count() == 4  # 2 utterances x (ground truth, still)
    assert {s.recipe["rig"] for s in made} == {"custom_avatar"}
    assert len({s.recipe["avatar_sha256"] for s in made}) == 1

    # (A cell's stimulus is made once, whatever study asks again: new cells, a time shift, show the error.)
    missing = tmp_path / "missing.yaml"
    missing.write_text(text.replace("slug: render-test", "slug: render-missing")
                       .replace("    - ground_truth\n    - still\n", "    - {name: shifted, kind: time_shift, ms: 200}\n")
                       .replace("render: {width: 96, height: 96, fps: 10}",
                                "render: {width: 96, height: 96, fps: 10, avatar: nowhere.yaml}"))
    jobs_before = RenderJob.objects.count()
    with pytest.raises(CommandError, match="nowhere.yaml is not a file.*nothing was made"):
        call_command("render_study", str(missing))
    assert RenderJob.objects.count() == jobs_before


def test_an_avatar_edited_in_place_gets_new_videos_and_never_mixes_into_a_loaded_study(corpus, tmp_path):
    """A custom avatar counts by its files' contents, not only its path: after its map is edited in place, the
    study's YAML renders every cell anew (the old videos are not reused for the new head), and a study loaded
    before the edit refuses to render more cells on the changed head, saying why."""
    import shutil

    from studies import services

    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "custom_avatar"
    avatar = tmp_path / "my-head"
    shutil.copytree(example, avatar)
    text = SPEC.format(model="unused", embodiments="avatar", attention=0, recorded="    - ground_truth\n")
    text = text.replace("    - {name: joint-model, kind: model, model: unused}\n", "").replace(
        "render: {width: 96, height: 96, fps: 10}",
        f"render: {{width: 96, height: 96, fps: 10, avatar: '{avatar / 'avatar.yaml'}'}}")
    study_file = tmp_path / "study.yaml"
    study_file.write_text(text)
    call_command("render_study", str(study_file))
    first = {s.pk: s.variant for s in Stimulus.objects.filter(utterance__corpus__name="synth-render")}
    assert len(first) == 4 and len(set(first.values())) == 1
    version, _ = services.study_load(text=text)  # loaded, with the head as it is now

    yaml_file = avatar / "avatar.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("color: [0.76, 0.42, 0.30]", "color: [0.60, 0.40, 0.30]"))
    call_command("render_study", str(study_file))
    made = Stimulus.objects.filter(utterance__corpus__name="synth-render")
    again = {s.pk: s for s in made if s.pk not in first}
    assert len(again) == 4  # every cell anew, in a variant of its own
    assert {s.variant for s in again.values()}.isdisjoint(first.values())
    assert len({s.recipe["avatar_sha256"] for s in made}) == 2

    # The study loaded before the edit keeps its videos; a cell it still lacks is not made on the new head.
    Stimulus.objects.filter(pk__in=list(first)).first().delete()
    with pytest.raises(CommandError, match="could not be rendered"):
        call_command("render_study", version.study.slug)
    failed = RenderJob.objects.filter(status="failed")
    assert failed.count() == 1 and "changed since the study was read" in failed.get().error


def test_a_catch_trial_condition_renders_shifted_motion_with_a_known_answer(corpus, tmp_path):
    text = SPEC.format(model="unused", embodiments="avatar", attention=0, recorded="")
    text = text.replace("    - {name: joint-model, kind: model, model: unused}\n",
                        "    - {name: sync-catch, kind: time_shift, ms: 600, catch: true}\n")
    path = tmp_path / "catch.yaml"
    path.write_text(text)
    call_command("render_study", str(path))
    made = Stimulus.objects.filter(condition__name="sync-catch")
    assert made.count() == 2
    assert all(s.recipe.get("recipe") == "catch_trial" and s.expected_answer == {"mismatch": True} for s in made)


def test_a_file_the_encoder_just_checked_is_not_checked_again_unless_it_changed(corpus, tmp_path, settings):
    import dataclasses

    import numpy as np

    from render.checks import StimulusCheckError
    from render.encode import encode_stimulus
    from studies import services
    from studies.models import Utterance

    media = Path(settings.MEDIA_ROOT) / "corpora" / "synth-render"
    video = tmp_path / "made.mp4"
    frames = [np.full((64, 64, 3), 40 * (i % 5), np.uint8) for i in range(25)]
    facts = encode_stimulus(iter(frames), media / "syn000.wav", video, fps=25, width=64, height=64)
    utterance = Utterance.objects.get(corpus__name="synth-render", name="syn000")
    still, _ = Condition.objects.get_or_create(name="still", defaults={"kind": "still"})
    # Facts carrying a mark no measurement would give: taken as they are, since the file still matches them.
    marked = dataclasses.replace(facts, duration_s=facts.duration_s + 0.5)
    stimulus = services.stimulus_register(utterance=utterance, condition=still, embodiment="avatar",
                                          source_path=video, checked=marked)
    assert stimulus.duration_s == pytest.approx(facts.duration_s + 0.5) and stimulus.sha256 == facts.sha256
    # A file that is not the one those facts describe is checked again, and this one is refused.
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    with pytest.raises(StimulusCheckError):
        services.stimulus_register(utterance=utterance, condition=still, embodiment="robot_sim",
                                   source_path=broken, checked=facts)
    assert not Stimulus.objects.filter(embodiment="robot_sim").exists()
