"""Tests for inference.importers: every motion format becomes a clip of the right layout, rate and units;
every bad input is refused with the file and line a person would look at; archives cannot escape their
folder; splits are reproducible and keep speakers apart.

Fixtures are written here: short voiced WAVs with numpy and `wave` (FLAC, MP3 and M4A by the ffmpeg CLI),
and OpenFace (with its leading-space headers), Live Link Face and landmark CSVs by hand. The builders at
the top are also used by tests/studies/test_import_corpus.py.
"""
from __future__ import annotations

import os
import stat
import subprocess
import wave
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.inference.wavs import write_wav

from inference import audio
from inference.importers import (
    ArchiveLimits,
    InvalidInput,
    assign_split,
    extract_zip,
    import_corpus,
    interpolate_bad_frames,
    read_motion,
    split_counts,
)
from inference.layouts import ARKIT52, OPENFACE_AUS
from inference.motion import MotionClip

SR = audio.SAMPLE_RATE


# --- fixture builders ----------------------------------------------------------------------------------


def write_voiced_wav(path, seconds=1.0, *, f0=140.0, amplitude=0.3, sample_rate=SR, seed=0):
    """A vowel-like signal: harmonics of a gliding f0 with a syllable-rate envelope and a little noise."""
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t) ** 2
    noise = np.random.default_rng(seed).normal(0, 0.01, n)
    samples = amplitude * envelope * voice / 2.6 + noise
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_wav(path, samples, sample_rate)


def ffmpeg_convert(src, dst, *args):
    subprocess.run(["ffmpeg", "-y", "-hide_banner", "-loglevel", "error", "-i", str(src), *args, str(dst)], check=True)
    return Path(dst)


OPENFACE_POSE = ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz")


def openface_values(n, seed=0):
    """AU intensities [n, 17] and pose [n, 6] (Tx..Tz mm, Rx..Rz rad) that vary smoothly."""
    t = np.arange(n)[:, None]
    rng = np.random.default_rng(seed)
    aus = np.round(2.5 + 2 * np.sin(t / 5 + rng.uniform(0, 6, len(OPENFACE_AUS))), 2)
    pose = np.round(np.concatenate([[10, -5, 500] + 3 * np.sin(t / 7 + np.arange(3)),
                                    0.1 * np.sin(t / 9 + np.arange(3))], axis=1), 4)
    return aus, pose


def write_openface_csv(path, n, fps=30.0, *, confidence=None, success=None, extra=(), seed=0,
                       timestamps=None, replace_cell=None):
    """An OpenFace 2 FeatureExtraction CSV, written as OpenFace does: ', ' between header names and values.

    `replace_cell=(row, column, text)` puts `text` into one cell (row 0 is CSV line 2)."""
    aus, pose = openface_values(n, seed)
    confidence = np.full(n, 0.98) if confidence is None else np.asarray(confidence, float)
    success = np.ones(n, int) if success is None else np.asarray(success, int)
    timestamps = np.round(np.arange(n) / fps, 3) if timestamps is None else np.asarray(timestamps)
    header = (["frame", "face_id", "timestamp", "confidence", "success", "gaze_0_x", "gaze_angle_x", *OPENFACE_POSE]
              + [f"x_{i}" for i in range(3)] + ["p_scale", "p_0"] + [f"{au}_r" for au in OPENFACE_AUS]
              + [f"{au}_c" for au in OPENFACE_AUS] + list(extra))
    lines = [", ".join(header)]
    for i in range(n):
        row = ([str(i + 1), "0", f"{timestamps[i]:.3f}", f"{confidence[i]:.2f}", str(success[i]), "0.1", "0.05"]
               + [f"{v:g}" for v in pose[i]] + ["300", "301", "302", "1.2", "0.3"]
               + [f"{v:.2f}" for v in aus[i]] + ["1"] * len(OPENFACE_AUS) + ["0"] * len(extra))
        if replace_cell and replace_cell[0] == i:
            row[header.index(replace_cell[1])] = replace_cell[2]
        lines.append(", ".join(row))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def live_link_header():
    return (["Timecode", "BlendShapeCount"] + [n[0].upper() + n[1:] for n in ARKIT52]
            + ["HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw",
               "RightEyePitch", "RightEyeRoll"])


