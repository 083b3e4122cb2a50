"""The checks every stimulus video must pass before a study may use it, rendered, captured or uploaded.

`probe_stimulus` reports what a file is (ffprobe plus the MP4 box order and a SHA-256);
`check_stimulus` applies the platform's rule and raises `StimulusCheckError` listing every failure in
words a researcher can act on: what is wrong and the ffmpeg option that fixes it, and whether
re-encoding can fix it at all.

The rule (see "Stimulus videos" in the design): an MP4 with H.264 video in yuv420p at even width and
height, AAC audio that is not silent, moov before mdat (+faststart), a constant frame rate (every frame
interval the same, not just the average), audio and video durations equal within one video frame, no
streams beyond one video and one audio, no metadata beyond the purely technical tags every muxer writes
(so that nothing in a file can reveal its condition, model or utterance), and every frame and audio
packet decodes without error (a truncated or damaged file fails).

Uploaded videos pass the same checks before a study may use them; `reencode_upload` is the platform's
offer to fix the ones that re-encoding can fix. `sync_self_test` renders a known motion impulse with a
known audio click through the real encoder and measures that they come out in the same frame.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import struct
import subprocess
import tempfile
import wave
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np

from inference.motion import MotionClip

# Tags that carry no information about how, when or from what a clip was made.
TECHNICAL_CONTAINER_TAGS = frozenset({"major_brand", "minor_version", "compatible_brands"})
GENERIC_HANDLER_NAMES = frozenset(
    {"", "VideoHandler", "SoundHandler", "Core Media Video", "Core Media Audio"}
)
EMPTY_VENDOR_ID = "[0][0][0][0]"

# Re-encoding sets the stream's encoder tag, which only a stream-copying remux leaves out: hence two steps.
REENCODE = (
    "ffmpeg -i IN -map 0:v:0 -map 0:a:0 -c:v libx264 -pix_fmt yuv420p -fps_mode cfr -c:a aac -b:a 128k MID.mp4 "
    "&& ffmpeg -i MID.mp4 -map 0 -c copy -map_metadata -1 -fflags +bitexact -movflags +faststart OUT.mp4"
)

# An audio track whose RMS over the whole clip is below this is silent (-60 dBFS is 0.1 % of full scale;
# recorded speech sits around -20 to -30 dBFS, room noise around -50 to -70).
SILENCE_FLOOR_DBFS = -60.0
LEVEL_SAMPLE_RATE = 16_000  # the audio is measured at this rate: plenty for a loudness floor
# Frame intervals may differ from 1/fps by a rounding tick or by this fraction of a frame and still count
# as constant.
FRAME_INTERVAL_TOLERANCE = 0.02

# Rates a variable-rate video is re-encoded at when it is close to one of them (NTSC rates exactly).
COMMON_FRAME_RATES = tuple(Fraction(r) for r in (Fraction(24000, 1001), 24, 25, Fraction(30000, 1001), 30,
                                                 48, 50, Fraction(60000, 1001), 60))

_HASH_CHUNK = 1 << 20
_TIME_EPSILON_S = 1e-6
_PROGRESS_LINE = re.compile(r"^[a-z0-9_]+=")
_FFMPEG_CONTEXT = re.compile(r"^\[([\w,]+) @ 0x[0-9a-f]+\] ")  # "[h264 @ 0x55d1…] " → "h264: "


@dataclass(frozen=True)
class StimulusFacts:
    """What a stimulus file is, as measured; durations in seconds, fps as a float."""

    duration_s: float
    audio_duration_s: float | None
    width: int
    height: int
    fps: float
    video_codec: str
    audio_codec: str
    pix_fmt: str
    size_bytes: int
    sha256: str
    faststart: bool


class StimulusCheckError(ValueError):
    """A file is not a usable stimulus; `failures` lists every failed check in words.

    `reencode_helps` says whether re-encoding (`reencode_upload`, or the REENCODE command) can fix the
    file: it cannot add a missing stream, bring back damaged frames or make a silent track speak.
    """

    def __init__(self, path: str | os.PathLike, failures: list[str], *, reencode_helps: bool = True):
        self.path = str(path)
        self.failures = list(failures)
        self.reencode_helps = reencode_helps
        listing = "\n".join(f"- {failure}" for failure in self.failures)
        if reencode_helps:
            advice = (
                "The platform can re-encode it to the rules for you (render.checks.reencode_upload). "
                f"A re-encode that meets the format rules: {REENCODE}"
            )
        else:
            advice = "Re-encoding cannot fix all of this: export or record the video again."
        super().__init__(f"{Path(path).name} is not a usable stimulus video:\n{listing}\n{advice}")


def probe_stimulus(path: str | os.PathLike) -> StimulusFacts:
    """Measure a video file. Raises StimulusCheckError if ffprobe cannot read it or it has no video."""
    probe = _ffprobe(path)
    return _facts(path, probe)


def check_stimulus(path: str | os.PathLike) -> StimulusFacts:
    """Return the file's facts if it passes every stimulus check, else raise StimulusCheckError."""
    probe = _ffprobe(path, packets=True)
    facts = _facts(path, probe)
    failures: list[str] = []
    fmt = probe.get("format", {})
    video = _main_video_stream(probe)
    audio = _first_stream(probe, "audio")

    format_name = fmt.get("format_name", "")
    is_mp4 = "mp4" in format_name.split(",")
    if not is_mp4:
        failures.append(f"container is {format_name or 'unknown'}, not MP4; re-encode to MP4")

    extra = [
        f"{stream.get('codec_type', 'unknown')} ({stream.get('codec_name') or stream.get('codec_tag_string', '?')})"
        for stream in probe.get("streams", [])
        if stream is not video and stream is not audio
    ]
    if extra:
        failures.append(
            f"extra streams besides one video and one audio: {', '.join(extra)}; "
            "keep only those two with -map 0:v:0 -map 0:a:0"
        )

    if facts.video_codec != "h264":
        failures.append(
            f"video codec is {facts.video_codec or 'unknown'}; re-encode with libx264 -pix_fmt yuv420p"
        )
    if facts.pix_fmt != "yuv420p":
        failures.append(
            f"pixel format is {facts.pix_fmt or 'unknown'}, not yuv420p; re-encode with -pix_fmt yuv420p"
        )
    if facts.width % 2 or facts.height % 2:
        failures.append(
            f"size is {facts.width}x{facts.height}; width and height must be even for yuv420p, "
            "scale with -vf scale=trunc(iw/2)*2:trunc(ih/2)*2"
        )

    reencode_helps = True
    if audio is None:
        failures.append("no audio stream; mux the speech in as AAC with -c:a aac -b:a 128k")
        reencode_helps = False
    elif facts.audio_codec != "aac":
        failures.append(
            f"audio codec is {facts.audio_codec or 'unknown'}; re-encode the audio with -c:a aac -b:a 128k"
        )

    if is_mp4 and not facts.faststart:  # other containers have no moov box; the MP4 rule covers them
        failures.append(
            "the moov box does not come before the media data (no +faststart), so browsers must load the "
            "whole file before playing; remux with -movflags +faststart"
        )

    intervals = _frame_intervals(probe, video)
    rate_failures = _frame_rate_failures(video, facts, is_mp4=is_mp4, intervals=intervals)
    if not rate_failures:
        rate_failures = _frame_interval_failures(video, facts, intervals)
    failures.extend(rate_failures)
    failures.extend(_duration_failures(facts))
    failures.extend(_metadata_failures(probe, video, audio))

    decoded = _decode(path, video, audio)
    damage = _damage_failures(decoded, video, facts)
    silence = _silence_failures(decoded) if audio is not None and not damage else []
    failures.extend(damage + silence)
    reencode_helps = reencode_helps and not damage and not silence

    if failures:
        raise StimulusCheckError(path, failures, reencode_helps=reencode_helps)
    return facts


