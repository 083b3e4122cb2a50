"""Placeholder stimuli the project makes itself: espeak-ng speech and a drawn cartoon talking head.

They stand in for the avatar renderer until it lands, and they make the audio-check and attention-check
clips. The demo study's conditions differ only in the signal that drives the mouth (the speech's own
jaw envelope, another utterance's looped to length, a time-shifted one, or none), so everything else in
a clip — the face, the seeded blinks — is the same for every condition with the same seed.

Clips are encoded with `render.encode.encode_stimulus`, the one encoder every stimulus goes through
(re-exported here, with ExternalToolError, for older callers).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import shutil
import subprocess
import tempfile
import wave
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from render.checks import StimulusFacts
# The encoder lives in render/encode.py, shared with the real rigs; these names are re-exported so that
# `from render.placeholder import encode_stimulus, ExternalToolError` keeps working.
from render.encode import ExternalToolError, _atomic_output, _run_ffmpeg, _tail, encode_stimulus
from render.encode import frame_rate as _frame_rate
from render.overlays import font as _font

SPEECH_SAMPLE_RATE = 16_000
SILENCE_RMS = 1e-3  # about -60 dBFS: quieter frames count as a closed mouth, whatever the percentile
ENVELOPE_PERCENTILE = 95
SUPERSAMPLE = 2  # faces are drawn at twice the size and reduced, for smooth edges

BACKGROUND = (222, 230, 240)
SKIN = (244, 204, 170)
SKIN_SHADE = (226, 178, 146)
OUTLINE = (160, 112, 86)
HAIR = (92, 62, 44)
SHIRT = (84, 110, 150)
SCLERA = (255, 255, 255)
IRIS = (60, 90, 120)
PUPIL = (20, 20, 28)
BROW_COLOUR = (80, 52, 36)
LIPS = (196, 96, 96)
MOUTH_INSIDE = (64, 22, 32)
TEETH = (250, 248, 240)
TONGUE = (196, 90, 100)
CAPTION_BOX = (252, 252, 252)
CAPTION_TEXT = (24, 24, 32)


# --- speech --------------------------------------------------------------------------------------------


def speak(
    text: str,
    wav_path: str | os.PathLike,
    *,
    voice: str = "en-us",
    words_per_minute: int = 150,
    pitch: int = 50,
) -> Path:
    """Synthesise `text` with espeak-ng into a 16 kHz mono 16-bit PCM WAV at `wav_path`, atomically."""
    if not text.strip():
        raise ValueError("speak() needs some text to say")
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise ExternalToolError("espeak-ng is not installed; install the Debian package espeak-ng", tool="espeak-ng")
    wav_path = Path(wav_path)
    with tempfile.TemporaryDirectory(prefix="speak-") as scratch:
        text_file = Path(scratch) / "text.txt"
        raw_wav = Path(scratch) / "raw.wav"
        # Text goes through a file so that text starting with "-" is never read as an option.
        text_file.write_text(text, encoding="utf-8")
        command = [espeak, "-v", voice, "-s", str(int(words_per_minute)), "-p", str(int(pitch)),
                   "-w", str(raw_wav), "-f", str(text_file)]
        result = subprocess.run(command, capture_output=True, check=False)
        if result.returncode != 0 or not raw_wav.exists() or raw_wav.stat().st_size <= 44:
            raise ExternalToolError(
                f"espeak-ng could not speak with voice {voice!r}", tool="espeak-ng",
                stderr_tail=_tail(result.stderr + result.stdout),
            )
        with _atomic_output(wav_path) as partial:
            args = (
                ffmpeg.input(str(raw_wav))
                .output(str(partial), f="wav", acodec="pcm_s16le", ac=1, ar=SPEECH_SAMPLE_RATE,
                        map_metadata=-1, fflags="+bitexact", **{"flags:a": "+bitexact"})
                .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
                .overwrite_output()
                .compile()
            )
            _run_ffmpeg(args, "ffmpeg could not resample the speech")
    return wav_path


# --- motion signals ------------------------------------------------------------------------------------


def jaw_envelope(wav_path: str | os.PathLike, fps: float) -> np.ndarray:
    """Mouth opening per video frame, float32 in 0..1, from the speech's loudness.

    One value per frame for ceil(audio duration × fps) frames: the RMS of that frame's samples, smoothed
    over three frames and divided by the 95th percentile, so ordinary speech peaks reach 1 and silence
    stays at 0.
    """
    samples, sample_rate = _read_audio_mono(wav_path)
    rate = _frame_rate(fps)
    n_frames = _frames_for_samples(len(samples), sample_rate, rate)
    if n_frames == 0:
        return np.zeros(0, dtype=np.float32)
    # Frame i starts at sample floor(i × sample_rate / fps), in exact integer arithmetic.
    starts = (np.arange(n_frames, dtype=np.int64) * sample_rate * rate.denominator) // rate.numerator
    counts = np.diff(np.append(starts, len(samples)))
    squares = samples.astype(np.float64) ** 2
    rms = np.sqrt(np.add.reduceat(squares, starts) / counts)
    smoothed = np.convolve(np.pad(rms, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    reference = max(float(np.percentile(smoothed, ENVELOPE_PERCENTILE)), SILENCE_RMS)
    return np.clip(smoothed / reference, 0.0, 1.0).astype(np.float32)


def fit_to_length(signal: np.ndarray, n_frames: int, *, start: int = 0) -> np.ndarray:
    """Cut or loop `signal` (along its first axis) to `n_frames`, beginning at frame `start`.

    Used for random alignment: another utterance's motion made as long as this one's speech.
    """
    signal = np.asarray(signal)
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    if len(signal) == 0:
        raise ValueError("cannot fit an empty signal to a length")
    return signal[(start + np.arange(n_frames)) % len(signal)]


def time_shift(signal: np.ndarray, frames: int) -> np.ndarray:
    """Delay `signal` by `frames` (advance it if negative), keeping its length and repeating the edge value."""
    signal = np.asarray(signal)
    if len(signal) == 0:
        return signal.copy()
    source = np.clip(np.arange(len(signal)) - int(frames), 0, len(signal) - 1)
    return signal[source]


# --- drawing -------------------------------------------------------------------------------------------


def draw_face(
    jaw: float,
    *,
    width: int,
    height: int,
    blink: float = 0.0,
    brow: float = 0.0,
    caption: str | None = None,
) -> np.ndarray:
    """Draw the cartoon head as an H×W×3 uint8 RGB frame.

    jaw 0..1 opens the mouth, blink 0..1 closes the eyes, brow -1..1 lowers or raises the brows, and a
    caption, when given, is written large in a box across the lower part of the frame.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    jaw = float(np.clip(jaw, 0.0, 1.0))
    blink = float(np.clip(blink, 0.0, 1.0))
    brow = float(np.clip(brow, -1.0, 1.0))
    canvas = _face_base(width, height).copy()
    draw = ImageDraw.Draw(canvas)
    w, h = canvas.size
    _draw_eyes(draw, w, h, blink)
    _draw_brows(draw, w, h, brow)
    _draw_mouth(draw, w, h, jaw)
    if caption:
        _draw_caption(draw, w, h, caption)
    return np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.uint8)