def write_live_link_csv(path, n, fps=60, *, timecode_base=30, start_s=3723.5):
    """A Live Link Face CSV: capture at `fps`, timecode HH:MM:SS:FF.fff counting `timecode_base` frames/s.
    JawOpen is a ramp, HeadYaw 0.05, HeadPitch -0.1, HeadRoll 0.02."""
    lines = [",".join(live_link_header())]
    for i in range(n):
        millframes = round((start_s + i / fps) * timecode_base * 1000)  # thousandths of a timecode frame
        sec, rest = divmod(millframes, timecode_base * 1000)
        code = f"{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}:{rest // 1000:02d}.{rest % 1000:03d}"
        shapes = [0.0] * 52
        shapes[ARKIT52.index("jawOpen")] = round(i / n, 4)
        shapes[ARKIT52.index("eyeBlinkLeft")] = 0.25
        head = [0.05, -0.1, 0.02] + [0.0] * 6
        lines.append(",".join([code, "61"] + [f"{v:g}" for v in shapes + head]))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def landmark_points(n, points=68, dims=3):
    t = np.arange(n)[:, None, None]
    base = np.random.default_rng(1).uniform(-50, 50, (1, points, dims))
    return np.round(base + np.sin(t / 4.0), 3)


def write_landmark_csv(path, n, points=68, *, dims=2, interleaved=False, fps=None):
    pts = landmark_points(n, points, dims)
    axes = "xyz"[:dims]
    columns = ([f"{a}{i}" for i in range(points) for a in axes] if interleaved
               else [f"{a}{i}" for a in axes for i in range(points)])
    header = (["frame", "timestamp"] if fps else []) + columns
    lines = [",".join(header)]
    for k in range(n):
        cells = [f"{pts[k, int(c[1:]), axes.index(c[0])]:g}" for c in columns]
        lines.append(",".join(([str(k), f"{k / fps:.4f}"] if fps else []) + cells))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def make_openface_corpus(root, speakers=("spk1", "spk2", "spk3"), per_speaker=2, seconds=1.0, fps=30.0,
                         metadata=True):
    """A folder of WAV + OpenFace CSV utterances (with metadata.csv); returns the utterance names."""
    root = Path(root)
    names = []
    rows = ["utterance,speaker,emotion,transcript,session"]
    for s, speaker in enumerate(speakers):
        for k in range(per_speaker):
            name = f"{speaker}_{k:02d}"
            write_voiced_wav(root / f"{name}.wav", seconds, f0=120 + 10 * s + k, seed=s * 10 + k)
            write_openface_csv(root / f"{name}.csv", int(round(seconds * fps)), fps, seed=s * 10 + k)
            rows.append(f'{name},{speaker},neutral,"Sentence {k}, said by {speaker}.",s{k}')
            names.append(name)
    if metadata:
        (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return names


def errors_text(result) -> str:
    return "\n".join(str(p) for p in result.errors)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """One voiced second as WAV, FLAC, MP3 and M4A, made once for the module."""
    folder = tmp_path_factory.mktemp("encoded")
    wav = write_voiced_wav(folder / "voice.wav", 1.0)
    return {
        ".wav": wav,
        ".flac": ffmpeg_convert(wav, folder / "voice.flac"),
        ".mp3": ffmpeg_convert(wav, folder / "voice.mp3", "-b:a", "64k"),
        ".m4a": ffmpeg_convert(wav, folder / "voice.m4a", "-c:a", "aac", "-b:a", "64k"),
    }


# --- formats -------------------------------------------------------------------------------------------


def test_openface_folder_becomes_a_corpus_with_degrees_and_the_original_kept(tmp_path):
    src = tmp_path / "src"
    names = make_openface_corpus(src)
    result = import_corpus(src, tmp_path / "out")
    assert result.ok, result.report()
    assert result.fps == 30.0 and result.layouts == {"openface_au": len(names)}
    assert [u.name for u in result.utterances] == sorted(names)
    u = result.utterances[0]
    assert (u.speaker, u.emotion, u.transcript) == ("spk1", "neutral", "Sentence 0, said by spk1.")
    assert u.metadata["session"] == "s0" and u.metadata["source_format"] == "openface2"
    assert u.n_frames == 30 and abs(u.duration_s - 1.0) < 1e-6
    out = result.root
    assert (out / u.audio_path).read_bytes()[:4] == b"RIFF"
    assert (out / u.original_path).read_bytes() == (src / f"{u.name}.wav").read_bytes()
    with wave.open(str(out / u.audio_path)) as w:
        assert (w.getframerate(), w.getnchannels()) == (16000, 1)
    clip = MotionClip.load(out / u.clip_path, audio_duration_s=u.duration_s)
    aus, pose = openface_values(30, seed=0)
    assert clip.layout == "openface_au" and clip.channels == OPENFACE_AUS
    np.testing.assert_allclose(clip.values, aus, atol=1e-5)
    np.testing.assert_allclose(clip.head_pose[:, :3], np.degrees(pose[:, 3:]), atol=1e-3)  # Rx.. rad → deg
    np.testing.assert_allclose(clip.head_pose[:, 3:], pose[:, :3], atol=1e-3)              # Tx.. mm
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{n}.wav" for n in names] + ["motion", "original"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_live_link_face_maps_capitalised_names_and_timecode_rate(tmp_path):
    src = tmp_path / "src"
    write_voiced_wav(src / "take1.wav", 1.0)
    write_live_link_csv(src / "take1.csv", 60, fps=60, timecode_base=30)
    result = import_corpus(src, tmp_path / "out")
    assert result.ok, result.report()
    assert result.fps == 60.0
    clip = MotionClip.load(result.root / "motion/take1.npz")
    assert clip.layout == "arkit52" and clip.channels == ARKIT52
    np.testing.assert_allclose(clip.values[:, ARKIT52.index("jawOpen")], np.round(np.arange(60) / 60, 4), atol=1e-6)
    np.testing.assert_allclose(clip.values[:, ARKIT52.index("eyeBlinkLeft")], 0.25)
    # rx = pitch, ry = yaw, rz = roll; Live Link's -1..1 is -180..180 degrees; no translation.
    np.testing.assert_allclose(clip.head_pose[0], [-18.0, 9.0, 3.6, 0, 0, 0], atol=1e-4)


def test_landmarks_in_every_audio_container(tmp_path, encoded):
    src = tmp_path / "src"
    fps = 25.0
    for suffix, audio_file in encoded.items():
        name = f"utt{suffix[1:]}"
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / f"{name}{suffix}").write_bytes(audio_file.read_bytes())
        n = int(round(len(audio.decode(audio_file)) / SR * fps))
        if suffix == ".wav":
            write_landmark_csv(src / f"{name}.csv", n, dims=2)
        elif suffix == ".flac":
            write_landmark_csv(src / f"{name}.csv", n, dims=3, interleaved=True)
        elif suffix == ".mp3":
            np.save(src / f"{name}.npy", landmark_points(n, 68, 2))
        else:
            np.save(src / f"{name}.npy", landmark_points(n, 468, 3))
    result = import_corpus(src, tmp_path / "out", fps=fps)
    assert result.ok, result.report()
    by_name = {u.name: u for u in result.utterances}
    assert by_name["uttm4a"].layout == "landmarks:mediapipe468"
    assert {by_name[n].layout for n in ("uttwav", "uttflac", "uttmp3")} == {"landmarks:ibug68"}
    for u in result.utterances:
        assert (result.root / u.original_path).read_bytes() == encoded["." + u.name[3:]].read_bytes()
    wav2d = MotionClip.load(result.root / by_name["uttwav"].clip_path).landmarks()
    np.testing.assert_allclose(wav2d[:, :, :2], landmark_points(wav2d.shape[0], 68, 2), atol=1e-4)
    assert np.all(wav2d[:, :, 2] == 0)  # missing z is 0
    flac3d = MotionClip.load(result.root / by_name["uttflac"].clip_path).landmarks()
    np.testing.assert_allclose(flac3d, landmark_points(flac3d.shape[0], 68, 3), atol=1e-4)