def audio_level_dbfs(path: str | os.PathLike) -> float:
    """RMS level of a file's first audio track over its whole length, in dBFS (-inf for digital silence).

    Raises StimulusCheckError if the file cannot be read or has no audio.
    """
    probe = _ffprobe(path)
    audio = _first_stream(probe, "audio")
    if audio is None:
        raise StimulusCheckError(path, ["no audio stream; mux the speech in as AAC with -c:a aac -b:a 128k"],
                                 reencode_helps=False)
    return _decode(path, None, audio).level_dbfs


def usual_frame_rate(path: str | os.PathLike) -> Fraction:
    """The constant rate to re-encode a video at, as a fraction: for a constant-rate file, its rate.

    For a variable-rate one: the common rate (23.976, 24, 25, 29.97, 30, 48, 50, 59.94 or 60 fps) its
    average is within 1 % of (a phone recording that wanders around 30 fps), else the rate most of its
    frames were shown at (a concatenation of a 25 fps and a 10 fps clip: 25), snapped to a common rate
    when within 1 % of one.
    """
    probe = _ffprobe(path, packets=True)
    video = _main_video_stream(probe)
    if video is None:
        raise StimulusCheckError(path, ["the file has no video stream"], reencode_helps=False)
    rate = _usual_rate(video, _frame_intervals(probe, video))
    if not rate:
        raise StimulusCheckError(path, ["the video frame rate is unknown; give the rate to re-encode at"])
    return rate