@functools.lru_cache(maxsize=8)
def _face_base(width: int, height: int) -> Image.Image:
    """Everything that never moves: background, shoulders, neck, hair, head, ears, nose, cheeks."""
    w, h = width * SUPERSAMPLE, height * SUPERSAMPLE
    image = Image.new("RGB", (w, h), BACKGROUND)
    draw = ImageDraw.Draw(image)
    line = max(2, round(0.006 * w))
    draw.ellipse(_box(0.5 * w, 1.12 * h, 0.44 * w, 0.30 * h), fill=SHIRT)
    draw.rectangle((0.43 * w, 0.62 * h, 0.57 * w, 0.86 * h), fill=SKIN_SHADE)
    for side in (-1, 1):
        draw.ellipse(_box(0.5 * w + side * 0.275 * w, 0.43 * h, 0.04 * w, 0.065 * h),
                     fill=SKIN, outline=OUTLINE, width=line)
    head = _box(0.5 * w, 0.43 * h, 0.27 * w, 0.33 * h)
    draw.ellipse(_box(0.5 * w, 0.37 * h, 0.295 * w, 0.30 * h), fill=HAIR)  # volume above and beside the head
    draw.ellipse(head, fill=HAIR)
    # The face is the part of the head below a curved hairline: a lower ellipse clipped to the head.
    head_mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(head_mask).ellipse(head, fill=255)
    face_mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(face_mask).ellipse(_box(0.5 * w, 0.50 * h, 0.25 * w, 0.33 * h), fill=255)
    image.paste(SKIN, (0, 0, w, h), Image.fromarray(np.minimum(np.asarray(head_mask), np.asarray(face_mask))))
    draw.arc(head, 20, 160, fill=OUTLINE, width=line)  # jaw line only; the hair frames the rest
    for side in (-1, 1):
        draw.ellipse(_box(0.5 * w + side * 0.16 * w, 0.54 * h, 0.045 * w, 0.025 * h), fill=(248, 186, 170))
    draw.arc(_box(0.5 * w, 0.49 * h, 0.03 * w, 0.025 * h), 20, 160, fill=OUTLINE, width=line)
    return image