def test_own_npz_clips_and_a_landmark_csv_with_timestamps(tmp_path):
    src = tmp_path / "src"
    write_voiced_wav(src / "a.wav", 1.0)
    MotionClip(fps=50, layout="arkit52", values=np.full((50, 52), 0.2), metadata={"note": "kept"}).save(src / "a.npz")
    write_voiced_wav(src / "b.wav", 1.0)
    write_landmark_csv(src / "b.csv", 50, fps=50)
    result = import_corpus(src, tmp_path / "out")
    assert result.ok, result.report()
    assert result.fps == 50.0
    a = MotionClip.load(result.root / "motion/a.npz")
    assert a.metadata["note"] == "kept" and a.metadata["source_format"] == "motion_clip"


# --- refusals ------------------------------------------------------------------------------------------


def test_silent_and_unreadable_audio_name_the_file_and_nothing_is_written(tmp_path):
    src = tmp_path / "src"
    make_openface_corpus(src, speakers=("a",), per_speaker=3, metadata=False)
    write_wav(src / "a_00.wav", np.zeros(SR))
    (src / "a_01.wav").write_bytes(b"RIFF but not really a wave file" * 10)
    result = import_corpus(src, tmp_path / "out")
    assert not result.ok and result.root is None
    assert not (tmp_path / "out").exists() and os.listdir(tmp_path) == ["src"]
    text = errors_text(result)
    assert "a_00.wav: " in text and "silent" in text
    assert "a_01.wav: " in text and "cannot convert" in text
    assert str(src) not in text  # names relative to the source
    assert result.skipped == ["a_00", "a_01"]
    assert "2 errors in" in result.failure_reason() and "nothing was imported" in result.report()


