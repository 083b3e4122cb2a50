"""manage.py capture / calibrate_robot: a study's robot_physical cells are filmed on a robot (here the simulated
robot, filmed by the simulated camera in real time) and stored as checked stimuli under opaque tokens; render_study
leaves them to capture; one robot is never driven by two captures; a robot lost mid-capture fails the job with
its reason and stores nothing; bad device strings change nothing; calibration is stored per robot; the health
check exits 0 or 1.

Captures run in real time, so the utterances here are short (about 1 to 1.5 s of speech)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from studies.models import Corpus, RenderJob, RobotRecord, Stimulus, Utterance

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = {"short000": "Good morning.", "short001": "See you soon."}
CAMERA = "sim:size=64"

SPEC = """\
slug: capture-test
title: Capture test
stimuli:
  corpus: cap-test
  conditions: [ground_truth, still]
  embodiments: [{embodiments}]
  utterances: [short000, short001]
  render: {{width: 64, height: 64, fps: 25{extra}}}
questions:
  naturalness: {{type: likert, prompt: "How natural is the motion?", points: 5}}
pages:
  - type: trials
    question: naturalness
    attention_checks: {attention}
  - type: completion
"""


def _speech_motion(n_frames: int, seed: int):
    """A recorded-looking arkit52 clip: the jaw opening and closing with syllables, brows and head drifting."""
    from inference.layouts import layout
    from inference.motion import MotionClip

    channels = layout("arkit52").channels
    t = np.arange(n_frames) / 25.0
    rng = np.random.default_rng(seed)
    values = np.zeros((n_frames, len(channels)), np.float32)
    values[:, channels.index("jawOpen")] = 0.35 + 0.3 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6))
    values[:, channels.index("browInnerUp")] = 0.3 + 0.25 * np.sin(2 * np.pi * 0.8 * t)
    pose = np.zeros((n_frames, 6), np.float32)
    pose[:, 1] = 8 * np.sin(2 * np.pi * 0.5 * t)   # yaw, degrees
    return MotionClip(fps=25.0, layout="arkit52", values=np.clip(values, 0, 1), head_pose=pose,
                      metadata={"source": "test"})


@pytest.fixture
def utterances(settings, tmp_path):
    """A corpus of two short spoken utterances with recorded motion (media and var in a folder of the test's)."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.VAR_DIR = tmp_path / "var"
    corpus = Corpus.objects.create(name="cap-test")
    folder = Path(settings.MEDIA_ROOT) / "corpora" / "cap-test"
    folder.mkdir(parents=True)
    for i, (name, text) in enumerate(SENTENCES.items()):
        wav = folder / f"{name}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True)
        duration = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                                         "csv=p=0", str(wav)], check=True, capture_output=True, text=True).stdout)
        assert 0.6 < duration < 2.0
        clip = _speech_motion(int(round(duration * 25)), seed=i)
        clip.save(folder / f"{name}.npz")
        Utterance.objects.create(corpus=corpus, name=name, speaker="spk", transcript=text, duration_s=duration,
                                 split="train", audio_path=f"corpora/cap-test/{name}.wav",
                                 motion_path=f"corpora/cap-test/{name}.npz")
    return corpus


@pytest.fixture
def corpus(utterances):
    """The short corpus and a robot inverse model trained for the simulated face (sim-face)."""
    call_command("train", "--corpus", "cap-test", "--model", "inverse", "--name", "cap-inverse",
                 "--set", "train.max_epochs=2")
    return utterances


def _spec_file(tmp_path, *, embodiments="robot_physical", attention=0, extra=""):
    path = tmp_path / "study.yaml"
    path.write_text(SPEC.format(embodiments=embodiments, attention=attention, extra=extra))
    return path


def _stimuli_files(settings) -> list[Path]:
    folder = Path(settings.MEDIA_ROOT) / "stimuli"
    return sorted(folder.iterdir()) if folder.exists() else []