def _draw_eyes(draw: ImageDraw.ImageDraw, w: int, h: int, blink: float) -> None:
    rx, ry = 0.055 * w, 0.04 * h
    line = max(2, round(0.006 * w))
    for side in (-1, 1):
        cx, cy = 0.5 * w + side * 0.105 * w, 0.39 * h
        draw.ellipse(_box(cx, cy, rx, ry), fill=SCLERA, outline=OUTLINE, width=line)
        iris, pupil = 0.65 * min(rx, ry), 0.32 * min(rx, ry)
        draw.ellipse(_box(cx, cy + 0.1 * ry, iris, iris), fill=IRIS)
        draw.ellipse(_box(cx, cy + 0.1 * ry, pupil, pupil), fill=PUPIL)
        if blink <= 0.0:
            continue
        # The lids meet a little below the middle of the eye, the upper lid travelling further.
        upper_edge = cy - ry + blink * 1.4 * ry
        lower_edge = cy + ry - blink * 0.6 * ry
        draw.rectangle((cx - rx - line, cy - ry - line, cx + rx + line, upper_edge), fill=SKIN)
        draw.rectangle((cx - rx - line, lower_edge, cx + rx + line, cy + ry + line), fill=SKIN)
        half_chord = rx * math.sqrt(max(0.0, 1.0 - ((upper_edge - cy) / ry) ** 2))
        draw.line((cx - half_chord, upper_edge, cx + half_chord, upper_edge), fill=PUPIL, width=line + 1)


def _draw_brows(draw: ImageDraw.ImageDraw, w: int, h: int, brow: float) -> None:
    lift = brow * 0.035 * h
    thickness = max(3, round(0.018 * w))
    for side in (-1, 1):
        inner_x, outer_x = 0.5 * w + side * 0.05 * w, 0.5 * w + side * 0.16 * w
        base_y = 0.315 * h - lift
        points = [
            (inner_x, base_y + 0.008 * h),
            (0.5 * w + side * 0.105 * w, base_y - 0.012 * h),
            (outer_x, base_y + 0.004 * h),
        ]
        draw.line(points, fill=BROW_COLOUR, width=thickness, joint="curve")
        for x, y in (points[0], points[-1]):  # round caps
            draw.ellipse(_box(x, y, thickness / 2, thickness / 2), fill=BROW_COLOUR)