def is_faststart(path: str | os.PathLike) -> bool:
    """True when the MP4's top-level moov box comes before its mdat box."""
    boxes = _top_level_boxes(path)
    return "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat")


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks so large videos do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- the offer to re-encode an upload ------------------------------------------------------------------


def reencode_upload(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    fps: float | Fraction | None = None,
    crf: int = 20,
) -> StimulusFacts:
    """Re-encode an uploaded video to the stimulus rule at `dst`, atomically; return the new file's facts.

    The picture becomes H.264 yuv420p at a constant `fps` (default: `usual_frame_rate`, the source's own
    rate or, for a variable-rate source, the common rate it wanders around or the rate most of its frames
    were shown at; frames are repeated or dropped only where the source was irregular) with even width and
    height and square pixels; the sound becomes AAC at 48 kHz, starting
    where it started relative to the picture and padded or trimmed to the picture's length; metadata is
    dropped. The result is checked with `check_stimulus` before it is moved into place.

    What re-encoding cannot fix is refused with StimulusCheckError before any work: a file ffprobe cannot
    read, no video or no audio stream, damaged frames or packets, or a silent track.
    """
    from render import encode  # render.encode checks its output with this module, so it is imported late

    src, dst = Path(src), Path(dst)
    probe = _ffprobe(src)
    video, audio = _main_video_stream(probe), _first_stream(probe, "audio")
    missing = [kind for kind, stream in (("video", video), ("audio", audio)) if stream is None]
    if missing:
        raise StimulusCheckError(src, [
            f"the file has no {kind} stream; re-encoding cannot add one, so export the video with its "
            f"{'picture' if kind == 'video' else 'sound'} again" for kind in missing
        ], reencode_helps=False)
    facts = _facts(src, probe)
    decoded = _decode(src, video, audio)
    unfixable = _damage_failures(decoded, video, facts) or _silence_failures(decoded)
    if unfixable:
        raise StimulusCheckError(src, unfixable, reencode_helps=False)
    rate = encode.frame_rate(fps) if fps is not None else usual_frame_rate(src)
    with encode._atomic_output(dst) as partial:
        intermediate = partial.with_name(partial.name + ".mid.mov")
        try:
            n_frames = _reencode_to_intermediate(src, intermediate, rate=rate, crf=crf)
            # The sound was resampled beside the picture in the intermediate file, so it still starts where
            # it did relative to the picture; this step pads or trims it, encodes it as AAC and copies the
            # picture (copying keeps the encoder's name out of the MP4, see render.encode._mux_with_audio).
            encode._mux_with_audio(intermediate, intermediate, partial, duration_s=float(n_frames / rate))
        finally:
            intermediate.unlink(missing_ok=True)
        return encode._check_before_publishing(partial, dst)


def _reencode_to_intermediate(src: Path, out: Path, *, rate: Fraction, crf: int) -> int:
    """Picture to H.264 at a constant rate, sound to 48 kHz PCM, both in a MOV; returns the frame count.

    MOV because it holds PCM and keeps exact timestamps (Matroska rounds them to milliseconds, which would
    make an NTSC rate uneven once copied into MP4).
    """
    from render import encode

    source = ffmpeg.input(os.fspath(src))
    picture = (
        source.video
        .filter("fps", fps=str(rate))
        .filter("scale", "trunc(iw*sar/2)*2", "trunc(ih/2)*2")
        .filter("setsar", "1")
    )
    # async=1 with first_pts=0 fills any gap before the sound's first sample with silence, so sound that
    # started after the picture still does.
    sound = source.audio.filter("aresample", encode.STIMULUS_AUDIO_RATE, **{"async": 1, "first_pts": 0})
    args = (
        ffmpeg.output(picture, sound, os.fspath(out), f="mov", acodec="pcm_s16le", ac=1, fps_mode="cfr",
                      **encode._x264_options(crf))
        .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
        .overwrite_output()
        .compile()
    )
    encode._run_ffmpeg(args, f"ffmpeg could not re-encode {src.name}")
    frames = (_main_video_stream(_ffprobe(out)) or {}).get("nb_frames")
    if frames in (None, "N/A", "0"):
        raise StimulusCheckError(src, ["re-encoding produced no video frames; the picture cannot be decoded"],
                                 reencode_helps=False)
    return int(frames)