def _command(*args):
    """call_command that also hands back what the command printed."""
    from io import StringIO

    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_render_study_leaves_robot_cells_to_capture_which_films_them_as_checked_stimuli(corpus, tmp_path, settings):
    from render.checks import check_stimulus

    spec = _spec_file(tmp_path, embodiments="avatar, robot_physical")
    out, _ = _command("render_study", str(spec))
    assert "4 to capture with `manage.py capture capture-test" in out
    assert Stimulus.objects.filter(embodiment="avatar", utterance__corpus__name="cap-test").count() == 4
    assert not RenderJob.objects.filter(embodiment="robot_physical").exists()   # not rendered, not failed

    out, _ = _command("capture", str(spec), "--robot", "sim:latency_ms=120,jitter_ms=5", "--camera", CAMERA)
    assert "4 to capture" in out
    captured = list(Stimulus.objects.filter(embodiment="robot_physical").select_related("utterance", "condition"))
    assert len(captured) == 4
    assert set(RenderJob.objects.filter(embodiment="robot_physical").values_list("status", flat=True)) == {"done"}
    for stimulus in captured:
        path = Path(settings.MEDIA_ROOT) / stimulus.file
        facts = check_stimulus(path)   # the platform's ffprobe rules, as for every stimulus
        assert facts.sha256 == stimulus.sha256 and (facts.width, facts.height) == (64, 64) and facts.fps == 25
        assert abs(stimulus.duration_s - stimulus.utterance.duration_s) <= 1 / 25 + 1e-6
        # The token and file name reveal nothing of the cell.
        for secret in (stimulus.utterance.name, stimulus.condition.name, "robot", "sim", "capture", "short"):
            assert secret not in stimulus.token.lower() and secret not in path.name.lower()
        assert path.name == f"{stimulus.token}.mp4"
        recipe = stimulus.recipe
        assert recipe["maker"] == "capture" and recipe["robot"] == "sim-face"
        assert recipe["inverse_model"] == "cap-inverse" and recipe["condition"] == stimulus.condition.name
        assert recipe["robot_device"] == "sim:latency_ms=120,jitter_ms=5" and recipe["camera_device"] == CAMERA
        assert recipe["sync"] and recipe["capture"]["fps"] == 25
        assert abs(recipe["sync"]["latency_ms"] - 120) < 30   # the robot's simulated latency (+ jitter), measured
    # Ground truth moves on camera, still does not: compare the frames' spread over time.
    moving = _motion_energy(settings, captured, "ground_truth")
    still = _motion_energy(settings, captured, "still")
    assert moving > 3 * still
    robot = RobotRecord.objects.get(name="sim-face")
    assert robot.device == "sim:latency_ms=120,jitter_ms=5" and len(robot.profile["actuators"]) == 11
    assert not any((Path(settings.VAR_DIR) / "cache" / "captures").iterdir())   # nothing left behind

    # Once made, nothing is captured again and render_study says the study is complete.
    tokens = {s.token for s in captured}
    out, _ = _command("capture", str(spec), "--robot", "sim", "--camera", CAMERA)
    assert "4 made, 0 to capture" in out
    assert set(Stimulus.objects.filter(embodiment="robot_physical").values_list("token", flat=True)) == tokens
    out, _ = _command("render_study", str(spec))
    assert "every stimulus is ready" in out and "to capture" not in out


def _motion_energy(settings, stimuli, condition: str) -> float:
    """Mean over the condition's videos of the per-pixel standard deviation over time (grey levels)."""
    values = []
    for s in stimuli:
        if s.condition.name != condition:
            continue
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(Path(settings.MEDIA_ROOT) / s.file), "-f",
                              "rawvideo", "-pix_fmt", "gray", "-"], check=True, capture_output=True).stdout
        frames = np.frombuffer(raw, np.uint8).reshape(-1, s.height, s.width).astype(np.float32)
        values.append(float(frames[3:].std(axis=0).mean()))
    return float(np.mean(values))


def test_a_second_capture_of_the_same_robot_is_refused_while_the_first_holds_it(corpus, tmp_path, settings):
    spec = _spec_file(tmp_path)
    # Another process (a capture on another terminal, or a worker) holds robot sim-face.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import django, sys; django.setup(); from studies.capturing import robot_lock\n"
                               "with robot_lock('sim-face', wait_s=0):\n print('held', flush=True); sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "evalsite.settings", "EVALSITE_VAR_DIR": str(settings.VAR_DIR)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CommandError, match=rf"robot sim-face is busy with another capture \(pid {holder.pid}\)"):
            call_command("capture", str(spec), "--stimuli", "short000/still", "--robot", "sim", "--camera", CAMERA,
                         "--lock-wait", "0.5")
        job = RenderJob.objects.get(embodiment="robot_physical", utterance__name="short000", condition__name="still")
        assert job.status == "queued" and job.attempts == 0 and job.error == ""   # not the job's fault
        assert not Stimulus.objects.filter(embodiment="robot_physical").exists()
        # Nor does a health probe connect to it mid-capture: it reports the robot busy.
        with pytest.raises(CommandError, match=rf"robot sim-face is busy with another capture \(pid {holder.pid}\)"):
            call_command("capture", "--check", "--robot", "sim", "--camera", CAMERA)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    # The holder is gone, so is its lock: the same capture now goes ahead (here as the hardware worker's task).
    from studies.tasks import hardware_capture

    token = hardware_capture.apply(args=(job.pk, "sim", CAMERA, {"tail_s": 0.5}), throw=True).get()
    stimulus = Stimulus.objects.get(embodiment="robot_physical")
    assert stimulus.token == token and stimulus.recipe["capture"]["tail_s"] == 0.5