def _draw_mouth(draw: ImageDraw.ImageDraw, w: int, h: int, jaw: float) -> None:
    cx, cy = 0.5 * w, 0.615 * h
    half_width = 0.085 * w * (1.0 - 0.15 * jaw)  # lips narrow a little as the jaw drops
    opening = 0.004 * h + jaw * 0.10 * h
    lip = max(3, round(0.012 * w))
    # The jaw drops, so the mouth opens mostly downwards from the upper lip.
    box = (cx - half_width, cy - 0.3 * opening, cx + half_width, cy + 0.7 * opening)
    draw.ellipse(box, fill=MOUTH_INSIDE)
    if jaw > 0.15:  # segments of the mouth's own ellipse, so teeth and tongue never spill past the lips
        draw.chord(box, 205, 335, fill=TEETH)
        draw.chord(box, 25, 155, fill=TONGUE)
    draw.ellipse(box, outline=LIPS, width=lip)


def _draw_caption(draw: ImageDraw.ImageDraw, w: int, h: int, caption: str) -> None:
    box = (0.05 * w, 0.78 * h, 0.95 * w, 0.97 * h)
    max_width, max_height = 0.84 * (box[2] - box[0]), 0.84 * (box[3] - box[1])
    size = max(8, round(0.075 * h))
    while True:
        font = _font(size)
        lines = _wrap(caption, font, max_width)
        spacing = round(0.2 * size)
        block = draw.multiline_textbbox((0, 0), "\n".join(lines), font=font, spacing=spacing, align="center")
        if (block[3] - block[1] <= max_height and block[2] - block[0] <= max_width) or size <= 8:
            break
        size = round(size * 0.9)
    draw.rounded_rectangle(box, radius=round(0.03 * h), fill=CAPTION_BOX, outline=OUTLINE,
                           width=max(2, round(0.004 * w)))
    draw.multiline_text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), "\n".join(lines), font=font,
                        fill=CAPTION_TEXT, anchor="mm", spacing=spacing, align="center")


def _wrap(text: str, font: ImageFont.FreeTypeFont, max_width: float) -> list[str]:
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        current = ""
        for word in paragraph.split():
            candidate = f"{current} {word}".strip()
            if current and font.getlength(candidate) > max_width:
                lines.append(current)
                current = word
            else:
                current = candidate
        lines.append(current)
    return lines


def _box(cx: float, cy: float, rx: float, ry: float) -> tuple[float, float, float, float]:
    return (cx - rx, cy - ry, cx + rx, cy + ry)


# --- whole placeholder clips ---------------------------------------------------------------------------


def make_placeholder_stimulus(
    out_path: str | os.PathLike,
    *,
    speech_wav: str | os.PathLike,
    jaw: np.ndarray | None,
    fps: float = 25,
    width: int = 480,
    height: int = 480,
    seed: int = 0,
    caption: str | None = None,
) -> StimulusFacts:
    """Draw and encode one placeholder clip whose mouth follows `jaw` (None: the mouth stays closed).

    The clip lasts as long as the speech: `jaw` must have that many frames (ceil(duration × fps), one
    frame either way is tolerated) — use `fit_to_length` or `time_shift` first. Blinks come every 2–5 s
    from `seed`, the same for every jaw signal, and the brows lift lightly with the jaw. The file passes
    `check_stimulus` (encode_stimulus sees to it) and its facts are returned.
    """
    samples, sample_rate = _read_audio_mono(speech_wav)
    rate = _frame_rate(fps)
    n_frames = _frames_for_samples(len(samples), sample_rate, rate)
    if n_frames == 0:
        raise ValueError(f"{speech_wav} holds no audio")
    jaw_track = _jaw_track(jaw, n_frames)
    blink_track = _blink_track(n_frames, rate, np.random.default_rng(seed))
    brow_track = 0.35 * _moving_average(jaw_track, max(1, round(float(rate) * 0.2)))
    frames = (
        draw_face(jaw_track[i], width=width, height=height, blink=blink_track[i], brow=brow_track[i], caption=caption)
        for i in range(n_frames)
    )
    return encode_stimulus(frames, speech_wav, out_path, fps=fps, width=width, height=height)


