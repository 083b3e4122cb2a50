"""Filming a robot as a stimulus: play a condition's motor trajectory with the speech and a sync marker, record
it with a camera, find where the motion really is in the recording, cut it, put the clean speech under it and
encode it through the same encoder and checks as rendered stimuli. Also the robot's calibration (end-to-end
latency and each actuator's response) and the robot + camera health check. Pure library: no Django here
(studies/capturing.py runs it for a study's `robot_physical` cells).

The timeline of one capture (times from `start_at`, all frame-aligned at the stimulus frame rate)::

    0 ......... t_m ── marker ── rest ── frame-0 pose ── t_s ── trajectory (T frames) ── hold last ── tail_s
                 click                                     speech (the clean source, T / fps long)

At `t_m` the speaker plays a click while the marker actuators (by default the fastest ones, e.g. the eyelids:
a blink) move from rest to the far end of their travel and back: an audible click and a known motion impulse.
Then the robot takes the trajectory's first pose and waits; at `t_s` the speech and the trajectory start
together; after the last frame the robot holds for `tail_s` so a robot that is late is still filmed.

Finding the offset. The recording's own timeline is the reference (camera and microphone on one clock, so the
unknown instant the camera started cancels out):

- the marker: a frame that differs from the one before by more than the picture's noise starts the marker's
  pulse in the picture; against the still frames just before it, the picture's change rises as the marker
  actuators travel, holds, and falls as they return. A speed-limited servo rises and falls alike, so the pulse
  is symmetric in time whatever the (unknown, nonlinear) relation between travel and pixels: its centre, the
  midpoint of its two half-height crossings (interpolated between frames), lies half the commanded hold plus
  half the travel time after the motion began. So motion commanded at `t_m` shows at `onset = centre −
  (hold + travel time) / 2` (travel time from the calibrated speed, else the profile's `max_speed`), and motion
  commanded at `t_s` at `v_start = onset + (t_s − t_m)` — whatever the link latency, jitter or camera delay;
- the audio: the recorded track is cross-correlated with the track the speaker played (click + speech), which
  places the played track in the recording (`audio_offset_ms`) and proves it was heard; the marker's latency
  relative to the sound is reported (`latency_ms`, and `residual_ms` against the calibration). Without a
  visible marker (`marker=False`, or a camera that cannot see it) the cut falls back to the sound plus the
  calibrated latency; with neither the capture fails.

Cutting. The stimulus's frame k is the recorded frame nearest `v_cut + k / fps`, where `v_cut` is the first
recorded frame at or after `v_start` (dropped frames are filled by their neighbours); the clean speech starts
`v_cut − v_start` (less than a frame) later than the segment, so the sub-frame part of the offset is kept in
the sound instead of being rounded away. The result goes through `render.encode.encode_stimulus`: H.264
yuv420p, AAC, constant frame rate, faststart, no metadata, `check_stimulus` before it is renamed into place.

Faults. On any error, a cancel (`cancel` event) or a timeout the robot is stopped and sent to neutral, the
recording is discarded, nothing is written at `out_path` and `CaptureError` says why. A robot or camera lost in
the middle (`DeviceLost`) is reconnected and the stimulus is captured again from its start, `retries` times.
"""
from __future__ import annotations

import dataclasses
import math
import shutil
import subprocess
import tempfile
import threading
import time
import wave
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from render.hardware.base import DeviceLost, HardwareError, check_trajectory
from render.hardware.camera import probe_recording, read_audio

PRE_ROLL_S = 0.3          # from the call to the timeline's 0: the camera is filming still frames
MARKER_AT_S = 0.4         # the click and the marker impulse, after the timeline's 0
MARKER_GAP_S = 0.3        # stillness after the marker, before the robot takes the trajectory's first pose
POSE_SETTLE_S = 0.2       # the robot reaches the trajectory's first pose this long before the speech
LOCAL_STILL_FRAMES = 5    # still frames a step is measured against
DEADBAND_SIGMAS = 4       # a pixel's change within this many σ of its still wobble is not motion
MIN_JUMP = 0.02           # the least frame-to-frame change (grey levels beyond the deadband, mean) that is motion
ANALYSIS_WIDTH = 96        # frames are compared in grey at this width (averaging away sensor noise and codec grain)
PLAY_RATE = 48_000        # the played track's sample rate
CORRELATION_RATE = 16_000
MIN_CORRELATION = 0.3     # below this the played sound is taken as not heard in the recording
CLICK_S = 0.004


class CaptureError(HardwareError):
    """A capture failed; the message says why. The robot was sent to neutral and nothing was stored."""


class CaptureCancelled(CaptureError):
    """The capture was cancelled (the `cancel` event was set)."""


