"""Make the small example corpora of docs/corpus.md: one folder per motion format, two utterances each.

Run from the repository root (it rewrites the folders beside this file, or writes into OUT):

    .venv/bin/python docs/examples/corpus/make_examples.py [OUT]

Everything here is SYNTHETIC and made without randomness, so a second run writes the same bytes (the
`.npz` clip is a zip whose entries carry a time stamp: its contents are the same, its bytes are not).
The audio is a hummed vowel, not speech: a harmonic tone whose pitch glides and whose loudness rises and
falls four times a second like syllables. The motion is made from that audio, the way a tracker would see
a face humming it: the jaw and lips open with loudness, the brows rise with pitch, one blink, a slow nod.
These files show the formats the importer reads; they are not data to learn from.

Folders (see docs/corpus.md for each format):

    openface/          OpenFace 2 CSV, 30 fps from its timestamps, one low-confidence frame in ex02
    live_link_face/    Live Link Face CSV, 60 fps from its Timecode column
    landmarks68_csv/   68-point (iBUG) landmark CSV with a timestamp column, 25 fps
    mediapipe468_npy/  MediaPipe 468-point landmarks as NPY [frames, 468, 3]; 25 fps from metadata.csv
    clip_npz/          the platform's own motion clip (.npz), arkit52 with head pose, 25 fps
"""
from __future__ import annotations

import csv
import io
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # the repository root, for `inference`

from inference.layouts import ARKIT52, MP468_CHIN, MP468_LIPS, OPENFACE_AUS  # noqa: E402
from inference.motion import MotionClip, frames_for_duration, retarget  # noqa: E402

SAMPLE_RATE = 16_000
FOLDERS = ("openface", "live_link_face", "landmarks68_csv", "mediapipe468_npy", "clip_npz")


@dataclass(frozen=True)
class Utterance:
    name: str
    speaker: str
    emotion: str
    seconds: float
    f0_hz: float       # the hum's mean pitch
    transcript: str = "(hummed vowel, no words)"


UTTERANCES = (Utterance("ex01", "anna", "neutral", 1.0, 210.0), Utterance("ex02", "ben", "happy", 1.2, 120.0))


# --- audio and the motion made from it ----------------------------------------------------------------