def _jaw_track(jaw: np.ndarray | None, n_frames: int) -> np.ndarray:
    if jaw is None:
        return np.zeros(n_frames, dtype=np.float32)
    jaw = np.asarray(jaw, dtype=np.float32)
    if jaw.ndim != 1:
        raise ValueError(f"jaw must be one value per frame, got shape {jaw.shape}")
    if not np.all(np.isfinite(jaw)):
        raise ValueError("jaw holds NaN or infinite values")
    if abs(len(jaw) - n_frames) > 1:
        raise ValueError(
            f"jaw has {len(jaw)} frames but the speech lasts {n_frames}; "
            "cut or loop it with fit_to_length() first"
        )
    if len(jaw) < n_frames:
        jaw = np.pad(jaw, (0, n_frames - len(jaw)), mode="edge")
    return np.clip(jaw[:n_frames], 0.0, 1.0)


def _blink_track(n_frames: int, rate: Fraction, rng: np.random.Generator) -> np.ndarray:
    """Eyelid closure per frame: quick blinks (80 ms closing, 40 ms shut, 150 ms opening) every 2–5 s."""
    times = np.arange(n_frames) / float(rate)
    track = np.zeros(n_frames, dtype=np.float32)
    onset = rng.uniform(0.5, 2.0)
    while onset < times[-1] + 1.0 / float(rate):
        t = times - onset
        closing = np.clip(t / 0.08, 0.0, 1.0)
        opening = np.clip(1.0 - (t - 0.12) / 0.15, 0.0, 1.0)
        track = np.maximum(track, np.where(t < 0, 0.0, np.minimum(closing, opening)))
        onset += rng.uniform(2.0, 5.0)
    return track


def _moving_average(signal: np.ndarray, window: int) -> np.ndarray:
    padded = np.pad(signal, (window // 2, window - 1 - window // 2), mode="edge")
    return np.convolve(padded, np.ones(window) / window, mode="valid").astype(np.float32)


# --- shared helpers ------------------------------------------------------------------------------------


def _frames_for_samples(n_samples: int, sample_rate: int, rate: Fraction) -> int:
    return math.ceil(Fraction(n_samples) * rate / sample_rate)


def _read_audio_mono(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode any audio file to mono float32 samples at its own sample rate."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    # 16-bit PCM WAV (what speak() writes) is read directly, sparing two ffmpeg processes per call.
    with contextlib.suppress(wave.Error, EOFError):
        with wave.open(os.fspath(path), "rb") as pcm:
            if pcm.getsampwidth() == 2 and pcm.getnchannels() > 0:
                samples = np.frombuffer(pcm.readframes(pcm.getnframes()), dtype="<i2")
                samples = samples.reshape(-1, pcm.getnchannels()).mean(axis=1) / 32768.0
                return samples.astype(np.float32), pcm.getframerate()
    try:
        probe = ffmpeg.probe(os.fspath(path), select_streams="a:0")
    except ffmpeg.Error as exc:
        raise ExternalToolError(f"ffprobe cannot read {path}", tool="ffprobe", stderr_tail=_tail(exc.stderr)) from exc
    if not probe.get("streams"):
        raise ValueError(f"{path} has no audio stream")
    sample_rate = int(probe["streams"][0]["sample_rate"])
    try:
        raw, _ = (
            ffmpeg.input(os.fspath(path))
            .output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=sample_rate)
            .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
            .run(capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as exc:
        raise ExternalToolError(f"ffmpeg cannot decode {path}", tool="ffmpeg", stderr_tail=_tail(exc.stderr)) from exc
    return np.frombuffer(raw, dtype=np.float32), sample_rate