@dataclass
class CaptureSettings:
    """How a capture runs. `size` is the stimulus's (width, height) (None: the recording's, made even);
    `tail_s` how long the robot holds after the last frame (must exceed its latency); `retries` how often a
    lost robot or camera is reconnected and the stimulus captured again; `timeout_s` how much longer than
    planned a capture may take before it is stopped (None: 5 s + half the plan); `marker` whether the
    click and motion impulse are played."""

    fps: float = 25.0
    size: tuple[int, int] | None = None
    tail_s: float = 0.8
    crf: int | None = None
    retries: int = 1
    timeout_s: float | None = None
    marker: bool = True

    def __post_init__(self):
        problems = []
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and self.fps > 0):
            problems.append(f"fps must be a positive number, got {self.fps!r}")
        if self.size is not None:
            try:
                w, h = (int(v) for v in self.size)
            except (TypeError, ValueError):
                w = h = -1
            if w <= 0 or h <= 0 or w % 2 or h % 2:
                problems.append(f"size must be two positive even numbers (width, height), got {self.size!r}")
            else:
                self.size = (w, h)
        if not (isinstance(self.tail_s, (int, float)) and 0 <= self.tail_s <= 10):
            problems.append(f"tail_s must be 0–10 seconds, got {self.tail_s!r}")
        if not (isinstance(self.retries, int) and 0 <= self.retries <= 10):
            problems.append(f"retries must be a whole number 0–10, got {self.retries!r}")
        if self.timeout_s is not None and not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0):
            problems.append(f"timeout_s must be positive seconds or None, got {self.timeout_s!r}")
        if problems:
            raise CaptureError("capture settings: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict | None) -> "CaptureSettings":
        data = dict(data or {})
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise CaptureError(f"capture settings: unknown keys {', '.join(unknown)}; known: "
                               f"{', '.join(f.name for f in dataclasses.fields(cls))}")
        if data.get("size") is not None:
            data["size"] = tuple(data["size"])
        return cls(**data)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["size"] = list(self.size) if self.size else None
        return data


@dataclass
class CaptureResult:
    """A captured stimulus: the checked file, its facts, how it was synchronised, what the robot played."""

    path: Path
    facts: object
    sync: dict
    play: dict
    recording: dict = field(repr=False)
    attempts: int = 1


# --- the speaker ---------------------------------------------------------------------------------------------


class _CameraSpeaker:
    """A simulated camera's own speaker: the sound lands in its recording."""

    def __init__(self, camera):
        self.camera = camera

    def play(self, wav_path, at: float) -> None:
        self.camera.play_audio(wav_path, at)

    def wait(self, timeout: float | None = None) -> None:
        return None


class FFmpegSpeaker:
    """Plays a WAV on a sound card through ffmpeg (`alsa:default`, `alsa:hw:1,0`, `pulse:default`) at a
    `time.monotonic()` instant. ffmpeg's start-up delay does not matter: the capture measures where the
    sound and the marker landed."""

    OUTPUTS = ("alsa", "pulse")

    def __init__(self, device: str = "alsa:default"):
        kind, _sep, name = device.partition(":")
        if kind not in self.OUTPUTS or not name:
            raise HardwareError(f"speaker device {device!r}: expected alsa:NAME or pulse:NAME (e.g. alsa:default)")
        self.kind, self.name = kind, name
        self._thread: threading.Thread | None = None
        self._error: str | None = None

    def play(self, wav_path, at: float) -> None:
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise HardwareError("ffmpeg is not installed; it plays the sound of a capture")
        command = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(wav_path),
                   "-f", self.kind, self.name]

        def run():
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                self._error = result.stderr.strip()[-300:] or f"ffmpeg exited with {result.returncode}"

        self._error = None
        self._thread = threading.Thread(target=run, name="speaker", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
        if self._error:
            raise HardwareError(f"the speaker ({self.kind}:{self.name}) could not play: {self._error}")


def speaker_for(camera, device: str | None = None):
    """The speaker of a capture: the simulated camera's own (its recording hears it), else `device` through
    ffmpeg (default alsa:default)."""
    if device is None and hasattr(camera, "play_audio"):
        return _CameraSpeaker(camera)
    return FFmpegSpeaker(device or "alsa:default")


# --- health ---------------------------------------------------------------------------------------------------


def health(robot, camera) -> dict:
    """Whether the robot and the camera answer now: {"ok", "robot": {"ok", "detail"}, "camera": {…}}."""
    report = {}
    for name, device in (("robot", robot), ("camera", camera)):
        try:
            report[name] = dict(device.health())
        except Exception as exc:   # a probe that fails is an answer too
            report[name] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
    report["ok"] = all(report[name]["ok"] for name in ("robot", "camera"))
    return report


# --- the plan ---------------------------------------------------------------------------------------------


def _servos(profile: dict):
    from render.robot import servo_from_dict

    return [servo_from_dict(a) for a in profile["actuators"]]


def marker_actuators(profile: dict) -> list[tuple[int, float]]:
    """The actuators that make the motion impulse and where they go: (column, target). The profile's
    `extra.sync_marker` ({"actuators": [names], "to": value or {name: value}}) decides; else the fastest
    actuators (highest max_speed, all those within 10 % of it) go to the far end of their travel."""
    servos = _servos(profile)
    names = [s.name for s in servos]
    chosen = (profile.get("extra") or {}).get("sync_marker")
    if chosen:
        wanted = chosen.get("actuators") or []
        unknown = [n for n in wanted if n not in names]
        if unknown or not wanted:
            raise CaptureError(f"robot {profile.get('name')!r}: extra.sync_marker.actuators must name actuators of "
                               f"the profile ({', '.join(names)}); got {wanted!r}")
        to = chosen.get("to")
        out = []
        for name in wanted:
            s = servos[names.index(name)]
            target = to.get(name) if isinstance(to, dict) else to
            if target is None:
                target = s.upper if s.upper - s.rest >= s.rest - s.lower else s.lower
            out.append((names.index(name), float(min(max(float(target), s.lower), s.upper))))
        return out
    speeds = [s.max_speed if s.max_speed is not None else math.inf for s in servos]
    top = max(speeds)
    out = []
    for j, s in enumerate(servos):
        if speeds[j] >= top * 0.9:
            out.append((j, s.upper if s.upper - s.rest >= s.rest - s.lower else s.lower))
    return out


def _time_to_fraction(servo, travel: float, fraction: float, speed: float | None) -> float:
    """Seconds a servo takes to cover `fraction` of a step of `travel` (speed-limited ramp, then the
    first-order lag's exponential approach; the model of render.robot)."""
    speed = speed if speed else (servo.max_speed or math.inf)
    tau = servo.time_constant_ms / 1000.0
    if travel <= 0:
        return 0.0
    if tau == 0:
        return fraction * travel / speed if math.isfinite(speed) else 0.0
    band = speed * tau
    ramp = (travel - band) / speed if travel > band else 0.0
    remaining = (1 - fraction) * travel
    if remaining >= band:
        return (travel - remaining) / speed
    return ramp + tau * math.log(min(travel, band) / remaining)


@dataclass
class _Plan:
    fps: float
    timeline: np.ndarray         # [frames, n] every command the robot plays
    marker_frame: int | None
    speech_frame: int
    n_frames: int                # the stimulus's frames (the trajectory's)
    marker_hold_s: float
    marker_travel_s: float       # marker actuators' time to travel from rest to the marker's target
    marker_back_s: float         # after the marker's onset, the instant it is back at rest and all is still
    track: np.ndarray            # the played sound, PLAY_RATE mono float32

    @property
    def t_m(self) -> float:
        return self.marker_frame / self.fps

    @property
    def t_s(self) -> float:
        return self.speech_frame / self.fps

    @property
    def duration_s(self) -> float:
        return len(self.timeline) / self.fps


def _plan(profile: dict, commands: np.ndarray, fps: float, speech: np.ndarray, settings: CaptureSettings,
          calibration: dict | None) -> _Plan:
    servos = _servos(profile)
    rest = np.array([s.rest for s in servos])
    frames = lambda seconds: int(math.ceil(seconds * fps - 1e-9))   # noqa: E731
    marker = marker_actuators(profile) if settings.marker else []
    hold_s, travel_s, reach_s = 0.0, 0.0, 0.0
    calibrated = (calibration or {}).get("actuators") or {}
    if marker:
        travel = [(servos[j], abs(target - servos[j].rest)) for j, target in marker]
        reach_s = max(_time_to_fraction(s, d, 0.99, (calibrated.get(s.name) or {}).get("speed_per_s"))
                      for s, d in travel)
        hold_s = frames(reach_s + 1.0 / fps) / fps
        travel_s = float(np.mean([_time_to_fraction(s, d, 1.0, (calibrated.get(s.name) or {}).get("speed_per_s"))
                                  if not s.time_constant_ms else reach_s for s, d in travel]))
    m = frames(MARKER_AT_S)
    # The marker returns to rest and the robot stands still for MARKER_GAP_S before it takes the first pose.
    back_s = hold_s + reach_s + MARKER_GAP_S / 2 if marker else 0.0
    # Time to take the first pose: the slowest actuator's travel from rest, then a moment to settle.
    pose_lead_s = max(_time_to_fraction(s, abs(float(c) - s.rest), 0.99,
                                        (calibrated.get(s.name) or {}).get("speed_per_s"))
                      for s, c in zip(servos, commands[0])) + POSE_SETTLE_S
    s_frame = frames(MARKER_AT_S + hold_s + reach_s + MARKER_GAP_S + pose_lead_s)
    tail = frames(settings.tail_s)
    T = len(commands)
    timeline = np.empty((s_frame + T + tail, len(servos)))
    timeline[:s_frame] = rest
    if marker:
        h = frames(hold_s)
        for j, target in marker:
            timeline[m:m + h, j] = target
    timeline[s_frame - frames(pose_lead_s):s_frame] = commands[0]
    timeline[s_frame:s_frame + T] = commands
    timeline[s_frame + T:] = commands[-1]
    track = np.zeros(int(round(len(timeline) / fps * PLAY_RATE)), np.float32)
    if marker:
        start = int(round(m / fps * PLAY_RATE))
        n_click = int(CLICK_S * PLAY_RATE)
        t = np.arange(n_click) / PLAY_RATE
        track[start:start + n_click] = 0.9 * np.sin(2 * np.pi * 2000 * t) * np.hanning(n_click)
    start = int(round(s_frame / fps * PLAY_RATE))
    piece = speech[:max(0, len(track) - start)]
    track[start:start + len(piece)] += piece
    return _Plan(fps=fps, timeline=timeline, marker_frame=m if marker else None, speech_frame=s_frame, n_frames=T,
                 marker_hold_s=hold_s, marker_travel_s=travel_s, marker_back_s=back_s, track=np.clip(track, -1, 1))


def _write_wav(path: Path, samples: np.ndarray, rate: int = PLAY_RATE) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).round().astype("<i2").tobytes())