def test_nan_names_line_and_column(tmp_path):
    src = tmp_path / "src"
    write_voiced_wav(src / "u.wav")
    write_openface_csv(src / "u.csv", 30, replace_cell=(5, "AU04_r", "nan"))  # row 5 is line 7
    result = import_corpus(src, tmp_path / "out")
    assert not result.ok
    (problem,) = result.errors
    assert (problem.file, problem.line) == ("u.csv", 7)
    assert "AU04_r is NaN" in problem.message
    assert str(problem).startswith("u.csv, line 7: column AU04_r is NaN")


def test_text_in_a_number_column_names_line_and_column(tmp_path):
    path = write_openface_csv(tmp_path / "u.csv", 30, replace_cell=(2, "pose_Rx", "oops"))
    with pytest.raises(InvalidInput) as info:
        read_motion(path)
    assert info.value.problem.line == 4 and "pose_Rx holds 'oops'" in info.value.problem.message


def test_irregular_timestamps_name_the_line(tmp_path):
    src = tmp_path / "src"
    write_voiced_wav(src / "u.wav")
    stamps = np.arange(30) / 30
    stamps[12:] += 2 / 30  # two frames dropped before row 12 (line 14)
    write_openface_csv(src / "u.csv", 30, timestamps=np.round(stamps, 3))
    result = import_corpus(src, tmp_path / "out")
    (problem,) = result.errors
    assert (problem.file, problem.line) == ("u.csv", 14)
    assert "irregular timestamps" in problem.message and "after line 13" in problem.message


def test_motion_and_audio_lengths_must_agree_within_a_frame(tmp_path):
    src = tmp_path / "src"
    write_voiced_wav(src / "u.wav", 1.0)
    write_openface_csv(src / "u.csv", 33)  # 1.1 s of motion for 1.0 s of audio
    result = import_corpus(src, tmp_path / "out")
    (problem,) = result.errors
    assert problem.file == "u.csv" and "length differs from u.wav" in problem.message
    assert "1.100 s" in problem.message and "1.000 s" in problem.message


def test_unknown_column_is_refused(tmp_path):
    src = tmp_path / "src"
    write_voiced_wav(src / "u.wav")
    write_openface_csv(src / "u.csv", 30, extra=("mood_score",))
    (problem,) = import_corpus(src, tmp_path / "out").errors
    assert (problem.file, problem.line) == ("u.csv", 1)
    assert "unknown columns mood_score" in problem.message


def test_csv_that_is_no_known_format_is_refused(tmp_path):
    path = tmp_path / "u.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(InvalidInput, match="unknown columns a, b"):
        read_motion(path)


def low_confidence_corpus(tmp_path, bad_rows, policy, **kw):
    src = tmp_path / "src"
    write_voiced_wav(src / "u.wav")
    confidence = np.full(30, 0.95)
    confidence[list(bad_rows)] = 0.3
    write_openface_csv(src / "u.csv", 30, confidence=confidence)
    return import_corpus(src, tmp_path / "out", low_confidence=policy, **kw)


