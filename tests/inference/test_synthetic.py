"""The SYNTHETIC corpus: files in the import folder format, deterministic and idempotent, and motion that is
really driven by the speech; plus the simulated robot face's calibration pairs."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from scipy.stats import spearmanr

from inference import audio, synthetic
from inference.layouts import ARKIT52
from inference.metrics import polygon_area
from inference.motion import MotionClip

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

N_UTTERANCES = 6
JAW, BLINK, BROW = ARKIT52.index("jawOpen"), ARKIT52.index("eyeBlinkLeft"), ARKIT52.index("browInnerUp")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    calls = []
    rows = synthetic.make_corpus(out, n_utterances=N_UTTERANCES, seed=0, progress=lambda d, t: calls.append((d, t)))
    return out, rows, calls


def load(out, name):
    samples = audio.decode(out / f"{name}.wav")
    clip = MotionClip.load(out / f"{name}.npz", audio_duration_s=len(samples) / audio.SAMPLE_RATE)
    return samples, clip


def frame_rms(samples: np.ndarray, n_frames: int, fps: float, shift_s: float = 0.0) -> np.ndarray:
    """RMS of the audio under each video frame, the frame's window moved `shift_s` later."""
    sr = audio.SAMPLE_RATE
    out = np.zeros(n_frames)
    for i in range(n_frames):
        start = int(round((i / fps + shift_s) * sr))
        segment = samples[max(start, 0): max(start + int(sr / fps), 0)]
        out[i] = np.sqrt(np.mean(segment.astype(np.float64) ** 2)) if len(segment) else 0.0
    return out


# --- the corpus on disk ------------------------------------------------------------------------------------


def test_corpus_folder_has_audio_motion_and_metadata(corpus):
    out, rows, calls = corpus
    assert len(rows) == N_UTTERANCES and calls[-1] == (N_UTTERANCES, N_UTTERANCES)
    with open(out / "metadata.csv", newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["name", "speaker", "emotion", "transcript", "synthetic"]
    assert [r["name"] for r in table] == [r["name"] for r in rows]
    assert all(r["synthetic"] == "1" for r in table)
    assert all(r["emotion"] in synthetic.EMOTIONS and r["transcript"] in synthetic.SENTENCES for r in table)
    assert len({r["speaker"] for r in table}) >= 4
    for row in rows:
        assert (out / f"{row['name']}.wav").is_file() and (out / f"{row['name']}.npz").is_file()


def test_each_clip_matches_its_audio_and_says_it_is_synthetic(corpus):
    out, rows, _ = corpus
    for row in rows:
        samples, clip = load(out, row["name"])             # validates length against the audio (± 1 frame)
        duration = len(samples) / audio.SAMPLE_RATE
        assert 2.0 <= duration <= 5.5
        assert clip.n_frames == round(duration * 25) and clip.fps == 25
        assert clip.layout == "arkit52" and clip.head_pose.shape == (clip.n_frames, 6)
        assert clip.metadata["source"] == "synthetic" and clip.metadata["speaker"] == row["speaker"]
        assert clip.values.min() >= 0.0 and clip.values.max() <= 1.0
        assert np.abs(clip.head_pose[:, :3]).max() < 20        # degrees: a few, not a spin


def test_same_seed_gives_the_same_corpus_and_another_seed_a_different_one(corpus, tmp_path):
    out, rows, _ = corpus
    again = synthetic.make_corpus(tmp_path / "again", n_utterances=N_UTTERANCES, seed=0)
    for first, second in zip(rows, again):
        assert first["transcript"] == second["transcript"]
        a, b = MotionClip.load(first["motion"]), MotionClip.load(second["motion"])
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.head_pose, b.head_pose)
        assert audio.content_sha256(first["wav"]) == audio.content_sha256(second["wav"])
    other = synthetic.make_corpus(tmp_path / "other", n_utterances=2, seed=1)
    assert [r["transcript"] for r in other] != [r["transcript"] for r in rows[:2]]
    # The same sentence and speaker with another seed still moves differently.
    spec = synthetic.corpus_plan(1, seed=0)[0]
    reseeded = synthetic.make_utterance(tmp_path / "reseeded", synthetic.UtteranceSpec(**{**spec.__dict__, "seed": 7}))
    assert reseeded["wav_sha256"] == audio.content_sha256(rows[0]["wav"])
    moved = MotionClip.load(tmp_path / "reseeded" / f"{spec.name}.npz")
    assert not np.array_equal(moved.values, MotionClip.load(rows[0]["motion"]).values)