def _speech(audio, offset_s: float, n_frames: int, fps: float) -> np.ndarray:
    """The clean speech of the stimulus: from `offset_s`, n_frames / fps long (padded with silence)."""
    samples = read_audio(audio, PLAY_RATE)
    start = int(round(offset_s * PLAY_RATE))
    if start >= len(samples):
        raise CaptureError(f"audio_offset_s {offset_s:.3f} s lies beyond the end of {Path(audio).name} "
                           f"({len(samples) / PLAY_RATE:.3f} s)")
    length = int(round(n_frames / fps * PLAY_RATE))
    piece = samples[start:start + length]
    return np.pad(piece, (0, length - len(piece)))


# --- running it -----------------------------------------------------------------------------------------------


class _Watchdog:
    """Stops the robot when the capture is cancelled or runs past its deadline."""

    def __init__(self, robot, cancel: threading.Event | None, deadline: float):
        self.robot, self.cancel, self.deadline = robot, cancel, deadline
        self.reason: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="capture-watchdog", daemon=True)
        self._thread.start()

    def _watch(self):
        while not self._done.is_set():
            if self.cancel is not None and self.cancel.is_set():
                self.reason = "cancelled"
            elif time.monotonic() > self.deadline:
                self.reason = "timeout"
            if self.reason:
                self.robot.stop()
                return
            self._done.wait(0.02)

    def close(self):
        self._done.set()
        self._thread.join()