def test_low_confidence_frames_are_linearly_interpolated_and_reported(tmp_path):
    result = low_confidence_corpus(tmp_path, range(10, 14), "interpolate")
    assert result.ok, result.report()
    (u,) = result.utterances
    assert u.interpolated_frames == 4
    (warning,) = [p for p in result.warnings if "interpolated" in p.message]
    assert warning.file == "u.csv" and warning.line == 12 and "4 of 30 frames" in warning.message
    assert "lines 12–15" in warning.message
    clip = MotionClip.load(result.root / u.clip_path)
    aus, pose = openface_values(30)
    weights = (np.arange(10, 14) - 9) / 5  # between good frames 9 and 14
    expected = aus[9] + weights[:, None] * (aus[14] - aus[9])
    np.testing.assert_allclose(clip.values[10:14], expected, atol=1e-5)
    np.testing.assert_allclose(clip.values[:10], aus[:10], atol=1e-5)
    expected_rx = np.degrees(pose[9, 3] + weights * (pose[14, 3] - pose[9, 3]))
    np.testing.assert_allclose(clip.head_pose[10:14, 0], expected_rx, atol=1e-3)


def test_low_confidence_reject_policy_rejects_the_utterance(tmp_path):
    result = low_confidence_corpus(tmp_path, [3], "reject")
    (problem,) = result.errors
    assert problem.file == "u.csv" and problem.line == 5 and "rejected" in problem.message
    assert not result.ok and not (tmp_path / "out").exists()


def test_too_many_bad_frames_reject_even_under_interpolate(tmp_path):
    result = low_confidence_corpus(tmp_path, range(0, 9), "interpolate", max_bad_fraction=0.2)
    (problem,) = result.errors
    assert "9 of 30 frames" in problem.message and "more than 20%" in problem.message


def test_success_zero_counts_as_bad_and_threshold_is_configurable(tmp_path):
    path = write_openface_csv(tmp_path / "u.csv", 30, confidence=np.full(30, 0.7), success=[1] * 29 + [0])
    motion = read_motion(path, confidence_threshold=0.5)
    assert motion.interpolated == 1
    with pytest.raises(InvalidInput, match="30 of 30 frames"):
        read_motion(path, confidence_threshold=0.8)


def test_interpolation_holds_edges():
    values = np.array([[0.0], [9.0], [2.0], [9.0], [4.0], [9.0]])
    bad = np.array([True, False, False, True, False, True])
    values[1] = 1.0
    np.testing.assert_allclose(interpolate_bad_frames(values, bad)[:, 0], [1, 1, 2, 3, 4, 4])


def test_missing_motion_or_audio_is_reported_and_partial_import_skips_it(tmp_path):
    src = tmp_path / "src"
    make_openface_corpus(src, speakers=("a",), per_speaker=3, metadata=False)
    (src / "a_02.csv").unlink()
    write_openface_csv(src / "orphan.csv", 30)
    result = import_corpus(src, tmp_path / "out")
    assert not result.ok
    text = errors_text(result)
    assert "a_02.wav: utterance 'a_02' has audio but no motion file" in text
    assert "orphan.csv: utterance 'orphan' has motion but no audio file" in text
    partial = import_corpus(src, tmp_path / "out", allow_partial=True)
    assert partial.ok and [u.name for u in partial.utterances] == ["a_00", "a_01"]
    assert partial.skipped == ["a_02", "orphan"]
    assert sorted(p.name for p in (partial.root / "motion").iterdir()) == ["a_00.npz", "a_01.npz"]
    assert "skipped 2: a_02, orphan" in partial.report()


def test_partial_import_still_fails_on_whole_import_errors(tmp_path):
    src = tmp_path / "src"
    make_openface_corpus(src, speakers=("a",), per_speaker=2)
    with open(src / "metadata.csv", "a") as f:
        f.write("ghost,a,neutral,nobody,s0\n")  # line 4
    result = import_corpus(src, tmp_path / "out", allow_partial=True)
    assert not result.ok
    (problem,) = result.errors
    assert (problem.file, problem.line) == ("metadata.csv", 4) and "'ghost'" in problem.message