def hum(u: Utterance) -> np.ndarray:
    """The utterance's audio: 16 kHz mono float in -1..1."""
    t = np.arange(round(u.seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = u.f0_hz * (1 + 0.08 * np.sin(2 * np.pi * t / u.seconds))  # one rise and fall per utterance
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    tone = sum(np.sin(k * phase) / k for k in range(1, 8))
    return (0.25 * loudness(u, t) * tone / 2).astype(np.float64)


def loudness(u: Utterance, t: np.ndarray) -> np.ndarray:
    """0..1: four 'syllables' a second between 0.1 s of silence at each end."""
    inside = (t > 0.1) & (t < u.seconds - 0.1)
    return inside * np.sin(np.pi * 4 * (t - 0.1)) ** 2


def arkit_motion(u: Utterance, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Blendshape weights [T, 52] (0..1) and head pose [T, 6] (deg, mm) at frame centres."""
    n = frames_for_duration(u.seconds, fps)
    t = (np.arange(n) + 0.5) / fps
    open_ = loudness(u, t)
    pitch = np.sin(2 * np.pi * t / u.seconds)
    values = np.zeros((n, len(ARKIT52)))
    for name, weight in (("jawOpen", 0.45), ("mouthLowerDownLeft", 0.3), ("mouthLowerDownRight", 0.3),
                         ("mouthFunnel", 0.15)):
        values[:, ARKIT52.index(name)] = weight * open_
    values[:, ARKIT52.index("browInnerUp")] = 0.1 + 0.25 * np.clip(pitch, 0, None)
    for name in ("browOuterUpLeft", "browOuterUpRight"):
        values[:, ARKIT52.index(name)] = 0.2 * np.clip(pitch, 0, None)
    blink = np.exp(-0.5 * ((t - 0.6 * u.seconds) / 0.05) ** 2)
    for name in ("eyeBlinkLeft", "eyeBlinkRight"):
        values[:, ARKIT52.index(name)] = 0.05 + 0.9 * blink
    head = np.zeros((n, 6))
    head[:, 0] = 3 * np.sin(2 * np.pi * 0.8 * t)   # nod (deg)
    head[:, 1] = 2 * np.sin(2 * np.pi * 0.3 * t)   # turn (deg)
    head[:, 5] = 600.0                              # 60 cm from the camera (mm)
    return np.round(values, 4), np.round(head, 3)


# --- writers --------------------------------------------------------------------------------------------


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(np.round(np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def write_csv(path: Path, header: list[str], rows: list[list], *, separator: str = ",") -> None:
    """CSV with '\\n' line ends; `separator` ', ' writes OpenFace's style (a space after each comma)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in [header, *rows]:
        writer.writerow(row)
    text = buffer.getvalue()
    path.write_text(text.replace(",", separator) if separator != "," else text, encoding="utf-8")


def fmt(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}"
    return "0" if text.strip("-0.") == "" else text  # no "-0.000"


def write_openface(folder: Path, u: Utterance) -> None:
    """OpenFace 2 FeatureExtraction output (-aus -pose): intensities AUxx_r 0..5, pose in rad and mm."""
    fps = 30.0
    values, head = arkit_motion(u, fps)
    w = {name: values[:, ARKIT52.index(name)] for name in ARKIT52}
    au = {a: np.zeros(len(values)) for a in OPENFACE_AUS}
    au["AU01"] = 5 * w["browInnerUp"]
    au["AU02"] = 5 * w["browOuterUpLeft"]
    au["AU25"] = 5 * w["mouthLowerDownLeft"] / 0.5
    au["AU26"] = 5 * w["jawOpen"]
    au["AU45"] = 5 * w["eyeBlinkLeft"]
    header = (["frame", "face_id", "timestamp", "confidence", "success"]
              + [f"pose_T{a}" for a in "xyz"] + [f"pose_R{a}" for a in "xyz"] + [f"{a}_r" for a in OPENFACE_AUS])
    rows = []
    for i in range(len(values)):
        confidence = 0.55 if (u.name == "ex02" and i == 10) else 0.98  # one badly tracked frame in ex02
        pose_t = [fmt(head[i, 3], 1), fmt(head[i, 4], 1), fmt(head[i, 5], 1)]
        pose_r = [fmt(np.radians(head[i, k]), 4) for k in range(3)]
        rows.append([i + 1, 0, fmt(i / fps, 3), fmt(confidence, 2), 1, *pose_t, *pose_r,
                     *(fmt(np.clip(au[a][i], 0, 5), 2) for a in OPENFACE_AUS)])
    write_csv(folder / f"{u.name}.csv", header, rows, separator=", ")


def write_live_link(folder: Path, u: Utterance) -> None:
    """Live Link Face's CSV: Timecode HH:MM:SS:FF.fff at 60 fps, 52 capitalised blendshapes, head and eye
    rotations as Unreal writes them (−1..1 for −180..180°)."""
    fps = 60
    values, head = arkit_motion(u, fps)
    shapes = [n[0].upper() + n[1:] for n in ARKIT52]
    eyes = ["LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll"]
    header = ["Timecode", "BlendShapeCount", *shapes, "HeadYaw", "HeadPitch", "HeadRoll", *eyes]
    start = 31  # frame 31 of second 14:02:07, so the take spans a second boundary and the rate can be read
    rows = []
    for i in range(len(values)):
        second, frame = divmod(start + i, fps)
        timecode = f"14:02:{7 + second:02d}:{frame:02d}.000"
        yaw, pitch, roll = head[i, 1] / 180, head[i, 0] / 180, head[i, 2] / 180
        rows.append([timecode, 61, *(fmt(v, 4) for v in values[i]), fmt(yaw, 5), fmt(pitch, 5), fmt(roll, 5),
                     *(["0"] * 6)])
    write_csv(folder / f"{u.name}.csv", header, rows)


def write_landmarks68(folder: Path, u: Utterance) -> None:
    """68-point landmarks (mm) with frame and timestamp columns, axes in blocks: x0..x67, y0..y67, z0..z67."""
    fps = 25.0
    values, head = arkit_motion(u, fps)
    clip = MotionClip(fps=fps, layout="arkit52", values=values.astype(np.float32))
    points = retarget(clip, "landmarks:ibug68").values.reshape(len(values), 68, 3)
    header = ["frame", "timestamp"] + [f"{axis}{i}" for axis in "xyz" for i in range(68)]
    rows = [[i, fmt(i / fps, 3), *(fmt(points[i, p, a], 2) for a in range(3) for p in range(68))]
            for i in range(len(values))]
    write_csv(folder / f"{u.name}.csv", header, rows)


def mediapipe_neutral() -> np.ndarray:
    """468 points [468, 3] in MediaPipe's normalised image coordinates: a stand-in face (points spread over
    a half ellipsoid), not MediaPipe's canonical mesh. Only the lip and chin indices matter below."""
    i = np.arange(468)
    golden = np.pi * (3 - np.sqrt(5))
    y = 1 - (i + 0.5) / 468 * 2              # top (1) to bottom (−1)
    r = np.sqrt(1 - y ** 2)
    x = r * np.cos(golden * i)
    z = -np.abs(r * np.sin(golden * i))       # the front half only
    return np.stack([0.5 + 0.18 * x, 0.5 - 0.24 * y, 0.08 * z], axis=1)


def write_mediapipe(folder: Path, u: Utterance) -> None:
    """MediaPipe Face Mesh landmarks as NPY [frames, 468, 3] float32 (no time column: fps in metadata.csv).
    The lower lip and chin points move down as the jaw opens; every point follows the nod."""
    fps = 25.0
    values, head = arkit_motion(u, fps)
    base = mediapipe_neutral()
    lower = np.zeros(468)
    lower[list(MP468_CHIN)] = 1.0
    lower[[p for p in MP468_LIPS if base[p, 1] > 0.5]] = 0.6   # the lips' lower half, in image y
    jaw = values[:, ARKIT52.index("jawOpen")]
    frames = np.repeat(base[None], len(values), axis=0)
    frames[:, :, 1] += 0.04 * jaw[:, None] * lower[None, :]
    frames[:, :, 1] += 0.002 * head[:, 0:1]  # nodding moves the whole face in the image
    np.save(folder / f"{u.name}.npy", np.round(frames, 5).astype(np.float32))


def write_clip(folder: Path, u: Utterance) -> None:
    """The platform's clip: what MotionClip.save writes (arkit52 values, head pose, metadata)."""
    fps = 25.0
    values, head = arkit_motion(u, fps)
    MotionClip(fps=fps, layout="arkit52", values=values, head_pose=head,
               metadata={"source": "synthetic example (docs/examples/corpus/make_examples.py)",
                         "units": "blendshape weight 0..1; head pose deg, mm"}).save(folder / f"{u.name}.npz")


WRITERS = {"openface": write_openface, "live_link_face": write_live_link, "landmarks68_csv": write_landmarks68,
           "mediapipe468_npy": write_mediapipe, "clip_npz": write_clip}


def write_metadata(folder: Path, with_fps: float | None = None) -> None:
    header = ["utterance", "speaker", "emotion", "transcript"] + (["fps"] if with_fps else [])
    rows = [[u.name, u.speaker, u.emotion, u.transcript] + ([f"{with_fps:g}"] if with_fps else [])
            for u in UTTERANCES]
    write_csv(folder / "metadata.csv", header, rows)


def make_examples(out: str | Path = HERE) -> list[Path]:
    """Write every example folder under `out`; returns the files written."""
    out = Path(out)
    written = []
    for name in FOLDERS:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for u in UTTERANCES:
            write_wav(folder / f"{u.name}.wav", hum(u))
            WRITERS[name](folder, u)
        write_metadata(folder, with_fps=25.0 if name == "mediapipe468_npy" else None)
        written.extend(sorted(p for p in folder.iterdir() if p.is_file()))
    return written


if __name__ == "__main__":
    files = make_examples(sys.argv[1] if len(sys.argv) > 1 else HERE)
    total = sum(p.stat().st_size for p in files)
    print(f"wrote {len(files)} files, {total / 1024:.0f} KiB")