def _neutral(robot) -> str | None:
    """Send the robot to neutral; the reason it could not be, or None."""
    try:
        robot.stop()
        robot.neutral()
        return None
    except Exception as exc:   # the capture's own error is the one reported; this is added to it
        return f"{type(exc).__name__}: {exc}"


def _record(robot, camera, speaker, plan: _Plan, workdir: Path, settings: CaptureSettings,
            cancel: threading.Event | None) -> tuple[dict, dict]:
    """Play the plan while the camera films; returns (recording info, play info)."""
    track = workdir / "played.wav"
    _write_wav(track, plan.track)
    recording_path = workdir / "recording.mkv"
    robot.neutral()
    camera.start(recording_path)
    started = True
    try:
        start_at = time.monotonic() + PRE_ROLL_S
        speaker.play(track, start_at)
        extra = settings.timeout_s if settings.timeout_s is not None else 5.0 + 0.5 * plan.duration_s
        watchdog = _Watchdog(robot, cancel, start_at + plan.duration_s + extra)
        try:
            report = robot.play(plan.timeline, plan.fps, start_at=start_at)
        finally:
            watchdog.close()
        if watchdog.reason == "cancelled":
            raise CaptureCancelled(f"the capture was cancelled after {report.frames} of {len(plan.timeline)} frames")
        if watchdog.reason == "timeout" or report.frames < len(plan.timeline):
            raise CaptureError(f"the robot played {report.frames} of {len(plan.timeline)} frames in the "
                               f"{plan.duration_s + extra:.1f} s allowed; the capture timed out")
        if hasattr(speaker, "wait"):
            speaker.wait(timeout=5.0)
        if hasattr(camera, "check"):
            camera.check()
        info = camera.stop()
        started = False
        if not info.get("has_audio") and plan.marker_frame is None:
            raise CaptureError("the camera recorded no sound and no marker was played: nothing says where the "
                               "motion is in the recording; give the camera an audio input or turn the marker on")
        return info, {"frames": plan.n_frames, "clamped": report.clamped, "timeline_frames": len(plan.timeline),
                      "started_at": report.started_at, "start_at": start_at}
    finally:
        if started:
            try:
                camera.stop()
            except Exception:   # the recording is thrown away; the first error is the one reported
                pass


def capture_stimulus(robot, camera, trajectory, fps: float, audio, out_path, *, audio_offset_s: float = 0.0,
                     settings: CaptureSettings | dict | None = None, speaker=None,
                     cancel: threading.Event | None = None, progress=None,
                     calibration: dict | None = None, overlay_text: str | None = None) -> CaptureResult:
    """Film `robot` playing `trajectory` ([T, n] commands, the robot's profile order) at `fps` with the speech
    of `audio` (from `audio_offset_s`; silence after it when the trajectory is longer), and write the checked
    stimulus to `out_path`; see the module docstring. `overlay_text` is drawn on the stimulus as the renderer
    draws an attention check's instruction (render.overlays). The robot must be connected. Raises
    CaptureError (robot at neutral, nothing written) on failure."""
    settings = settings if isinstance(settings, CaptureSettings) else CaptureSettings.from_dict(settings)
    if abs(float(fps) - settings.fps) > 1e-9:
        settings = dataclasses.replace(settings, fps=float(fps))
    progress = progress or (lambda stage: None)
    profile = robot.describe()
    try:
        commands, _clamped = check_trajectory(trajectory, profile)
    except HardwareError as exc:
        reason = _neutral(robot)
        raise CaptureError(f"{exc}" + (f" (and the robot could not go to neutral: {reason})" if reason else "")) from exc
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".mp4" or not out_path.parent.is_dir():
        raise CaptureError(f"the stimulus must go to a .mp4 in an existing folder, got {out_path}")
    speech = _speech(audio, audio_offset_s, len(commands), settings.fps)
    plan = _plan(profile, commands, settings.fps, speech, settings, calibration)
    speaker = speaker or speaker_for(camera)
    attempts = 0
    while True:
        attempts += 1
        workdir = Path(tempfile.mkdtemp(prefix=".capture-", dir=out_path.parent))
        try:
            progress("recording" if attempts == 1 else f"recording (attempt {attempts})")
            recording, play = _record(robot, camera, speaker, plan, workdir, settings, cancel)
            _neutral(robot)
            progress("synchronising")
            recorded = _analyse(workdir / "recording.mkv", plan.track)
            sync = _synchronise(recorded, plan, recording, calibration)
            progress("encoding")
            facts = _cut_and_encode(workdir / "recording.mkv", recorded, plan, sync, audio, audio_offset_s, out_path,
                                    settings, overlay_text)
            return CaptureResult(path=out_path, facts=facts, sync=sync, play=play, recording=recording,
                                 attempts=attempts)
        except DeviceLost as exc:
            reason = _neutral(robot)
            if attempts > settings.retries:
                raise CaptureError(f"{exc}; gave up after {attempts} attempt(s)"
                                   + (f"; the robot could not go to neutral: {reason}" if reason else "")) from exc
            progress(f"device lost ({exc}); reconnecting and capturing again from the start")
            try:
                robot.connect()
            except HardwareError as again:
                raise CaptureError(f"{exc}; reconnecting failed: {again}") from again
        except CaptureError:
            _neutral(robot)
            raise
        except Exception as exc:
            reason = _neutral(robot)
            raise CaptureError(f"{exc}" + (f" (and the robot could not go to neutral: {reason})" if reason else "")
                               ) from exc
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