# --- the sync self-test ---------------------------------------------------------------------------------

SYNC_FPS = 25
SYNC_DURATION_S = 2.0
SYNC_IMPULSE_S = 1.0
SYNC_AUDIO_RATE = 48_000
SYNC_CLICK_S = 0.010
SYNC_FRAME_SIZE = 96


@dataclass(frozen=True)
class SyncReport:
    """What the sync self-test measured. Times are in seconds from the start of the decoded file.

    `flash_frame` is the frame that differs most from the rest (the motion impulse); the click sounds in
    the middle of the frame the impulse was given for, so `offset_frames` (flash frame's centre minus
    click onset, in frames; positive when the picture is late) is about 0 for a synchronous pipeline and
    about n for one whose picture is n frames late. `passed` means the flash lands on the very frame
    during which the click sounds: |offset_frames| < 0.5.
    """

    passed: bool
    fps: float
    impulse_frame: int
    flash_frame: int | None
    click_time_s: float | None
    offset_s: float | None
    offset_frames: float | None
    message: str


RenderFn = Callable[[MotionClip, Path, Path], object]


def flash_render(clip: MotionClip, audio_path: Path, out_path: Path) -> None:
    """The self-test's default renderer: a dark frame with a white square as bright as the jaw is open.

    Needs no 3-D: it draws the clip's `jawOpen` channel (or the largest value, for other layouts) and
    encodes through the real encoder, so the test measures the encoder and muxer.
    """
    from render import encode

    level = clip.values[:, clip.channels.index("jawOpen")] if "jawOpen" in clip.channels else clip.values.max(axis=1)
    size = SYNC_FRAME_SIZE
    square = (slice(size // 4, 3 * size // 4), slice(size // 4, 3 * size // 4))

    def frames():
        for value in np.clip(level, 0.0, 1.0):
            frame = np.full((size, size, 3), 32, dtype=np.uint8)
            frame[square] = round(32 + float(value) * (255 - 32))
            yield frame

    encode.encode_stimulus(frames(), audio_path, out_path, fps=clip.fps, width=size, height=size)


def sync_self_test(render_fn: RenderFn | None = None, *, fps: int = SYNC_FPS) -> SyncReport:
    """Render a known motion impulse with a known audio click and measure that they come out in one frame.

    The clip (ARKit layout, 2 s) keeps the face neutral except `jawOpen` = 1 for exactly one frame, the
    one starting at t = 1.0 s; the audio (48 kHz WAV) is silent but for a 10 ms click in the middle of that
    frame. `render_fn(clip, audio_path, out_path)` must write a stimulus video of the clip with that audio
    (default: `flash_render`, through the real encoder; plug in the avatar or robot renderer to test it).
    The file must pass `check_stimulus` (else StimulusCheckError); then the picture is decoded and the
    frame that differs most from the median frame is taken as the flash, the sound is decoded and the
    click's onset (first sample above half its peak) is found, and the report says how far apart they are.
    """
    render_fn = render_fn or flash_render
    n_frames = round(SYNC_DURATION_S * fps)
    impulse_frame = round(SYNC_IMPULSE_S * fps)
    neutral = MotionClip(fps=fps, layout="arkit52", values=np.zeros((n_frames, 52), np.float32),
                         head_pose=np.zeros((n_frames, 6), np.float32), metadata={"source": "sync_self_test"})
    values = neutral.values.copy()
    values[impulse_frame, neutral.channels.index("jawOpen")] = 1.0
    clip = neutral.with_values(values)
    click_onset_s = (impulse_frame + 0.5) / fps
    with tempfile.TemporaryDirectory(prefix="sync-self-test-") as scratch:
        audio_path, out_path = Path(scratch) / "click.wav", Path(scratch) / "render.mp4"
        _write_click(audio_path, n_frames / fps, click_onset_s)
        render_fn(clip, audio_path, out_path)
        facts = check_stimulus(out_path)
        luma = _decode_luma(out_path)
        sound = _decode_mono(out_path, SYNC_AUDIO_RATE)
    return _sync_report(luma, sound, fps=facts.fps, impulse_frame=impulse_frame)


def _sync_report(luma: np.ndarray, sound: np.ndarray, *, fps: float, impulse_frame: int) -> SyncReport:
    frame_s = 1.0 / fps
    flash_frame = click_s = None
    if len(luma):
        change = np.abs(luma.astype(np.float32) - np.median(luma, axis=0)).mean(axis=(1, 2))
        if change.max() >= 0.5:  # half a grey level on average: anything less is not a visible impulse
            flash_frame = int(np.argmax(change))
    peak = float(np.abs(sound).max()) if sound.size else 0.0
    if peak >= 1e-3:
        click_s = int(np.argmax(np.abs(sound) >= 0.5 * peak)) / SYNC_AUDIO_RATE
    if flash_frame is None or click_s is None:
        missing = "no frame differs visibly from the others" if flash_frame is None else "the click is not heard"
        return SyncReport(False, fps, impulse_frame, flash_frame, click_s, None, None,
                          f"sync self-test failed: {missing} in the rendered file; does render_fn draw the clip "
                          "and mux the audio it is given?")
    offset_s = (flash_frame + 0.5) * frame_s - click_s
    offset_frames = offset_s / frame_s
    passed = abs(offset_frames) < 0.5
    if passed:
        message = (f"sync self-test passed: the motion impulse shows in frame {flash_frame}, the frame during which "
                   f"the click sounds (offset {offset_s * 1000:+.1f} ms)")
    else:
        late = "late" if offset_s > 0 else "early"
        message = (f"sync self-test failed: the picture is {abs(offset_frames):.1f} frames ({abs(offset_s) * 1000:.0f} ms) "
                   f"{late} against the sound (impulse shown in frame {flash_frame}, click at {click_s:.3f} s, "
                   f"expected frame {int(click_s * fps)}); check the renderer's frame indexing, the rig's latency "
                   "and the audio offset")
    return SyncReport(passed, fps, impulse_frame, flash_frame, click_s, offset_s, offset_frames, message)


def _write_click(path: Path, duration_s: float, onset_s: float) -> None:
    samples = np.zeros(round(duration_s * SYNC_AUDIO_RATE), dtype=np.float64)
    start = round(onset_s * SYNC_AUDIO_RATE)
    t = np.arange(round(SYNC_CLICK_S * SYNC_AUDIO_RATE)) / SYNC_AUDIO_RATE
    samples[start:start + len(t)] = 0.8 * np.sin(2 * np.pi * 1000 * t)
    with wave.open(os.fspath(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SYNC_AUDIO_RATE)
        out.writeframes((samples * 32767).astype("<i2").tobytes())


def _decode_luma(path: Path, size: int = 64) -> np.ndarray:
    """Every frame of the video as size×size 8-bit luma, [T, size, size]; frames kept as they are timed."""
    raw = _ffmpeg_pipe(["-i", os.fspath(path), "-map", "0:v:0", "-fps_mode", "passthrough",
                        "-vf", f"scale={size}:{size}", "-pix_fmt", "gray", "-f", "rawvideo", "pipe:1"], path)
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, size, size)


def _decode_mono(path: Path, sample_rate: int) -> np.ndarray:
    raw = _ffmpeg_pipe(["-i", os.fspath(path), "-map", "0:a:0", "-ac", "1", "-ar", str(sample_rate),
                        "-f", "f32le", "pipe:1"], path)
    return np.frombuffer(raw, dtype="<f4")


def _ffmpeg_pipe(args: list[str], path: Path) -> bytes:
    result = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", *args], capture_output=True,
                            check=False)
    if result.returncode != 0:
        raise StimulusCheckError(path, [f"ffmpeg cannot decode the file ({_tail(result.stderr)})"],
                                 reencode_helps=False)
    return result.stdout


# --- probing -----------------------------------------------------------------------------------------


def _ffprobe(path: str | os.PathLike, *, packets: bool = False) -> dict:
    """ffprobe's format and streams; with `packets`, also every packet's stream and presentation time (one
    ffprobe run for both: each run of it costs tens of milliseconds before it reads a byte)."""
    if not os.path.isfile(path):
        raise StimulusCheckError(path, ["the file does not exist"], reencode_helps=False)
    try:
        if packets:
            return ffmpeg.probe(os.fspath(path), show_entries="packet=stream_index,pts")
        return ffmpeg.probe(os.fspath(path))
    except FileNotFoundError as exc:
        raise RuntimeError("ffprobe is not installed; install ffmpeg (Debian package `ffmpeg`)") from exc
    except ffmpeg.Error as exc:
        reason = _tail(exc.stderr)
        raise StimulusCheckError(
            path, [f"ffprobe cannot read the file as a video ({reason}); it is damaged or not a video"],
            reencode_helps=False,
        ) from exc


def _facts(path: str | os.PathLike, probe: dict) -> StimulusFacts:
    fmt = probe.get("format", {})
    video = _main_video_stream(probe)
    if video is None:
        raise StimulusCheckError(path, ["the file has no video stream"], reencode_helps=False)
    audio = _first_stream(probe, "audio")
    return StimulusFacts(
        duration_s=_stream_duration(video, fmt),
        audio_duration_s=None if audio is None else _stream_duration(audio, fmt),
        width=int(video.get("width") or 0),
        height=int(video.get("height") or 0),
        fps=float(_video_rate(video)),
        video_codec=video.get("codec_name", ""),
        audio_codec="" if audio is None else audio.get("codec_name", ""),
        pix_fmt=video.get("pix_fmt", ""),
        size_bytes=os.path.getsize(path),
        sha256=sha256_of(path),
        faststart=is_faststart(path),
    )


def _main_video_stream(probe: dict) -> dict | None:
    for stream in probe.get("streams", []):
        # Cover art is stored as a one-frame video stream; it is not the picture people watch.
        if stream.get("codec_type") == "video" and not stream.get("disposition", {}).get("attached_pic"):
            return stream
    return None


def _first_stream(probe: dict, codec_type: str) -> dict | None:
    return next((s for s in probe.get("streams", []) if s.get("codec_type") == codec_type), None)


def _fraction(text: str | None) -> Fraction:
    try:
        numerator, _, denominator = (text or "0/0").partition("/")
        return Fraction(int(numerator), int(denominator or 1))
    except (ValueError, ZeroDivisionError):
        return Fraction(0)


def _video_rate(video: dict) -> Fraction:
    return _fraction(video.get("avg_frame_rate")) or _fraction(video.get("r_frame_rate"))


def _stream_duration(stream: dict, fmt: dict) -> float:
    if stream.get("duration") not in (None, "N/A"):
        return float(stream["duration"])
    # Matroska keeps per-stream durations in a tag such as "00:00:01.720000000".
    for key, value in (stream.get("tags") or {}).items():
        if key.lower() == "duration":
            hours, minutes, seconds = value.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return float(fmt.get("duration") or 0.0)


def _top_level_boxes(path: str | os.PathLike) -> list[str]:
    boxes: list[str] = []
    with open(path, "rb") as stream:
        file_size = os.fstat(stream.fileno()).st_size
        offset = 0
        while offset + 8 <= file_size and len(boxes) < 10_000:
            stream.seek(offset)
            size, kind = struct.unpack(">I4s", stream.read(8))
            if size == 1:
                size = struct.unpack(">Q", stream.read(8))[0]
            elif size == 0:  # the box runs to the end of the file
                size = file_size - offset
            if size < 8:
                break  # not an ISO media file, or a damaged one
            boxes.append(kind.decode("latin-1"))
            offset += size
    return boxes


# --- decoding ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Decoded:
    """What one full decode of a file found: ffmpeg's error lines, frames and samples that came out, loudness."""

    errors: list[str]
    video_frames: int | None
    audio_seconds: float | None
    level_dbfs: float


def _decode(path: str | os.PathLike, video: dict | None, audio: dict | None) -> _Decoded:
    """Decode every video frame (counted, then dropped) and the audio (kept, at 16 kHz mono) in one pass."""
    command = ["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-v", "error", "-progress", "pipe:2",
               "-i", os.fspath(path)]
    if audio is not None:
        command += ["-map", f"0:{audio['index']}", "-ac", "1", "-ar", str(LEVEL_SAMPLE_RATE), "-f", "f32le",
                    "pipe:1"]
    if video is not None:
        command += ["-map", f"0:{video['index']}", "-fps_mode", "passthrough", "-f", "null", "-"]
    try:
        result = subprocess.run(command, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise RuntimeError("ffmpeg is not installed; install the Debian package ffmpeg") from exc
    lines = result.stderr.decode("utf-8", "replace").splitlines()
    errors = list(dict.fromkeys(
        _FFMPEG_CONTEXT.sub(r"\1: ", line.strip()) for line in lines if line.strip() and not _PROGRESS_LINE.match(line)
    ))
    if result.returncode != 0 and not errors:
        errors = [f"ffmpeg exited with status {result.returncode}"]
    frames = [int(line.split("=", 1)[1]) for line in lines if line.startswith("frame=")]
    samples = np.frombuffer(result.stdout[: len(result.stdout) // 4 * 4], dtype="<f4")
    rms = math.sqrt(float(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    return _Decoded(
        errors=errors,
        video_frames=(frames[-1] if frames else 0) if video is not None else None,
        audio_seconds=samples.size / LEVEL_SAMPLE_RATE if audio is not None else None,
        level_dbfs=20 * math.log10(rms) if rms > 0 else -math.inf,
    )


def _frame_intervals(probe: dict, video: dict) -> list[int]:
    """Gaps between consecutive frames' presentation times, in the stream's time-base ticks, in display order
    (from the packets listed by `_ffprobe(..., packets=True)`)."""
    index = video["index"]
    times = sorted(packet["pts"] for packet in probe.get("packets", ())
                   if packet.get("stream_index") == index and isinstance(packet.get("pts"), int))
    return [later - earlier for earlier, later in zip(times, times[1:])]


# --- individual rules ----------------------------------------------------------------------------------


def _frame_rate_failures(video: dict, facts: StimulusFacts, *, is_mp4: bool, intervals: list[int]) -> list[str]:
    real_rate = _fraction(video.get("r_frame_rate"))
    average_rate = _fraction(video.get("avg_frame_rate"))
    if not real_rate or not average_rate:
        return ["the video frame rate is unknown; re-encode at a constant rate with -fps_mode cfr -r 25"]
    if real_rate != average_rate:
        suggested = _usual_rate(video, intervals) or real_rate
        return [
            f"the frame rate is variable (base rate {float(real_rate):g} fps, average {float(average_rate):.3f} fps); "
            f"re-encode at a constant rate with -fps_mode cfr -r {_rate_text(suggested)}"
        ]
    if video.get("nb_frames") in (None, "N/A"):
        if not is_mp4:
            return []  # only MP4 records a frame count; the container rule already reports this file
        return [
            "the container does not record a frame count, so a constant frame rate cannot be verified; "
            "re-encode to MP4"
        ]
    frame_count = int(video["nb_frames"])
    expected = facts.duration_s * facts.fps
    if abs(frame_count - expected) > 1 + _TIME_EPSILON_S:
        return [
            f"the video has {frame_count} frames but lasts {facts.duration_s:.3f} s at {facts.fps:g} fps "
            f"(expected {expected:.1f}), so frames are not evenly spaced; "
            f"re-encode at a constant rate with -fps_mode cfr -r {facts.fps:g}"
        ]
    return []


def _usual_rate(video: dict, intervals: list[int]) -> Fraction:
    average = _fraction(video.get("avg_frame_rate"))
    time_base = _fraction(video.get("time_base"))
    if average and time_base and intervals and not _uneven_intervals(intervals, average, time_base):
        return average  # constant already
    if average and (common := _near_common_rate(average)):
        return common
    if len(intervals) >= 2 and time_base:
        commonest = Counter(intervals).most_common(1)[0][0]
        rate = (1 / (commonest * time_base)).limit_denominator(1001)
        return _near_common_rate(rate) or rate
    return _fraction(video.get("r_frame_rate")) or average


def _near_common_rate(rate: Fraction) -> Fraction | None:
    nearest = min(COMMON_FRAME_RATES, key=lambda common: abs(rate / common - 1))
    return nearest if abs(rate / nearest - 1) <= 0.01 else None


def _uneven_intervals(intervals: list[int], rate: Fraction, time_base: Fraction) -> list[int]:
    """The intervals (in ticks) that differ from 1/rate by more than a rounding tick or 2 % of a frame."""
    nominal = 1 / (rate * time_base)  # ticks per frame, possibly fractional
    tolerance = max(1, FRAME_INTERVAL_TOLERANCE * nominal)
    return [gap for gap in intervals if abs(gap - nominal) > tolerance]


def _frame_interval_failures(video: dict, facts: StimulusFacts, intervals: list[int]) -> list[str]:
    """Every frame interval must be 1/fps: an average that comes out right can hide uneven frames."""
    time_base = _fraction(video.get("time_base"))
    rate = _video_rate(video)
    if not time_base or not rate or not intervals:
        return []
    uneven = _uneven_intervals(intervals, rate, time_base)
    if not uneven:
        return []
    ms = [float(gap * time_base) * 1000 for gap in uneven]
    return [
        f"the frame rate is variable: {len(uneven)} of {len(intervals)} frame intervals differ from "
        f"1/{facts.fps:g} s = {1000 / facts.fps:.1f} ms (from {min(ms):.1f} to {max(ms):.1f} ms), though the "
        f"average is {facts.fps:g} fps; re-encode at a constant rate with -fps_mode cfr -r {facts.fps:g}"
    ]


def _damage_failures(decoded: _Decoded, video: dict | None, facts: StimulusFacts) -> list[str]:
    if decoded.errors:
        more = f" and {len(decoded.errors) - 1} more" if len(decoded.errors) > 1 else ""
        return [
            f"the file is damaged: decoding it fails ({_short(decoded.errors[0], 160)}{more}); it may be "
            "truncated or corrupt, so copy or export it again"
        ]
    failures = []
    declared = (video or {}).get("nb_frames")
    if decoded.video_frames is not None and declared not in (None, "N/A") and decoded.video_frames < int(declared) - 1:
        failures.append(
            f"the file is damaged or truncated: only {decoded.video_frames} of its {declared} video frames decode; "
            "copy or export it again"
        )
    frame_s = 1.0 / facts.fps if facts.fps > 0 else 0.04
    if (decoded.audio_seconds is not None and facts.audio_duration_s
            and decoded.audio_seconds < facts.audio_duration_s - frame_s - 0.025):
        failures.append(
            f"the file is damaged or truncated: only {decoded.audio_seconds:.3f} s of its "
            f"{facts.audio_duration_s:.3f} s of audio decode; copy or export it again"
        )
    return failures


def _silence_failures(decoded: _Decoded) -> list[str]:
    if decoded.level_dbfs >= SILENCE_FLOOR_DBFS:
        return []
    level = "digital silence" if decoded.level_dbfs == -math.inf else f"RMS {decoded.level_dbfs:.1f} dBFS"
    return [
        f"the audio is silent ({level} over the whole clip, below the {SILENCE_FLOOR_DBFS:g} dBFS floor); mux "
        "the speech in: a silent track usually means the wrong audio file, a muted export, or an audio offset "
        "past the end of the speech"
    ]


def _rate_text(rate: Fraction) -> str:
    return f"{rate.numerator}/{rate.denominator}" if rate.denominator != 1 else str(rate.numerator)


def _duration_failures(facts: StimulusFacts) -> list[str]:
    if facts.audio_duration_s is None or facts.fps <= 0:
        return []
    frame_s = 1.0 / facts.fps
    gap = facts.audio_duration_s - facts.duration_s
    if abs(gap) <= frame_s + _TIME_EPSILON_S:
        return []
    video_s = f"{facts.duration_s:.3f}"
    return [
        f"audio lasts {facts.audio_duration_s:.3f} s but video lasts {video_s} s "
        f"({abs(gap):.3f} s apart, more than one frame = {frame_s:.3f} s); pad or trim the audio to the "
        f"video's length with -af apad=whole_dur={video_s},atrim=end={video_s}"
    ]


def _metadata_failures(probe: dict, video: dict | None, audio: dict | None) -> list[str]:
    leaks: list[str] = []
    for key, value in (probe.get("format", {}).get("tags") or {}).items():
        if key.lower() not in TECHNICAL_CONTAINER_TAGS:
            leaks.append(f"container {key}={_short(value)!r}")
    for stream in probe.get("streams", []):
        label = "video" if stream is video else "audio" if stream is audio else stream.get("codec_type", "other")
        for key, value in (stream.get("tags") or {}).items():
            if not _is_technical_stream_tag(key, value):
                leaks.append(f"{label} stream {key}={_short(value)!r}")
    if not leaks:
        return []
    return [
        f"metadata is not stripped: {', '.join(leaks)}; tags can reveal the condition, model or utterance, "
        "remux with -map_metadata -1 -fflags +bitexact"
    ]


def _is_technical_stream_tag(key: str, value: str) -> bool:
    key = key.lower()
    if key == "language":
        return value == "und"
    if key == "handler_name":
        return value in GENERIC_HANDLER_NAMES
    if key == "vendor_id":
        return value == EMPTY_VENDOR_ID
    if key == "duration":  # Matroska's per-stream length; such files fail the container rule anyway
        return True
    return False


def _short(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _tail(stderr: bytes | str | None, limit: int = 400) -> str:
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    text = " ".join((stderr or "").split())
    return text[-limit:] if text else "no message"
