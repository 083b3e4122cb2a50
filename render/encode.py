"""The one encoder every stimulus goes through: rendered avatars, simulated robots, placeholders, composites.

Frames stream (an iterator of H×W×3 uint8 RGB arrays, never a list of all of them) into ffmpeg through a
pipe; the speech is cut to exactly the motion segment (from `audio_offset_s` in the recording, padded with
silence if the recording ends first) and muxed in. The result is H.264 yuv420p at a constant frame rate,
AAC 128k at 48 kHz, `+faststart`, no metadata: what `render.checks.check_stimulus` demands, and it is
checked before it is renamed into place, so only a passing file ever appears at the output path.
Identical inputs give byte-identical files.

Also here: frame-locked side-by-side composites (two or more conditions of one utterance sharing one audio
track, for pairwise and MUSHRA-style pages). `render.checks.reencode_upload` brings a video made elsewhere
to the same rule with the steps below.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import re
import secrets
import subprocess
import tempfile
import wave
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np
from PIL import Image, ImageDraw

from render import checks
from render.overlays import font

STIMULUS_AUDIO_RATE = 48_000  # AAC frames of 1024 samples stay shorter than one video frame
AUDIO_BITRATE = "128k"
# FFmpeg's AAC encoder with its "fast" coder rather than the default "twoloop": at 128 kbit/s its maintainers
# found it sounds better and costs far less CPU (FFmpeg commit fcb681ac, which made it the default in 2018;
# 5.1 defaults to twoloop again). Measured here on 10 s of espeak-ng speech: 0.12 against 0.26 s of CPU, and
# a decoded waveform closer to the source (SNR 44 against 30 dB).
AAC_CODER = "fast"
DEFAULT_CRF = 20
# x264's output depends on its thread count; fixing it keeps encodes identical across machines. One thread:
# a render worker process has one core (Celery starts one per core), where x264's frame threads only take
# turns with the renderer (measured on one core: a 10 s 512² stimulus 5 % faster than with 4 threads).
X264_THREADS = 1
# "veryfast" encodes a 512² avatar clip in about half the CPU time of "medium" (7.8–8.1 against 14–17 ms a
# frame, measured here) at the same visually lossless quality for these renders (PSNR 46.4 against 47.7 dB,
# SSIM 0.995 against 0.996 at CRF 20) and no larger files.
X264_PRESET = "veryfast"

COMPOSITE_GAP = 8  # pixels between panels
COMPOSITE_BACKGROUND = (24, 24, 28)
COMPOSITE_LABEL_COLOUR = (250, 250, 250)
# Panel labels are neutral letters or numbers only: a label such as "ground truth" would tell participants
# which panel is which condition.
_NEUTRAL_LABEL = re.compile(r"[A-Z0-9]{1,2}")


class ExternalToolError(RuntimeError):
    """espeak-ng or ffmpeg is missing or failed; `stderr_tail` holds the end of what it printed."""

    def __init__(self, message: str, *, tool: str, stderr_tail: str = ""):
        self.tool = tool
        self.stderr_tail = stderr_tail
        super().__init__(f"{message}: {stderr_tail}" if stderr_tail else message)


# --- one stimulus ------------------------------------------------------------------------------------------


def encode_stimulus(
    frames: Iterable[np.ndarray],
    audio: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    fps: float | Fraction = 25,
    width: int,
    height: int,
    audio_offset_s: float = 0.0,
    crf: int = DEFAULT_CRF,
) -> checks.StimulusFacts:
    """Encode RGB frames and a speech recording into a stimulus MP4 at `out_path`, atomically; return its facts.

    `frames` is consumed one frame at a time. The audio is the stretch of `audio` that starts at
    `audio_offset_s` seconds (where the motion segment starts within a longer recording) and lasts exactly
    as long as the video — n_frames / fps — padded with silence if the recording ends first.

    H.264 yuv420p at a constant frame rate, AAC 128k at 48 kHz, +faststart, no metadata. Identical inputs
    give byte-identical files. The file is checked with `check_stimulus` before it is moved into place, so
    only a passing file ever appears at `out_path`; on any failure (a bad frame midway, ffmpeg failing,
    a failed check) nothing is left at `out_path` or beside it. An ffmpeg failure raises
    ExternalToolError carrying the end of ffmpeg's messages.
    """
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"width and height must be positive and even for yuv420p, got {width}x{height}")
    _check_crf(crf)
    rate = frame_rate(fps)
    audio_duration = _audio_duration_s(audio)
    if not (math.isfinite(audio_offset_s) and audio_offset_s >= 0):
        raise ValueError(f"audio_offset_s must be a finite number of seconds >= 0, got {audio_offset_s!r}")
    if audio_offset_s >= audio_duration:
        raise ValueError(
            f"audio_offset_s is {audio_offset_s:.3f} s but {Path(audio).name} lasts only {audio_duration:.3f} s, "
            "so the clip would have no sound; give the motion segment's start within this recording"
        )
    out_path = Path(out_path)
    with _atomic_output(out_path) as partial:
        video_only = partial.with_name(partial.name + ".video.mp4")
        try:
            n_frames = _encode_video(frames, video_only, rate=rate, width=width, height=height, crf=crf)
            _mux_with_audio(video_only, audio, partial, duration_s=float(n_frames / rate),
                            audio_offset_s=audio_offset_s)
        finally:
            video_only.unlink(missing_ok=True)
        facts = _check_before_publishing(partial, out_path)
    return facts


def frame_rate(fps: float | Fraction) -> Fraction:
    """The frame rate as an exact fraction: ints and Fractions (30000/1001) as given, a float such as 29.97
    as the nearest fraction with a denominator of at most 1001."""
    rate = Fraction(fps) if isinstance(fps, (int, Fraction)) else Fraction(float(fps)).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


# --- side-by-side composites ------------------------------------------------------------------------------


def panel_labels(n: int) -> list[str]:
    """The neutral labels "A", "B", … for `n` panels (at most 26)."""
    if not 1 <= n <= 26:
        raise ValueError(f"panel_labels takes 1..26 panels, got {n}")
    return [chr(ord("A") + i) for i in range(n)]


def composite_side_by_side(
    frame_iterators: Sequence[Iterable[np.ndarray]],
    labels: Sequence[str] | None = None,
    *,
    gap: int = COMPOSITE_GAP,
    label_position: str = "below",
) -> Iterator[np.ndarray]:
    """Frame-locked composites: frame i of every panel, placed left to right with a `gap` between them.

    All panels must have frames of one size and the same number of frames (a panel that ends early is an
    error, never a frozen or black panel). With `labels` (one short neutral label per panel, such as
    `panel_labels(n)` gives), each letter is drawn large in a band `label_position` ("below" or "above")
    the panels. The composite's width and height are made even for yuv420p by a background-coloured
    margin on the right or bottom where needed.
    """
    if len(frame_iterators) < 2:
        raise ValueError(f"a side-by-side composite needs two or more panels, got {len(frame_iterators)}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0 pixels, got {gap}")
    if label_position not in ("below", "above"):
        raise ValueError(f"label_position must be 'below' or 'above', got {label_position!r}")
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(frame_iterators):
            raise ValueError(f"{len(labels)} labels for {len(frame_iterators)} panels; give one label per panel")
        for label in labels:
            if not isinstance(label, str) or not _NEUTRAL_LABEL.fullmatch(label):
                raise ValueError(
                    f"panel label {label!r} is not a neutral label; use one or two capital letters or digits "
                    "such as panel_labels() gives ('A', 'B', …): a label that names a condition reveals it"
                )
    return _composite_frames([iter(frames) for frames in frame_iterators], labels, gap, label_position)


def _composite_frames(panels: list[Iterator[np.ndarray]], labels: list[str] | None, gap: int,
                      label_position: str) -> Iterator[np.ndarray]:
    missing = object()
    canvas: np.ndarray | None = None
    for index, frames in enumerate(itertools.zip_longest(*panels, fillvalue=missing)):
        ended = [i for i, frame in enumerate(frames) if frame is missing]
        if ended:
            names = ", ".join(_panel_name(i, labels) for i in ended)
            raise ValueError(
                f"panel {names} ended after {index} frames while the others go on; panels of a composite must "
                "have the same number of frames (fit the clips to the utterance's length first)"
            )
        frames = [np.asarray(frame) for frame in frames]
        first = frames[0]
        if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
            raise ValueError(f"frame {index} of panel {_panel_name(0, labels)} has shape {first.shape} and dtype "
                             f"{first.dtype}; expected H×W×3 uint8 RGB")
        for i, frame in enumerate(frames[1:], start=1):
            if frame.shape != first.shape or frame.dtype != np.uint8:
                raise ValueError(
                    f"frame {index} of panel {_panel_name(i, labels)} has shape {frame.shape} and dtype {frame.dtype}"
                    f" but panel {_panel_name(0, labels)} has {first.shape} uint8; render all panels at one size"
                )
        height, width = first.shape[:2]
        if canvas is None:
            canvas, panel_top = _composite_canvas(len(frames), width, height, labels, gap, label_position)
        out = canvas.copy()
        for i, frame in enumerate(frames):
            left = i * (width + gap)
            out[panel_top:panel_top + height, left:left + width] = frame
        yield out


def _composite_canvas(n: int, width: int, height: int, labels: list[str] | None, gap: int,
                      label_position: str) -> tuple[np.ndarray, int]:
    """The background with the labels drawn in (it never changes), and the row where panels start."""
    band = max(16, round(0.2 * height)) if labels else 0
    total_width = n * width + (n - 1) * gap
    total_height = height + band
    total_width += total_width % 2
    total_height += total_height % 2
    image = Image.new("RGB", (total_width, total_height), COMPOSITE_BACKGROUND)
    panel_top = band if label_position == "above" else 0
    if labels:
        draw = ImageDraw.Draw(image)
        label_font = font(max(10, round(0.8 * band)))
        band_middle = band / 2 if label_position == "above" else height + band / 2
        for i, label in enumerate(labels):
            centre = i * (width + gap) + width / 2
            draw.text((centre, band_middle), label, font=label_font, fill=COMPOSITE_LABEL_COLOUR, anchor="mm")
    return np.asarray(image, dtype=np.uint8), panel_top


def _panel_name(index: int, labels: list[str] | None) -> str:
    return f"{index + 1}" + (f" ({labels[index]})" if labels else "")


def encode_side_by_side(
    frame_iterators: Sequence[Iterable[np.ndarray]],
    audio: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    fps: float | Fraction = 25,
    labels: Sequence[str] | None = None,
    audio_offset_s: float = 0.0,
    gap: int = COMPOSITE_GAP,
    label_position: str = "below",
    crf: int = DEFAULT_CRF,
) -> checks.StimulusFacts:
    """Encode a frame-locked composite of two or more conditions of one utterance with one shared audio track.

    The panels come from `composite_side_by_side` (same arguments); the file is written and checked as by
    `encode_stimulus`, whose size is that of the composite.
    """
    composite = composite_side_by_side(frame_iterators, labels, gap=gap, label_position=label_position)
    try:
        first = next(composite)
    except StopIteration:
        raise ValueError("no frames to encode: the panels are empty") from None
    height, width = first.shape[:2]
    return encode_stimulus(itertools.chain([first], composite), audio, out_path, fps=fps, width=width,
                           height=height, audio_offset_s=audio_offset_s, crf=crf)


# --- the steps -------------------------------------------------------------------------------------------


def _x264_options(crf: int) -> dict:
    return dict(
        vcodec="libx264", pix_fmt="yuv420p", crf=crf, preset=X264_PRESET, threads=X264_THREADS,
        map_metadata=-1, fflags="+bitexact",
        # Drop x264's SEI message, which spells out its version and settings inside the video.
        **{"flags:v": "+bitexact", "bsf:v": "filter_units=remove_types=6"},
    )


def _encode_video(frames: Iterable[np.ndarray], path: Path, *, rate: Fraction, width: int, height: int,
                  crf: int) -> int:
    """Pipe frames into libx264, one at a time; returns how many there were."""
    args = (
        ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=str(rate))
        .output(str(path), f="mp4", **_x264_options(crf))
        .global_args("-hide_banner", "-loglevel", "error")
        .overwrite_output()
        .compile()
    )
    n_frames = 0
    with tempfile.TemporaryFile() as stderr:
        try:
            process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr)
        except FileNotFoundError as exc:
            raise ExternalToolError("ffmpeg is not installed; install the Debian package ffmpeg",
                                    tool="ffmpeg") from exc
        _widen_pipe(process.stdin, width * height * 3)
        try:
            for frame in frames:
                frame = np.asarray(frame)
                if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
                    raise ValueError(
                        f"frame {n_frames} has shape {frame.shape} and dtype {frame.dtype}; "
                        f"expected ({height}, {width}, 3) uint8 RGB"
                    )
                process.stdin.write(memoryview(np.ascontiguousarray(frame)).cast("B"))  # no copy to bytes
                n_frames += 1
            process.stdin.close()
            returncode = process.wait()
            if n_frames == 0:
                raise ValueError("no frames to encode")
        except BrokenPipeError:
            returncode = process.wait()
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            if process.stdin and not process.stdin.closed:
                with contextlib.suppress(BrokenPipeError):
                    process.stdin.close()
        if returncode != 0:
            stderr.seek(0)
            raise ExternalToolError("ffmpeg could not encode the video", tool="ffmpeg",
                                    stderr_tail=_tail(stderr.read()))
    return n_frames


def _widen_pipe(pipe, frame_bytes: int) -> None:
    """Let the pipe into ffmpeg hold a whole frame where the system allows (Linux: up to
    /proc/sys/fs/pipe-max-size, 1 MiB by default), so a frame goes over in one write rather than in 64 KiB
    turns between this process and ffmpeg (a dozen per 512² frame), which on one core take turns on it.
    A pipe already wide enough is left as it is; elsewhere nothing changes."""
    import fcntl

    get_size, set_size = getattr(fcntl, "F_GETPIPE_SZ", None), getattr(fcntl, "F_SETPIPE_SZ", None)
    if get_size is None or set_size is None:
        return
    limit = _pipe_max_size()
    with contextlib.suppress(OSError):
        if fcntl.fcntl(pipe.fileno(), get_size) < min(frame_bytes, limit):
            fcntl.fcntl(pipe.fileno(), set_size, min(frame_bytes, limit))


@functools.lru_cache(maxsize=1)
def _pipe_max_size() -> int:
    """The system's limit on a pipe's size (read once per process)."""
    try:
        return int(Path("/proc/sys/fs/pipe-max-size").read_text())
    except (OSError, ValueError):
        return 1 << 20


def _mux_with_audio(video_only: Path, audio: str | os.PathLike, out: Path, *, duration_s: float,
                    audio_offset_s: float = 0.0) -> None:
    """Copy the video and add `audio` from `audio_offset_s`, padded or trimmed to `duration_s`, as AAC."""
    duration = f"{duration_s:.6f}"
    video = ffmpeg.input(str(video_only)).video
    sound = ffmpeg.input(str(audio)).audio
    if audio_offset_s > 0:
        # atrim counts in samples after decoding, so the cut is sample-exact (input seeking may not be).
        sound = sound.filter("atrim", start=f"{audio_offset_s:.6f}").filter("asetpts", "PTS-STARTPTS")
    sound = sound.filter("apad", whole_dur=duration).filter("atrim", end=duration)
    # Copying the video here, rather than encoding it in this step, keeps the encoder's name out of the
    # MP4: ffmpeg tags every stream it encodes ("Lavc libx264" even with +bitexact) and the MP4 muxer
    # stores that tag in the video sample description, where -map_metadata cannot reach it.
    args = (
        ffmpeg.output(video, sound, str(out), f="mp4", vcodec="copy", acodec="aac", ar=STIMULUS_AUDIO_RATE,
                      map_metadata=-1, map_chapters=-1, fflags="+bitexact", movflags="+faststart",
                      aac_coder=AAC_CODER,
                      **{"b:a": AUDIO_BITRATE, "flags:a": "+bitexact", "map_metadata:s": -1})
        .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
        .overwrite_output()
        .compile()
    )
    _run_ffmpeg(args, "ffmpeg could not add the audio to the video")


def _check_before_publishing(partial: Path, out_path: Path) -> checks.StimulusFacts:
    """Check the finished temporary file; failures name the file the caller asked for."""
    try:
        return checks.check_stimulus(partial)
    except checks.StimulusCheckError as exc:
        raise checks.StimulusCheckError(out_path, exc.failures, reencode_helps=exc.reencode_helps) from exc


def _audio_duration_s(audio: str | os.PathLike) -> float:
    if not Path(audio).is_file():
        raise FileNotFoundError(f"audio file not found: {audio}")
    duration = _pcm_wav_duration_s(audio)
    if duration is not None:
        return duration
    try:
        probe = ffmpeg.probe(os.fspath(audio))
    except FileNotFoundError as exc:
        raise ExternalToolError("ffprobe is not installed; install the Debian package ffmpeg", tool="ffprobe") from exc
    except ffmpeg.Error as exc:
        raise ExternalToolError(f"ffmpeg could not add the audio to the video: {Path(audio).name} cannot be read",
                                tool="ffprobe", stderr_tail=_tail(exc.stderr)) from exc
    stream = next((s for s in probe.get("streams", []) if s.get("codec_type") == "audio"), None)
    if stream is None:
        raise ValueError(f"{Path(audio).name} has no audio stream; give the speech recording")
    duration = stream.get("duration") or probe.get("format", {}).get("duration")
    return float(duration) if duration not in (None, "N/A") else math.inf


def _pcm_wav_duration_s(audio: str | os.PathLike) -> float | None:
    """The duration of a PCM WAV file from its header (the corpus's and espeak-ng's speech), or None for
    anything else, which ffprobe then reads: a run of ffprobe costs more than the header's few bytes."""
    try:
        with wave.open(os.fspath(audio), "rb") as wav:
            frames, rate, frame_bytes = wav.getnframes(), wav.getframerate(), wav.getsampwidth() * wav.getnchannels()
    except (wave.Error, EOFError, OSError, ValueError):
        return None
    # A header whose data size runs past the file (written by a stream that never went back to fill it in)
    # is left to ffprobe, which measures what is there.
    if rate <= 0 or frame_bytes <= 0 or frames * frame_bytes > os.path.getsize(audio):
        return None
    return frames / rate


def _check_crf(crf: int) -> None:
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be within 0..51, got {crf}")


def _run_ffmpeg(args: list[str], message: str) -> None:
    try:
        result = subprocess.run(args, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise ExternalToolError("ffmpeg is not installed; install the Debian package ffmpeg", tool="ffmpeg") from exc
    if result.returncode != 0:
        raise ExternalToolError(message, tool="ffmpeg", stderr_tail=_tail(result.stderr))


@contextlib.contextmanager
def _atomic_output(final_path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final_path`; on success fsync and rename it into place, else delete it."""
    final_path = Path(final_path)
    partial = final_path.with_name(f".{final_path.name}.{secrets.token_hex(6)}.partial")
    try:
        yield partial
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, final_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the platform allows it
        directory = os.open(final_path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _tail(stderr: bytes | str | None, limit: int = 1500) -> str:
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    text = (stderr or "").strip()
    return text[-limit:]