def test_different_frame_rates_need_fps_and_then_are_resampled(tmp_path):
    src = tmp_path / "src"
    write_voiced_wav(src / "a.wav")
    write_openface_csv(src / "a.csv", 30, fps=30)
    write_voiced_wav(src / "b.wav")
    write_openface_csv(src / "b.csv", 25, fps=25)
    refused = import_corpus(src, tmp_path / "out")
    (problem,) = refused.errors
    assert "different frame rates" in problem.message and "25 fps: 1 (b)" in problem.message
    assert "30 fps: 1 (a)" in problem.message and "(--fps)" in problem.message
    result = import_corpus(src, tmp_path / "out", fps=30)
    assert result.ok, result.report()
    b = MotionClip.load(result.root / "motion/b.npz", audio_duration_s=1.0)
    assert b.fps == 30 and b.n_frames == 30 and b.metadata["source_fps"] == 25
    assert {u.fps for u in result.utterances} == {30.0}
    assert any("resampled 1 utterance(s) from 25 fps to 30 fps" in p.message for p in result.warnings)


def test_files_without_timing_need_a_rate(tmp_path):
    src = tmp_path / "src"
    write_voiced_wav(src / "a.wav")
    np.save(src / "a.npy", landmark_points(30, 68, 3))
    (problem,) = import_corpus(src, tmp_path / "out").errors
    assert problem.file == "a.npy" and "--fps" in problem.message
    (src / "metadata.csv").write_text("name,fps\na,30\n")
    result = import_corpus(src, tmp_path / "out")
    assert result.ok and result.fps == 30


def test_nan_in_npy_names_the_frame(tmp_path):
    points = landmark_points(30, 68, 3)
    points[4, 7, 1] = np.inf
    np.save(tmp_path / "a.npy", points)
    with pytest.raises(InvalidInput, match=r"frame 4 \(counting from 0\), point 7, y"):
        read_motion(tmp_path / "a.npy")


def test_destination_must_not_exist(tmp_path):
    src = tmp_path / "src"
    make_openface_corpus(src, speakers=("a",), per_speaker=1)
    (tmp_path / "out").mkdir()
    (problem,) = import_corpus(src, tmp_path / "out").errors
    assert "already exists" in problem.message


# --- archives ------------------------------------------------------------------------------------------


def zip_folder(folder, archive, prefix=""):
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
    return Path(archive)


def test_zip_with_a_top_folder_imports_like_the_folder(tmp_path):
    src = tmp_path / "src"
    names = make_openface_corpus(src, per_speaker=1)
    archive = zip_folder(src, tmp_path / "corpus.zip", prefix="my corpus/")
    result = import_corpus(archive, tmp_path / "out")
    assert result.ok, result.report()
    assert [u.name for u in result.utterances] == names
    assert result.utterances[0].metadata["source_audio"] == f"my corpus/{names[0]}.wav"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.zip", "out", "src"]  # unzipped copy removed


@pytest.mark.parametrize("entry, why", [("../evil.wav", "'..'"), ("/etc/evil.wav", "absolute path"),
                                        ("C:/evil.wav", "absolute path"), ("a/../../evil.wav", "'..'")])
def test_zip_slip_is_refused_before_anything_is_extracted(tmp_path, entry, why):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fine.wav", b"x")
        zf.writestr(entry, b"y")
    target = tmp_path / "unpacked"
    target.mkdir()
    (problem,) = extract_zip(archive, target)
    assert problem.file == "evil.zip" and repr(entry) in problem.message and why in problem.message
    assert list(target.iterdir()) == [] and not (tmp_path / "evil.wav").exists()
    result = import_corpus(archive, tmp_path / "out")
    assert not result.ok and "zip-slip" in errors_text(result)


def test_zip_symlink_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("a.wav")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    (problem,) = extract_zip(archive, tmp_path / "x")
    assert "symbolic link" in problem.message


def test_oversize_archives_are_refused(tmp_path):
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(5):
            zf.writestr(f"f{i}.txt", os.urandom(2000))
    problems = extract_zip(archive, tmp_path / "x", limits=ArchiveLimits(max_files=4, max_total_bytes=5000))
    text = " ".join(p.message for p in problems)
    assert "5 entries, more than the limit of 4" in text and "unpacks to 10000 bytes" in text
    result = import_corpus(archive, tmp_path / "out", limits=ArchiveLimits(max_total_bytes=5000))
    assert not result.ok and "more than the limit of 5000" in errors_text(result)