def test_second_call_rewrites_nothing_and_a_missing_file_is_remade(corpus, tmp_path):
    out = tmp_path / "idem"
    first = synthetic.make_corpus(out, n_utterances=3, seed=0)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    second = synthetic.make_corpus(out, n_utterances=3, seed=0)
    assert not any(r["made"] for r in second)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    values = MotionClip.load(first[1]["motion"]).values
    first[1]["motion"].unlink()
    third = synthetic.make_corpus(out, n_utterances=3, seed=0)
    assert [r["made"] for r in third] == [False, True, False]
    np.testing.assert_array_equal(MotionClip.load(third[1]["motion"]).values, values)
    # A small corpus is the start of a larger one.
    assert [r["transcript"] for r in first] == [r["transcript"] for r in corpus[1][:3]]


# --- the motion follows the speech -------------------------------------------------------------------------


def test_jaw_follows_the_loudness_of_its_own_audio_and_not_of_another(corpus):
    out, rows, _ = corpus
    loaded = [load(out, r["name"]) for r in rows]
    for i, (samples, clip) in enumerate(loaded):
        # The mouth leads the sound by the speaker's documented lead: compare with the audio that far ahead.
        lead = clip.metadata["style"]["lead_ms"] / 1000
        own = np.corrcoef(clip.values[:, JAW], frame_rms(samples, clip.n_frames, clip.fps, lead))[0, 1]
        assert own > 0.5, rows[i]["name"]
        others = []
        for j, (other_samples, _) in enumerate(loaded):
            if j != i:
                envelope = frame_rms(other_samples, clip.n_frames, clip.fps, lead)
                others.append(np.corrcoef(clip.values[:, JAW], envelope)[0, 1])
        assert own > max(others) and abs(np.mean(others)) < 0.3, rows[i]["name"]


def test_blinks_come_at_a_plausible_rate_and_are_brief(corpus):
    out, rows, _ = corpus
    onsets, seconds = 0, 0.0
    for row in rows:
        _, clip = load(out, row["name"])
        closed = clip.values[:, BLINK] > 0.5
        starts = np.flatnonzero(closed[1:] & ~closed[:-1]) + 1
        for start in starts:
            assert not closed[start: start + 8].all()       # open again within 320 ms
        onsets += len(starts) + int(closed[0])
        seconds += clip.duration_s
    per_minute = onsets / seconds * 60
    assert 5 <= per_minute <= 60


def test_pitch_accents_are_found_on_an_f0_peak():
    sr = audio.SAMPLE_RATE
    t = np.arange(int(2.0 * sr)) / sr
    f0 = 120 + 50 * np.exp(-0.5 * ((t - 1.0) / 0.12) ** 2)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    tone = sum(np.sin(k * phase) / k for k in range(1, 6)).astype(np.float32) * 0.3
    accents = synthetic.pitch_accents(synthetic.speech_features(tone, sr))
    assert len(accents) == 1
    assert accents[0][0] == pytest.approx(1.0, abs=0.08) and accents[0][1] > 3


def test_brows_rise_after_pitch_accents(corpus):
    out, rows, _ = corpus
    near, far = [], []
    for row in rows:
        samples, clip = load(out, row["name"])
        t = (np.arange(clip.n_frames) + 0.5) / clip.fps
        after = np.zeros(clip.n_frames, bool)
        for accent, _ in synthetic.pitch_accents(synthetic.speech_features(samples, audio.SAMPLE_RATE)):
            after |= (t > accent - 0.05) & (t < accent + 0.35)
        near.extend(clip.values[after, BROW])
        far.extend(clip.values[~after, BROW])
    assert len(near) > 10 and np.mean(near) > np.mean(far) + 0.05