def test_a_robot_lost_mid_capture_fails_the_job_with_the_reason_and_stores_nothing(corpus, tmp_path, settings):
    spec = _spec_file(tmp_path)
    # The link drops 0.5 s after every connect: during the marker or the speech, on the retry too.
    with pytest.raises(CommandError, match="1 stimuli could not be captured"):
        call_command("capture", str(spec), "--stimuli", "short001/ground_truth", "--robot", "sim:fail_after_s=0.5",
                     "--camera", CAMERA)
    job = RenderJob.objects.get(embodiment="robot_physical", utterance__name="short001",
                                condition__name="ground_truth")
    assert job.status == "failed" and job.attempts == 1
    assert "lost its link" in job.error and "2 attempt" in job.error
    assert not Stimulus.objects.filter(embodiment="robot_physical").exists()
    assert _stimuli_files(settings) == []
    assert not any((Path(settings.VAR_DIR) / "cache" / "captures").iterdir())
    # Other cells were not touched; --retry-failed tries it again (and it is made once the link holds).
    assert RenderJob.objects.filter(embodiment="robot_physical").count() == 1
    call_command("capture", str(spec), "--stimuli", "short001/ground_truth", "--robot", "sim", "--camera", CAMERA,
                 "--retry-failed")
    job.refresh_from_db()
    assert job.status == "done" and job.stimulus is not None and job.attempts == 2


def test_a_camera_that_is_not_there_stops_the_run_after_the_first_capture(corpus, tmp_path, settings):
    spec = _spec_file(tmp_path)
    with pytest.raises(CommandError, match="1 stimuli could not be captured"):
        call_command("capture", str(spec), "--stimuli", "short000/still", "short001/still", "--robot", "sim",
                     "--camera", "v4l2:/dev/video99")
    first, second = (RenderJob.objects.get(embodiment="robot_physical", utterance__name=u) for u in SENTENCES)
    assert first.status == "failed" and "/dev/video99" in first.error
    assert second.status == "queued" and second.attempts == 0   # not tried: it would have failed the same way
    assert _stimuli_files(settings) == []


@pytest.mark.parametrize("robot, camera, says", [
    ("robot9000", CAMERA, "unknown robot device 'robot9000'"),
    ("sim:latency=12", CAMERA, "latency"),
    ("sim", "webcam0", "unknown camera device 'webcam0'"),
])
def test_a_bad_device_string_is_refused_in_one_line_and_changes_nothing(utterances, tmp_path, settings, robot, camera,
                                                                       says):
    spec = _spec_file(tmp_path)
    with pytest.raises(CommandError) as error:
        call_command("capture", str(spec), "--robot", robot, "--camera", camera)
    message = str(error.value)
    assert says in message and "\n" not in message and "sim" in message   # names the forms it takes
    assert not RenderJob.objects.exists() and not Stimulus.objects.filter(embodiment="robot_physical").exists()
    assert not RobotRecord.objects.exists() and _stimuli_files(settings) == []


def test_cells_named_that_the_study_does_not_have_are_refused_before_anything_changes(utterances, tmp_path):
    spec = _spec_file(tmp_path)
    with pytest.raises(CommandError, match="short009/still: not a robot_physical cell of study capture-test.*"
                                           "short000/ground_truth"):
        call_command("capture", str(spec), "--stimuli", "short000/still", "short009/still", "--robot", "sim",
                     "--camera", CAMERA)
    assert not RenderJob.objects.exists()


def test_motion_for_another_robot_is_refused_with_the_fix(corpus, tmp_path, settings):
    from inference.synthetic import robot_pairs

    commands, landmarks, channels = robot_pairs(400, robot="sim-face", seed=1)
    pairs = tmp_path / "other-pairs.npz"
    np.savez(pairs, commands=commands, landmarks=landmarks, channels=np.array(channels), robot=np.array("other-face"))
    call_command("train", "--corpus", "cap-test", "--model", "inverse", "--name", "other-inverse", "--pairs",
                 str(pairs), "--set", "train.max_epochs=1")
    spec = _spec_file(tmp_path, extra=", robot_model: other-inverse")
    with pytest.raises(CommandError, match="could not be captured"):
        call_command("capture", str(spec), "--stimuli", "short000/ground_truth", "--robot", "sim", "--camera", CAMERA)
    job = RenderJob.objects.get(embodiment="robot_physical")
    assert job.status == "failed"
    assert "'other-face'" in job.error and "'sim-face'" in job.error and "robot_model" in job.error
    assert _stimuli_files(settings) == []