# --- synchronisation ------------------------------------------------------------------------------------------


def _ffprobe_start_times(path: Path) -> dict:
    import json

    result = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,start_time,width,height",
                             "-of", "json", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise CaptureError(f"ffprobe cannot read the recording: {result.stderr.strip()[-300:]}")
    out = {}
    for stream in json.loads(result.stdout).get("streams", []):
        kind = stream.get("codec_type")
        if kind in ("video", "audio") and kind not in out:
            out[kind] = stream
    return out


def _grey_frames(path: Path, width: int, height: int) -> np.ndarray:
    """Every recorded frame, in order, grey, ANALYSIS_WIDTH wide: [frames, h, w] float32."""
    w = min(ANALYSIS_WIDTH, width) // 2 * 2
    h = max(2, int(round(height * w / width)) // 2 * 2)
    result = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
                             "-vf", f"scale={w}:{h}:flags=area,format=gray", "-f", "rawvideo", "-"],
                            capture_output=True)
    if result.returncode != 0:
        raise CaptureError(f"cannot decode the recording: {result.stderr.decode(errors='replace').strip()[-300:]}")
    return np.frombuffer(result.stdout, np.uint8).reshape(-1, h, w).astype(np.float32)


@dataclass
class _Picture:
    """A recording's frames in grey and how much a still pixel wobbles between frames (sensor noise, codec
    grain): differences within `deadband` levels are not motion."""

    times: np.ndarray
    grey: np.ndarray
    deadband: float
    jumps: np.ndarray = field(init=False)
    jump_threshold: float = field(init=False)

    def __post_init__(self):
        self.jumps = np.zeros(len(self.grey))
        self.jumps[1:] = [self.change(self.grey[k], self.grey[k - 1]) for k in range(1, len(self.grey))]

    def change(self, frame: np.ndarray, reference: np.ndarray) -> float:
        """How far a frame differs from a reference: the mean of each pixel's difference beyond the deadband."""
        return float(np.maximum(np.abs(frame - reference) - self.deadband, 0.0).mean())

    @classmethod
    def of(cls, times: np.ndarray, grey: np.ndarray, still_frames: int) -> "_Picture":
        still = grey[:still_frames]
        wobble = np.abs(np.diff(still, axis=0))
        sigma = float(np.median(wobble)) * 1.4826 / math.sqrt(2) if len(wobble) else 0.0
        picture = cls(times=times, grey=grey, deadband=max(DEADBAND_SIGMAS * sigma, 1.0))
        calm = picture.jumps[1:still_frames]
        floor = float(np.median(calm)) if len(calm) else 0.0
        spread = float(np.median(np.abs(calm - floor))) * 1.4826 if len(calm) else 0.0
        picture.jump_threshold = floor + max(8 * spread, MIN_JUMP)
        return picture


def _crossing(times: np.ndarray, values: np.ndarray, level: float, first: int, last: int) -> float | None:
    """The instant `values` first reaches `level` within frames first..last, interpolated between frames."""
    for k in range(max(first, 1), last + 1):
        if values[k] >= level:
            below = values[k - 1]
            if below >= level:
                return float(times[k - 1])
            return float(times[k - 1] + (level - below) / (values[k] - below) * (times[k] - times[k - 1]))
    return None


