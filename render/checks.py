"""The checks every stimulus video must pass before a study may use it, rendered, captured or uploaded.

`probe_stimulus` reports what a file is (ffprobe plus the MP4 box order and a SHA-256);
`check_stimulus` applies the platform's rule and raises `StimulusCheckError` listing every failure in
words a researcher can act on: what is wrong and the ffmpeg option that fixes it.

The rule (see "Stimulus videos" in the design): an MP4 with H.264 video in yuv420p at even width and
height, AAC audio, moov before mdat (+faststart), a constant frame rate, audio and video durations equal
within one video frame, no streams beyond one video and one audio, and no metadata beyond the purely
technical tags every muxer writes, so that nothing in a file can reveal its condition, model or utterance.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import ffmpeg

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

_HASH_CHUNK = 1 << 20
_TIME_EPSILON_S = 1e-6


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
    """A file is not a usable stimulus; `failures` lists every failed check in words."""

    def __init__(self, path: str | os.PathLike, failures: list[str]):
        self.path = str(path)
        self.failures = list(failures)
        listing = "\n".join(f"- {failure}" for failure in self.failures)
        super().__init__(
            f"{Path(path).name} is not a usable stimulus video:\n{listing}\n"
            f"A re-encode that meets the format rules: {REENCODE}"
        )


def probe_stimulus(path: str | os.PathLike) -> StimulusFacts:
    """Measure a video file. Raises StimulusCheckError if ffprobe cannot read it or it has no video."""
    probe = _ffprobe(path)
    return _facts(path, probe)


def check_stimulus(path: str | os.PathLike) -> StimulusFacts:
    """Return the file's facts if it passes every stimulus check, else raise StimulusCheckError."""
    probe = _ffprobe(path)
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

    if audio is None:
        failures.append("no audio stream; mux the speech in as AAC with -c:a aac -b:a 128k")
    elif facts.audio_codec != "aac":
        failures.append(
            f"audio codec is {facts.audio_codec or 'unknown'}; re-encode the audio with -c:a aac -b:a 128k"
        )

    if is_mp4 and not facts.faststart:  # other containers have no moov box; the MP4 rule covers them
        failures.append(
            "the moov box does not come before the media data (no +faststart), so browsers must load the "
            "whole file before playing; remux with -movflags +faststart"
        )

    failures.extend(_frame_rate_failures(video, facts, is_mp4=is_mp4))
    failures.extend(_duration_failures(facts))
    failures.extend(_metadata_failures(probe, video, audio))

    if failures:
        raise StimulusCheckError(path, failures)
    return facts


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


# --- probing -----------------------------------------------------------------------------------------


def _ffprobe(path: str | os.PathLike) -> dict:
    if not os.path.isfile(path):
        raise StimulusCheckError(path, ["the file does not exist"])
    try:
        return ffmpeg.probe(os.fspath(path))
    except FileNotFoundError as exc:
        raise RuntimeError("ffprobe is not installed; install ffmpeg (Debian package `ffmpeg`)") from exc
    except ffmpeg.Error as exc:
        reason = _tail(exc.stderr)
        raise StimulusCheckError(
            path, [f"ffprobe cannot read the file as a video ({reason})"]
        ) from exc


def _facts(path: str | os.PathLike, probe: dict) -> StimulusFacts:
    fmt = probe.get("format", {})
    video = _main_video_stream(probe)
    if video is None:
        raise StimulusCheckError(path, ["the file has no video stream"])
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


# --- individual rules ----------------------------------------------------------------------------------


def _frame_rate_failures(video: dict, facts: StimulusFacts, *, is_mp4: bool) -> list[str]:
    real_rate = _fraction(video.get("r_frame_rate"))
    average_rate = _fraction(video.get("avg_frame_rate"))
    if not real_rate or not average_rate:
        return ["the video frame rate is unknown; re-encode at a constant rate with -fps_mode cfr -r 25"]
    if real_rate != average_rate:
        return [
            f"the frame rate is variable (base rate {float(real_rate):g} fps, average {float(average_rate):.3f} fps); "
            f"re-encode at a constant rate with -fps_mode cfr -r {float(real_rate):g}"
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