def test_motion_from_speech_rejects_bad_input():
    with pytest.raises(ValueError, match="mono"):
        synthetic.motion_from_speech(np.zeros((2, 100)), 16000, 25, np.random.default_rng(0))
    with pytest.raises(ValueError, match="emotion"):
        synthetic.MotionStyle(emotion="furious")


# --- speech --------------------------------------------------------------------------------------------------


def test_speak_writes_16k_mono_and_text_is_never_an_option(tmp_path):
    path = synthetic.speak("-v is not an option here", tmp_path / "dash.wav", voice="en-us",
                           words_per_minute=170, pitch=50)
    samples = audio.decode(path)
    assert 0.5 < len(samples) / audio.SAMPLE_RATE < 4
    audio.check_not_silent(samples, path)


def test_speak_explains_missing_espeak_and_unknown_voice(tmp_path, monkeypatch):
    with pytest.raises(synthetic.SyntheticCorpusError, match="voice"):
        synthetic.speak("Hello.", tmp_path / "x.wav", voice="no-such-voice-xx")
    assert not (tmp_path / "x.wav").exists()
    monkeypatch.setattr(synthetic.shutil, "which", lambda name: None)
    with pytest.raises(synthetic.SyntheticCorpusError, match="espeak-ng is not installed"):
        synthetic.speak("Hello.", tmp_path / "x.wav")


# --- the simulated robot face ------------------------------------------------------------------------------


def test_robot_pairs_shapes_ranges_and_determinism():
    commands, landmarks, names = synthetic.robot_pairs(200, seed=3)
    assert commands.shape == (200, 11) and landmarks.shape == (200, 68, 3) and len(names) == 11
    assert commands.dtype == np.float32 and landmarks.dtype == np.float32
    assert commands.min() >= 0 and commands.max() <= 1
    assert all(n.split(".")[0] in ("upper", "lower", "head") for n in names)
    again = synthetic.robot_pairs(200, seed=3)
    np.testing.assert_array_equal(commands, again[0])
    np.testing.assert_array_equal(landmarks, again[1])
    assert not np.array_equal(commands, synthetic.robot_pairs(200, seed=4)[0])
    # Tracker noise of about 0.3 mm on top of the noise-free face.
    clean = synthetic.robot_landmarks(commands)
    assert np.std(landmarks - clean) == pytest.approx(synthetic.TRACKER_NOISE_MM, rel=0.1)
    # The commands form a valid motor clip.
    clip = MotionClip(fps=25, layout="motors:sim-face", values=commands, channels=names)
    assert set(clip.regions()) == {"upper", "lower"}
    with pytest.raises(ValueError, match="sim-face"):
        synthetic.robot_pairs(5, robot="furhat")


def sweep(channel: str, low: float = 0.0, high: float = 1.0, n: int = 11) -> tuple[np.ndarray, np.ndarray]:
    commands = np.repeat(synthetic.ROBOT_REST[None], n, axis=0)
    levels = np.linspace(low, high, n)
    commands[:, synthetic.ROBOT_CHANNELS.index(channel)] = levels
    return levels, synthetic.robot_landmarks(commands)


def test_landmarks_change_monotonically_with_the_commands():
    _, jaw = sweep("lower.jaw")
    assert np.all(np.diff(jaw[:, 8, 1]) < 0)                                    # chin goes down
    assert np.all(np.diff(polygon_area(jaw[:, 60:68, :2])) > 0)                # mouth opens
    _, lid = sweep("upper.eyelid_left", 0.2, 1.0)
    assert np.all(np.diff(polygon_area(lid[:, 42:48, :2])) < 0)
    assert polygon_area(lid[-1, 42:48, :2]) < 5
    _, corner = sweep("lower.lip_corner_right")
    assert np.all(np.diff(corner[:, 48, 1]) > 0)                                # frown … smile
    _, pan = sweep("head.pan")
    assert np.all(np.diff(pan[:, 30, 0]) > 0)                                   # nose turns
    # In the noisy random pairs the jaw command still orders the mouth opening.
    commands, landmarks, names = synthetic.robot_pairs(300, seed=0)
    gap = landmarks[:, 66, 1] - landmarks[:, 62, 1]
    rho = spearmanr(commands[:, names.index("lower.jaw")], -gap).statistic
    assert rho > 0.8