def _step_response(picture: _Picture, *, after: float, until: float, window_s: float,
                   back_after_s: float | None = None) -> dict | None:
    """The first pulse in the picture between instants `after` and `until`: {"t10", "t50", "t90" (its rise
    crossing those parts of its height), "down50" (its fall crossing half height; None when it does not fall
    within `window_s`), "centre" (midpoint of t50 and down50), "peak"}, or None when nothing moves visibly.

    The first frame that jumps from its predecessor by more than noise marks the motion; the pulse is then
    measured against the median of the still frames just before it (a local reference, so the slow drift of
    a codec's grain or a camera's exposure does not count as motion) over `window_s`. With `back_after_s`,
    the picture must be back near the reference that long after the pulse began (the marker returns to rest
    before anything else moves); a pulse that does not is not the marker.
    """
    times, grey = picture.times, picture.grey
    moving = np.nonzero((times >= after) & (times <= until) & (picture.jumps > picture.jump_threshold))[0]
    if len(moving) == 0:
        return None
    k1 = int(moving[0])
    first = max(0, k1 - 1 - LOCAL_STILL_FRAMES)
    if k1 - 1 - first < 2:
        return None   # not enough still frames before it to say where it started from
    reference = np.median(grey[first:k1 - 1], axis=0)
    last = int(np.searchsorted(times, times[k1] + window_s, side="right"))
    change = np.array([picture.change(frame, reference) for frame in grey[first:last]])
    floor = float(change[:k1 - 1 - first].mean())
    k_peak = int(np.argmax(change))
    peak = float(change[k_peak])
    if peak - floor <= picture.jump_threshold:
        return None
    if back_after_s is not None:
        k_back = int(np.searchsorted(times, times[k1] + back_after_s))
        if k_back >= len(grey) or picture.change(grey[k_back], reference) > floor + 0.3 * (peak - floor):
            return None
    local = times[first:last]
    start = k1 - 1 - first
    half = floor + 0.5 * (peak - floor)
    up = {f"t{round(f * 100)}": _crossing(local, change, floor + f * (peak - floor), start, k_peak)
          for f in (0.1, 0.5, 0.9)}
    down = None
    for k in range(k_peak + 1, len(change)):
        if change[k] <= half:
            above = change[k - 1]
            down = float(local[k - 1] + (above - half) / (above - change[k]) * (local[k] - local[k - 1]))
            break
    centre = (up["t50"] + down) / 2 if up["t50"] is not None and down is not None else None
    return {**up, "down50": down, "centre": centre, "peak": peak - floor}


def _baseline_frames(times: np.ndarray) -> int:
    """The still frames at the start of a recording: those within its first PRE_ROLL_S."""
    return max(3, int(np.searchsorted(times, times[0] + PRE_ROLL_S * 0.9)))