def test_an_attention_check_on_the_physical_robot_carries_its_instruction_and_expected_answer(corpus, tmp_path,
                                                                                         settings):
    """As rendered ones do (GENEA): the clip lasts at least 7 s (the robot's motion carries on after the
    speech), the instruction is drawn from 2 s on, and the number it asks for is the expected answer."""
    spec = _spec_file(tmp_path, attention=1)
    call_command("capture", str(spec), "--stimuli", "short000/attention-check", "--robot", "sim",
                 "--camera", "sim:size=96")
    stimulus = Stimulus.objects.get(embodiment="robot_physical", condition__name="attention-check")
    number = stimulus.recipe["attention_number"]
    assert stimulus.expected_answer == {"value": number} and 1 <= number <= 7
    from render.checks import check_stimulus

    path = Path(settings.MEDIA_ROOT) / stimulus.file
    assert check_stimulus(path).duration_s >= 7.0
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         check=True, capture_output=True).stdout
    grey = np.frombuffer(raw, np.uint8).reshape(-1, stimulus.height, stimulus.width).astype(np.float32)
    before, after = grey[int(1.5 * 25)], grey[int(3.0 * 25)]
    # The banner covers a band of the picture after 2 s: many pixels change by far more than the robot moves.
    assert np.mean(np.abs(after - before) > 40) > 0.05


def test_calibrate_robot_measures_the_latency_and_stores_it_on_the_robot(utterances, settings):
    out, _ = _command("calibrate_robot", "--robot", "sim:latency_ms=120", "--camera", CAMERA, "--repeats", "2")
    record = RobotRecord.objects.get(name="sim-face")
    assert abs(record.calibration["latency_ms"] - 120) <= 40
    assert record.calibrated_at is not None and record.device == "sim:latency_ms=120"
    assert set(record.calibration["actuators"]) == {a["name"] for a in record.profile["actuators"]}
    assert f"latency {record.calibration['latency_ms']:.1f} ms" in out and "lower.jaw" in out

    # A later calibration of the same robot (of its jaw only) replaces the figures on its one record.
    _command("calibrate_robot", "--robot", "sim:latency_ms=40", "--camera", CAMERA, "--repeats", "1",
             "--actuators", "lower.jaw")
    assert RobotRecord.objects.count() == 1
    again = RobotRecord.objects.get()
    assert abs(again.calibration["latency_ms"] - 40) <= 40 and set(again.calibration["actuators"]) == {"lower.jaw"}
    assert again.calibrated_at > record.calibrated_at


def _manage(*args, var_dir):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "EVALSITE_VAR_DIR": str(var_dir), "PYOPENGL_PLATFORM": "osmesa"})


def test_capture_check_exits_0_when_robot_and_camera_answer_and_1_with_the_reason_when_not(tmp_path):
    ready = _manage("capture", "--check", "--robot", "sim", "--camera", CAMERA, var_dir=tmp_path)
    assert ready.returncode == 0, ready.stderr
    assert "robot sim-face: ok" in ready.stdout and "camera: ok" in ready.stdout

    lost = _manage("capture", "--check", "--robot", "sim:fail_after_s=0", "--camera", CAMERA, var_dir=tmp_path)
    assert lost.returncode == 1
    assert "robot sim-face: NOT READY" in lost.stdout
    assert lost.stderr.strip().count("\n") == 0 and "robot not ready" in lost.stderr and "lost its link" in lost.stderr

    unplugged = _manage("capture", "--check", "--robot", "sim", "--camera", "v4l2:/dev/video99", var_dir=tmp_path)
    assert unplugged.returncode == 1 and "/dev/video99 does not exist" in unplugged.stderr


def test_hardware_health_task_reports_both_devices(settings, tmp_path):
    from studies.tasks import hardware_health

    settings.VAR_DIR = tmp_path

    report = hardware_health.apply(args=("sim", CAMERA), throw=True).get()
    assert report["ok"] is True and report["name"] == "sim-face" and report["robot"]["ok"]


def test_device_strings_are_recorded_without_secrets():
    from studies.capturing import public_device

    assert public_device("furhat:alice:hunter2@10.0.0.2:54321") == "furhat:10.0.0.2:54321"
    assert public_device("furhat:10.0.0.2?token=abc123&profile=furhat") == "furhat:10.0.0.2?token=…&profile=furhat"
    for kept in ("sim:latency_ms=120,seed=3", "maestro:/dev/ttyACM0?config=/etc/robot.yaml",
                 "v4l2:/dev/video0?audio=alsa:hw:1,0", "dshow:video=Logitech BRIO:audio=Microphone (BRIO)"):
        assert public_device(kept) == kept