def test_ratio_bomb_is_refused(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.wav", bytes(4 * 1024 * 1024))
    (problem,) = extract_zip(archive, tmp_path / "x")
    assert "zip bomb" in problem.message and "zeros.wav" in problem.message


def test_only_zip_archives(tmp_path):
    (tmp_path / "c.tar.gz").write_bytes(b"x")
    (problem,) = import_corpus(tmp_path / "c.tar.gz", tmp_path / "out").errors
    assert "only folders and .zip archives" in problem.message


# --- splits --------------------------------------------------------------------------------------------


def speakers_items(n_speakers, per_speaker=4):
    return [(f"s{s}_{k}", f"s{s}") for s in range(n_speakers) for k in range(per_speaker)]


def test_split_is_deterministic_for_a_seed_and_changes_with_it():
    items = speakers_items(10)
    a = assign_split(items, by="speaker", seed=3)
    assert a == assign_split(list(reversed(items)), by="speaker", seed=3)
    assert a != assign_split(items, by="speaker", seed=4)
    assert split_counts(a) == {"train": 32, "val": 4, "test": 4}


def test_split_by_speaker_keeps_each_speaker_in_one_split():
    items = speakers_items(7, per_speaker=5)
    split = assign_split(items, by="speaker", ratios=(0.6, 0.2, 0.2), seed=1)
    per_speaker = {}
    for name, speaker in items:
        per_speaker.setdefault(speaker, set()).add(split[name])
    assert all(len(s) == 1 for s in per_speaker.values())
    assert set(split.values()) == {"train", "val", "test"}


def test_every_split_gets_something_from_three_units():
    assert split_counts(assign_split(speakers_items(3, 2), by="speaker")) == {"train": 2, "val": 2, "test": 2}
    assert split_counts(assign_split([(f"u{i}", "") for i in range(3)], by="utterance")) == {
        "train": 1, "val": 1, "test": 1}


def test_fewer_than_three_speakers_fall_back_to_utterances_and_say_so():
    notes = []
    split = assign_split(speakers_items(2, 5), by="speaker", seed=0, notes=notes)
    assert split_counts(split) == {"train": 8, "val": 1, "test": 1}
    assert any("only 2 speaker(s)" in n for n in notes)


def test_split_rejects_bad_ratios():
    with pytest.raises(ValueError, match="adding up to 1"):
        assign_split(speakers_items(3), ratios=(0.5, 0.1, 0.1))


def test_openface_landmark_only_export_becomes_ibug68(tmp_path):
    n = 10
    pts = landmark_points(n, 68, 3)
    header = ["frame", "face_id", "timestamp", "confidence", "success", *OPENFACE_POSE] + [
        f"{axis}_{i}" for axis in "XYZ" for i in range(68)]
    lines = [", ".join(header)]
    for k in range(n):
        cells = [str(k + 1), "0", f"{k / 30:.3f}", "0.9", "1"] + ["0"] * 6 + [
            f"{pts[k, i, a]:g}" for a in range(3) for i in range(68)]
        lines.append(", ".join(cells))
    path = tmp_path / "u.csv"
    path.write_text("\n".join(lines) + "\n")
    motion = read_motion(path)
    assert motion.layout == "landmarks:ibug68" and motion.fps == 30.0
    np.testing.assert_allclose(motion.values.reshape(n, 68, 3), pts, atol=1e-6)


def test_zip_with_a_name_twice_is_refused(tmp_path):
    archive = tmp_path / "twice.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.wav", b"1")
        with pytest.warns(UserWarning):
            zf.writestr("a.wav", b"2")
    (problem,) = extract_zip(archive, tmp_path / "x")
    assert "a.wav more than once" in problem.message


def test_bad_audio_and_bad_motion_of_one_utterance_are_both_reported(tmp_path):
    src = tmp_path / "src"
    (src).mkdir()
    (src / "u.wav").write_bytes(b"not audio")
    write_openface_csv(src / "u.csv", 30, extra=("mood",))
    result = import_corpus(src, tmp_path / "out")
    assert [p.file for p in result.errors] == ["u.wav", "u.csv"]