def _audio_position(recording: Path, played: np.ndarray, audio_start: float) -> tuple[float, float]:
    """Where the played track starts in the recording's timeline (seconds) and the normalised correlation."""
    from scipy.signal import correlate, resample_poly

    heard = read_audio(recording, CORRELATION_RATE).astype(np.float64)
    ref = resample_poly(played.astype(np.float64), CORRELATION_RATE, PLAY_RATE)
    if len(heard) < len(ref) // 2 or not np.any(ref):
        return math.nan, 0.0
    score = correlate(heard, ref, mode="full", method="fft")
    # Normalise by the energy of the recording under the reference at each lag.
    energy = np.concatenate([[0.0], np.cumsum(heard ** 2)])
    lags = np.arange(-len(ref) + 1, len(heard))
    lo, hi = np.clip(lags, 0, len(heard)), np.clip(lags + len(ref), 0, len(heard))
    norm = np.sqrt(np.maximum(energy[hi] - energy[lo], 1e-12) * float(np.sum(ref ** 2)))
    coefficient = score / norm
    coefficient[(lags < 0) | (lags > len(heard) - len(ref) // 2)] = 0.0
    best = int(np.argmax(coefficient))
    # Parabolic refinement of the peak to a fraction of a sample.
    frac = 0.0
    if 0 < best < len(score) - 1:
        a, b, c = score[best - 1], score[best], score[best + 1]
        if a - 2 * b + c < 0:
            frac = 0.5 * (a - c) / (a - 2 * b + c)
    return audio_start + (lags[best] + frac) / CORRELATION_RATE, float(coefficient[best])


@dataclass
class _Recorded:
    """What a recording holds, read once: its frames (`picture`), their size, and where the played track lies in
    its sound (`audio_at`, seconds of its timeline; NaN when it has no sound) with the correlation found."""

    picture: _Picture
    size: tuple[int, int]
    audio_at: float
    correlation: float

    @property
    def times(self) -> np.ndarray:
        return self.picture.times

    @property
    def heard(self) -> bool:
        return self.correlation >= MIN_CORRELATION


def _analyse(recording: Path, played: np.ndarray) -> _Recorded:
    streams = _ffprobe_start_times(recording)
    video = streams.get("video")
    if video is None:
        raise CaptureError("the recording holds no video")
    times = probe_recording(recording, None)["frame_times"]
    size = (int(video["width"]), int(video["height"]))
    grey = _grey_frames(recording, *size)
    if len(grey) != len(times):
        raise CaptureError(f"the recording's {len(times)} frame timestamps and {len(grey)} decoded frames differ")
    audio_at, correlation = math.nan, 0.0
    if "audio" in streams:
        audio_at, correlation = _audio_position(recording, played, float(streams["audio"].get("start_time") or 0))
    return _Recorded(picture=_Picture.of(times, grey, _baseline_frames(times)), size=size, audio_at=audio_at,
                     correlation=correlation)


def _synchronise(recorded: _Recorded, plan: _Plan, info: dict, calibration: dict | None) -> dict:
    """Where motion commanded at the speech's start shows in the recording (`v_start`, seconds of its
    timeline), and the evidence; raises CaptureError when neither the marker nor the sound can say."""
    times, audio_at, heard = recorded.times, recorded.audio_at, recorded.heard
    sync = {"recorded_frames": int(len(times)), "dropped": int(info.get("dropped", 0)),
            "correlation": round(recorded.correlation, 4),
            "audio_offset_ms": round(audio_at * 1000, 2) if heard else None}
    step = None
    if plan.marker_frame is not None:
        after = audio_at + plan.t_m if heard else float(times[0])
        step = _step_response(recorded.picture, after=after, until=math.inf, back_after_s=plan.marker_back_s,
                              window_s=plan.marker_back_s)
        if step is not None and step["centre"] is None:
            step = None
    calibrated = (calibration or {}).get("latency_ms")
    if step is not None:
        onset = step["centre"] - (plan.marker_hold_s + plan.marker_travel_s) / 2
        v_start = onset + (plan.t_s - plan.t_m)
        latency = (onset - (audio_at + plan.t_m)) * 1000 if heard else None
        sync.update(method="marker+audio" if heard else "marker", marker_onset_s=round(onset, 5),
                    marker_peak=round(step["peak"], 3), marker_travel_ms=round(plan.marker_travel_s * 1000, 2))
    elif heard and calibrated is not None:
        v_start = audio_at + plan.t_s + float(calibrated) / 1000
        latency = float(calibrated)
        sync.update(method="audio+calibration")
    else:
        why = ("no marker was played" if plan.marker_frame is None else
               "the marker impulse was not seen (is the robot in the picture, lit, and are the marker actuators "
               "visible?)")
        also = ("the played sound was not found in the recording's audio" if not heard else
                "the robot has no calibrated latency (run calibrate_robot)")
        raise CaptureError(f"cannot place the motion in the recording: {why}, and {also}")
    sync.update(v_start_s=round(v_start, 6), latency_ms=round(latency, 2) if latency is not None else None,
                residual_ms=round(latency - float(calibrated), 2) if latency is not None and calibrated is not None
                else None, shift_ms=round((v_start - (audio_at + plan.t_s)) * 1000, 2) if heard else None)
    end = v_start + (plan.n_frames - 1) / plan.fps
    if end > times[-1] + 0.5 / plan.fps:
        raise CaptureError(f"the recording ends {end - times[-1]:.3f} s before the stimulus does: the robot was "
                           f"later than the tail of {plan.duration_s - plan.t_s - plan.n_frames / plan.fps:.2f} s "
                           "allows; capture again with a longer tail")
    return sync


# --- cutting and encoding ----------------------------------------------------------------------------------


def _frames_at(recording: Path, times: np.ndarray, wanted: np.ndarray, size: tuple[int, int], source: tuple[int, int]):
    """Stream the recorded frames nearest each instant of `wanted` (sorted), scaled to `size`, as RGB."""
    nearest = np.clip(np.searchsorted(times, wanted), 1, len(times) - 1)
    nearest -= (wanted - times[nearest - 1]) <= (times[nearest] - wanted)
    w, h = size
    scale = [] if tuple(size) == tuple(source) else ["-vf", f"scale={w}:{h}:flags=lanczos"]
    process = subprocess.Popen(["ffmpeg", "-v", "error", "-i", str(recording), "-map", "0:v:0", "-fps_mode",
                                "passthrough", *scale, "-pix_fmt", "rgb24", "-f", "rawvideo", "-"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    frame_bytes = w * h * 3
    try:
        index, current = -1, None
        for k in nearest:
            while index < k:
                data = process.stdout.read(frame_bytes)
                if len(data) < frame_bytes:
                    raise CaptureError(f"the recording ended at frame {index + 1} while frame {k} was needed")
                current, index = data, index + 1
            yield np.frombuffer(current, np.uint8).reshape(h, w, 3)
    finally:
        process.stdout.close()
        process.kill()
        process.wait()
        process.stderr.close()


def _cut_and_encode(recording: Path, recorded: _Recorded, plan: _Plan, sync: dict, audio, audio_offset_s: float,
                    out_path: Path, settings: CaptureSettings, overlay_text: str | None = None):
    from render.encode import DEFAULT_CRF, encode_stimulus

    times, source = recorded.times, recorded.size
    v_start = sync["v_start_s"]
    first = int(np.searchsorted(times, v_start - 1e-6))
    v_cut = float(times[first])
    delta = max(0.0, v_cut - v_start)
    wanted = v_cut + np.arange(plan.n_frames) / plan.fps
    size = settings.size or (source[0] // 2 * 2, source[1] // 2 * 2)
    sync.update(v_cut_s=round(v_cut, 6), audio_advance_ms=round(delta * 1000, 3))
    frames = _frames_at(recording, times, wanted, size, source)
    if overlay_text:
        from render.overlays import overlay_instruction

        frames = overlay_instruction(frames, plan.fps, overlay_text, n_frames=plan.n_frames)
    return encode_stimulus(frames, audio, out_path, fps=plan.fps, width=size[0], height=size[1],
                           audio_offset_s=audio_offset_s + delta,
                           crf=settings.crf if settings.crf is not None else DEFAULT_CRF)


# --- calibration ---------------------------------------------------------------------------------------------


def calibrate(robot, camera, *, repeats: int = 3, speaker=None, actuators: list[str] | None = None,
              fps: float = 25.0, progress=None) -> dict:
    """Measure the robot's end-to-end latency (command → visible motion, against the click the camera's
    microphone hears) over `repeats` marker impulses, and each actuator's response to a step from rest to
    the far end of its travel: latency to 10 % of the visible change, rise time 10 → 90 %, and the speed
    that rise implies. Returns {"latency_ms", "latency_sd_ms", "latencies_ms", "actuators": {name: {…}},
    "measured_at", "fps", "method"} for the robot's profile (`extra.calibration`)."""
    progress = progress or (lambda stage: None)
    if not (isinstance(repeats, int) and 1 <= repeats <= 20):
        raise CaptureError(f"repeats must be 1–20, got {repeats!r}")
    profile = robot.describe()
    servos = _servos(profile)
    names = [s.name for s in servos]
    chosen = actuators or names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise CaptureError(f"unknown actuators {', '.join(unknown)}; robot {profile['name']!r} has {', '.join(names)}")
    rest = np.array([s.rest for s in servos])
    frames = lambda seconds: int(math.ceil(seconds * fps - 1e-9))   # noqa: E731
    marker = marker_actuators(profile)
    marker_reach = max(_time_to_fraction(servos[j], abs(t - servos[j].rest), 0.99, None) for j, t in marker)
    segments = []            # (kind, name or None, start frame, hold frames, end frame, columns and targets)
    cursor = frames(MARKER_AT_S)
    for _ in range(repeats):
        hold = frames(marker_reach + 1 / fps)
        end = cursor + hold + frames(marker_reach + 0.5)
        segments.append(("marker", None, cursor, hold, end, marker))
        cursor = end
    for name in chosen:
        j = names.index(name)
        s = servos[j]
        target = s.upper if s.upper - s.rest >= s.rest - s.lower else s.lower
        reach = _time_to_fraction(s, abs(target - s.rest), 0.99, None)
        hold = frames(min(reach, 3.0) + 0.3)
        end = cursor + hold + frames(min(reach, 3.0) + 0.4)
        segments.append(("actuator", name, cursor, hold, end, [(j, target)]))
        cursor = end
    timeline = np.tile(rest, (cursor + frames(0.5), 1))
    track = np.zeros(int(round(len(timeline) / fps * PLAY_RATE)), np.float32)
    n_click = int(CLICK_S * PLAY_RATE)
    click = 0.9 * np.sin(2 * np.pi * 2000 * np.arange(n_click) / PLAY_RATE) * np.hanning(n_click)
    for kind, _name, start, hold, _end, moves in segments:
        for j, target in moves:
            timeline[start:start + hold, j] = target
        if kind == "marker":
            at = int(round(start / fps * PLAY_RATE))
            track[at:at + n_click] = click
    plan = _Plan(fps=fps, timeline=timeline, marker_frame=segments[0][2], speech_frame=len(timeline), n_frames=0,
                 marker_hold_s=segments[0][3] / fps, marker_travel_s=0.0, marker_back_s=0.0, track=track)
    speaker = speaker or speaker_for(camera)
    workdir = Path(tempfile.mkdtemp(prefix=".calibrate-"))
    try:
        progress(f"recording {len(timeline) / fps:.1f} s of test motion")
        try:
            info, play = _record(robot, camera, speaker, plan, workdir, CaptureSettings(fps=fps, tail_s=0.0), None)
        finally:
            _neutral(robot)
        progress("measuring")
        recorded = _analyse(workdir / "recording.mkv", track)
        if recorded.heard:
            origin, method = recorded.audio_at, "marker against the click heard by the camera's microphone"
        elif info.get("started_at") is not None:
            origin = play["start_at"] - info["started_at"] + float(recorded.times[0])
            method = "marker against the camera's clock (no click was heard: less exact)"
        else:
            raise CaptureError("calibration needs the click in the camera's audio (give the camera a microphone "
                               "and the capture machine a speaker)")
        latencies, per_actuator = [], {}
        for kind, name, start, hold, end, moves in segments:
            t0 = origin + start / fps
            travel = {j: abs(t - servos[j].rest) for j, t in moves}
            reach = max(_time_to_fraction(servos[j], d, 0.99, None) for j, d in travel.items())
            # The segment's first motion, wherever the robot's delay puts it before the next segment.
            step = _step_response(recorded.picture, after=t0 - 0.05, until=origin + (end - 2) / fps,
                                  window_s=hold / fps + min(reach, 3.0) + 0.2)
            if kind == "marker":
                if step is None or step["centre"] is None:
                    raise CaptureError("the marker impulse was not seen: is the robot in the picture and lit?")
                travel_s = np.mean([_time_to_fraction(servos[j], d, 1.0, None) for j, d in travel.items()])
                latencies.append((step["centre"] - (hold / fps + travel_s) / 2 - t0) * 1000)
                continue
            if step is None or None in (step["t10"], step["t50"], step["t90"]):
                per_actuator[name] = {"latency_ms": None, "rise_ms": None, "speed_per_s": None,
                                      "note": "no visible change on camera"}
                continue
            rise = step["t90"] - step["t10"]
            # The rise's straight line (10 → 90 % in `rise`) traced back to where the motion began.
            began = step["t50"] - 0.5 * rise / 0.8
            per_actuator[name] = {"latency_ms": round((began - t0) * 1000, 1), "rise_ms": round(rise * 1000, 1),
                                  "speed_per_s": round(0.8 * travel[names.index(name)] / rise, 3) if rise > 0 else None,
                                  "visible_change": round(step["peak"], 3)}
        lat = np.array(latencies)
        return {"latency_ms": round(float(np.median(lat)), 1),
                "latency_sd_ms": round(float(lat.std(ddof=1)) if len(lat) > 1 else 0.0, 1),
                "latencies_ms": [round(float(v), 1) for v in lat], "actuators": per_actuator,
                "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "fps": fps,
                "method": method, "correlation": round(recorded.correlation, 4)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


__all__ = ["CaptureError", "CaptureCancelled", "CaptureSettings", "CaptureResult", "FFmpegSpeaker",
           "capture_stimulus", "calibrate", "health", "speaker_for", "marker_actuators"]
