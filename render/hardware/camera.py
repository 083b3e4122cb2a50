"""Cameras for the hardware worker: capture through ffmpeg from a device string, or film the simulated robot.

Device strings (`parse_device`):

- `v4l2:/dev/video0[?audio=alsa:hw:1,0&size=1280x720&fps=30&format=mjpeg]` — Linux; audio from ALSA
  (`alsa:hw:1,0`) or PulseAudio (`pulse:default`).
- `avfoundation:0:1[?size=…&fps=…]` — macOS; video device : audio device (index or name; `avfoundation:0`
  has no audio).
- `dshow:video=Logitech BRIO:audio=Microphone (BRIO)[?size=…&fps=…]` — Windows DirectShow names.
- `file:/path/video.mp4[?loop=1]` — a recorded file played in real time (`-re`) as if it were live: the real
  `FFmpegCamera` code path, exercised without a webcam (tests, dry runs).
- `sim` / `sim:latency_ms=120,drop=0.02,noise=2` — `SimulatedCamera` filming a simulated robot (options:
  latency_ms, audio_latency_ms, drop, noise, fps, size, seed).

`FFmpegCamera` runs one ffmpeg process per recording: the platform's input format, wall-clock timestamps for
v4l2 and ALSA/Pulse (two devices with two clocks; the wall clock puts them on one), an MKV with H.264
(`-preset ultrafast`, crf 18 by default; crf 0 or FFV1 for lossless) and PCM audio. `start` returns once
ffmpeg reports its first frame, or raises what ffmpeg said (`DeviceNotFound`, `HardwareError`); `stop`
sends `q` (ffmpeg finishes the file cleanly) and measures the result with ffprobe. The file is written under a
temporary name and renamed only when the recording ended well, so a recording cut short never stands where a
good one would. A process that dies mid-recording is `DeviceLost`, from `check()` or `stop()`.

`SimulatedCamera` films a simulated robot (`state_at(t)` → actuator positions at `time.monotonic()` t,
`describe()` → profile) in a thread of its own with its own renderer (OpenGL contexts belong to a thread).
Frame k is captured at t_k = started_at + k/fps and shows the robot at t_k − latency; it is stamped k/fps in
the recording whatever time it took to draw (late frames are counted, not shifted). A dropped frame leaves a
gap in the timeline, as a real camera's would. Audio the speaker played (`play_audio(wav, at)`) lands in the
recording's audio track at `at − started_at + audio_latency`, over a low noise floor. Both cameras return
{"path", "frames", "dropped", "duration_s", "has_audio"} from `stop()` (plus "started_at", and the simulated
camera's "late_frames").
"""
from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import wave
from collections import deque
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np

from render.hardware.base import Camera, DeviceLost, DeviceNotFound, HardwareError

SCHEMES = ("v4l2", "avfoundation", "dshow", "file", "sim")
FORMS = {
    "v4l2": "v4l2:/dev/video0[?audio=alsa:hw:1,0&size=1280x720&fps=30&format=mjpeg]",
    "avfoundation": "avfoundation:VIDEO[:AUDIO][?size=1280x720&fps=30], e.g. avfoundation:0:1",
    "dshow": "dshow:video=NAME[:audio=NAME][?size=1280x720&fps=30], e.g. dshow:video=Logitech BRIO:audio=Microphone (BRIO)",
    "file": "file:/path/video.mp4[?loop=1]",
    "sim": "sim[:latency_ms=120,audio_latency_ms=0,drop=0.02,noise=2,fps=25,size=256,seed=0]",
}
LIVE_OPTIONS = ("audio", "size", "fps", "format")      # query keys of v4l2 / avfoundation / dshow
AUDIO_INPUTS = ("alsa", "pulse")                        # audio beside a v4l2 camera
SIM_OPTIONS = {"latency_ms": float, "audio_latency_ms": float, "drop": float, "noise": float, "fps": float,
               "size": int, "seed": int}
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
SAMPLE_RATE = 48000
NOISE_FLOOR = 10 ** (-60 / 20)   # the simulated microphone's hiss: −60 dBFS rms


# --- device strings ---------------------------------------------------------------------------------------


def _bad(scheme: str, device: str, why: str) -> DeviceNotFound:
    return DeviceNotFound(f"camera device {device!r}: {why}; expected {FORMS[scheme]}")


def _split_query(rest: str) -> tuple[str, str]:
    """`rest` → (address, query); a '?' counts only when what follows it reads as key=value pairs (a
    DirectShow name may hold a '?')."""
    head, sep, tail = rest.rpartition("?")
    if sep and re.fullmatch(r"[A-Za-z_]+=[^&]*(&[A-Za-z_]+=[^&]*)*", tail):
        return head, tail
    return rest, ""


def _size(value: str, scheme: str, device: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", value.strip())
    if not match or int(match[1]) <= 0 or int(match[2]) <= 0:
        raise _bad(scheme, device, f"size must be WIDTHxHEIGHT in pixels (e.g. 1280x720), got {value!r}")
    return int(match[1]), int(match[2])


def _positive(value: str, key: str, scheme: str, device: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not (math.isfinite(number) and number > 0):
        raise _bad(scheme, device, f"{key} must be a positive number, got {value!r}")
    return number


def _live_options(query: str, scheme: str, device: str) -> dict:
    options = {"audio": None, "audio_format": None, "size": None, "fps": None, "input_format": None}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in LIVE_OPTIONS or (key == "audio" and scheme != "v4l2"):
            allowed = ", ".join(k for k in LIVE_OPTIONS if k != "audio" or scheme == "v4l2")
            raise _bad(scheme, device, f"unknown option {key!r} (options: {allowed})")
        if key == "audio":
            kind, sep, address = value.partition(":")
            if not sep or kind not in AUDIO_INPUTS or not address:
                raise _bad(scheme, device, f"audio must be alsa:DEVICE or pulse:DEVICE (e.g. alsa:hw:1,0), "
                                           f"got {value!r}")
            options["audio_format"], options["audio"] = kind, address
        elif key == "size":
            options["size"] = _size(value, scheme, device)
        elif key == "fps":
            options["fps"] = _positive(value, key, scheme, device)
        else:
            if not value:
                raise _bad(scheme, device, "format needs a value (e.g. mjpeg, yuyv422)")
            options["input_format"] = value
    return options


def parse_device(device: str) -> dict:
    """A camera device string as a dict: {"scheme", …}; raises DeviceNotFound naming the expected form.

    - v4l2 / avfoundation / dshow: "video", "audio" (None when absent), "audio_format" (v4l2: alsa or
      pulse), "size" ((w, h) or None), "fps" (or None), "input_format" (or None).
    - file: "path", "loop" (bool). - sim: the options given (floats / ints), e.g. {"scheme": "sim",
      "latency_ms": 120.0}.
    """
    if not isinstance(device, str) or not device.strip():
        raise DeviceNotFound(f"a camera device string is needed (schemes: {', '.join(SCHEMES)}), got {device!r}")
    device = device.strip()
    scheme, _sep, rest = device.partition(":")
    if scheme not in SCHEMES:
        raise DeviceNotFound(f"unknown camera device {device!r}: the scheme must be one of {', '.join(SCHEMES)} "
                             f"(e.g. {FORMS['v4l2']}, avfoundation:0:1, dshow:video=NAME, file:/path/video.mp4, sim)")
    if scheme == "sim":
        parsed: dict = {"scheme": "sim"}
        for item in filter(None, (part.strip() for part in rest.split(","))):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or key not in SIM_OPTIONS:
                raise _bad(scheme, device, f"{item!r} is not one of the options {', '.join(SIM_OPTIONS)} as key=value")
            try:
                parsed[key] = SIM_OPTIONS[key](value.strip())
            except ValueError:
                raise _bad(scheme, device, f"{key} must be a {SIM_OPTIONS[key].__name__}, got {value!r}") from None
        return parsed
    address, query = _split_query(rest)
    if scheme == "file":
        if not address:
            raise _bad(scheme, device, "no file named")
        loop = False
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key != "loop" or value not in ("0", "1"):
                raise _bad(scheme, device, f"the only option is loop=0 or loop=1, got {key}={value}")
            loop = value == "1"
        return {"scheme": "file", "path": address, "loop": loop}
    options = _live_options(query, scheme, device)
    if scheme == "v4l2":
        if not address.startswith("/dev/"):
            raise _bad(scheme, device, f"the video device must be a /dev path, got {address!r}")
        return {"scheme": scheme, "video": address, **options}
    if scheme == "avfoundation":
        video, _sep, audio = address.partition(":")
        if not video or ":" in audio:
            raise _bad(scheme, device, "give the video device (index or name), then optionally ':' and the audio device")
        return {"scheme": scheme, "video": video, **options, "audio": audio or None}
    # dshow: video=NAME[:audio=NAME]; a name may itself hold ':' only if it is not followed by 'audio='.
    match = re.fullmatch(r"video=(.+?)(?::audio=(.+))?", address)
    if not match:
        raise _bad(scheme, device, "the device must start with video=NAME (the name DirectShow lists: "
                                   "ffmpeg -list_devices true -f dshow -i dummy)")
    return {"scheme": scheme, "video": match[1], **options, "audio": match[2]}


def open_camera(device: str, *, robot=None, **options) -> Camera:
    """The camera a device string names: `SimulatedCamera(robot, …)` for sim (the robot it films must be
    given), `FFmpegCamera(device, …)` otherwise; `options` go to the camera's constructor (they win over
    the device string's)."""
    parsed = parse_device(device)
    if parsed["scheme"] == "sim":
        if robot is None:
            raise HardwareError("the simulated camera films a simulated robot: pass robot= (a "
                                "render.hardware.simulated.SimulatedRobot) with a sim camera")
        settings = {k: v for k, v in parsed.items() if k != "scheme"}
        return SimulatedCamera(robot, **{**settings, **options})
    return FFmpegCamera(device, **options)


# --- ffmpeg / ffprobe helpers -------------------------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise HardwareError(f"{name} is not installed or not on PATH; install ffmpeg (it ships {name}) on the "
                            "hardware worker")
    return path


def video_codec_args(codec: str, crf: int) -> list[str]:
    """ffmpeg output arguments for the recording's video: "libx264" (ultrafast, `crf`; 0 is lossless) or
    "ffv1" (lossless)."""
    if codec == "libx264":
        if not 0 <= int(crf) <= 51:
            raise HardwareError(f"crf must be 0..51 (0 lossless, 18 visually lossless), got {crf}")
        return ["-c:v", "libx264", "-preset", "ultrafast", "-crf", str(int(crf)), "-pix_fmt", "yuv420p"]
    if codec == "ffv1":
        return ["-c:v", "ffv1", "-level", "3"]
    raise HardwareError(f"video codec must be libx264 or ffv1, got {codec!r}")


def probe_recording(path, fps: float | None = None) -> dict:
    """What an MKV recording holds: {"frames", "missing", "duration_s", "has_audio", "frame_times"}.
    `missing` counts the frame slots the video timeline skips (a gap of g frame periods holds g − 1), with
    the period 1/`fps`, or the median frame interval when `fps` is None."""
    import json

    result = subprocess.run([_tool("ffprobe"), "-v", "error", "-show_entries",
                             "stream=index,codec_type:packet=stream_index,pts_time:format=duration",
                             "-of", "json", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise HardwareError(f"ffprobe cannot read the recording {path}: {result.stderr.strip()[-500:]}")
    data = json.loads(result.stdout or "{}")
    kinds = {s["index"]: s.get("codec_type") for s in data.get("streams", [])}
    video = [i for i, k in kinds.items() if k == "video"]
    times = np.array(sorted(float(p["pts_time"]) for p in data.get("packets", [])
                            if video and p.get("stream_index") == video[0] and p.get("pts_time") not in (None, "N/A")))
    audio_packets = sum(1 for p in data.get("packets", []) if kinds.get(p.get("stream_index")) == "audio")
    missing = 0
    if len(times) > 1:
        period = 1.0 / fps if fps else float(np.median(np.diff(times)))
        if period > 0:
            missing = int(np.maximum(np.rint(np.diff(times) / period) - 1, 0).sum())
    duration = data.get("format", {}).get("duration")
    return {"frames": int(len(times)), "missing": missing,
            "duration_s": float(duration) if duration not in (None, "N/A") else 0.0,
            "has_audio": audio_packets > 0, "frame_times": times}


def _partial_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.part{path.suffix}")


def _check_output(path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".mkv", ".mka"):
        raise HardwareError(f"cameras record to Matroska (video + PCM audio): give a .mkv path, got {path}")
    if not path.parent.is_dir():
        raise HardwareError(f"the folder {path.parent} does not exist; create it before recording")
    return path


# --- FFmpegCamera -----------------------------------------------------------------------------------------

# What ffmpeg says when it cannot open a device, and what it means for us.
_NOT_FOUND = ("No such file or directory", "No such device", "Cannot open video device", "Could not find",
              "Unknown input format", "Input/output error", "Not a video capture device", "Invalid argument")
_BUSY = "Device or resource busy"
_DENIED = "Permission denied"


class FFmpegCamera(Camera):
    """A camera (and microphone) captured by ffmpeg; see the module docstring. `device` is a device string
    (not sim). `video_codec` "libx264" (with `crf`) or "ffv1"."""

    def __init__(self, device: str, *, video_codec: str = "libx264", crf: int = 18,
                 start_timeout_s: float = START_TIMEOUT_S, stop_timeout_s: float = STOP_TIMEOUT_S):
        self.device = device
        self.spec = parse_device(device)
        if self.spec["scheme"] == "sim":
            raise HardwareError("FFmpegCamera cannot open a sim device; use open_camera(device, robot=…) or "
                                "SimulatedCamera")
        self.codec_args = video_codec_args(video_codec, crf)
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.process: subprocess.Popen | None = None
        self.started_at: float | None = None
        self.first_frame_at: float | None = None
        self._path: Path | None = None
        self._partial: Path | None = None
        self._progress: dict[str, str] = {}
        self._first_frame = threading.Event()
        self._stderr: deque[str] = deque(maxlen=200)
        self._dropped_lines = 0
        self._readers: list[threading.Thread] = []
        self._stopping = False

    # -- the command ---------------------------------------------------------------------------------------

    def input_args(self) -> list[str]:
        """The ffmpeg arguments that open this device (inputs and stream maps)."""
        spec = self.spec
        scheme = spec["scheme"]
        if scheme == "file":
            loop = ["-stream_loop", "-1"] if spec["loop"] else []
            return [*loop, "-re", "-i", spec["path"], "-map", "0:v:0", "-map", "0:a:0?"]
        live = ["-thread_queue_size", "512"]
        if spec.get("fps"):
            live += ["-framerate", f"{spec['fps']:g}"]
        elif scheme == "avfoundation":
            live += ["-framerate", "30"]   # ffmpeg's default (29.97) is one most Mac cameras refuse
        if spec.get("size"):
            live += ["-video_size", "{}x{}".format(*spec["size"])]
        if scheme == "v4l2":
            if spec["input_format"]:
                live += ["-input_format", spec["input_format"]]
            args = ["-f", "v4l2", *live, "-use_wallclock_as_timestamps", "1", "-i", spec["video"]]
            if spec["audio"]:
                args += ["-f", spec["audio_format"], "-thread_queue_size", "512", "-use_wallclock_as_timestamps",
                         "1", "-i", spec["audio"], "-map", "0:v:0", "-map", "1:a:0"]
            return args
        if scheme == "avfoundation":
            if spec["input_format"]:
                live += ["-pixel_format", spec["input_format"]]
            target = spec["video"] + (f":{spec['audio']}" if spec["audio"] else "")
            return ["-f", "avfoundation", *live, "-i", target]
        if spec["input_format"]:
            live += ["-vcodec" if spec["input_format"] in ("mjpeg", "h264") else "-pixel_format",
                     spec["input_format"]]
        target = f"video={spec['video']}" + (f":audio={spec['audio']}" if spec["audio"] else "")
        return ["-f", "dshow", "-rtbufsize", "256M", *live, "-i", target]

    def command(self, path) -> list[str]:
        """The whole ffmpeg command line that records to `path`."""
        return [_tool("ffmpeg"), "-hide_banner", "-loglevel", "warning", "-nostats", "-progress", "pipe:1",
                "-stats_period", "0.1", "-y", *self.input_args(), *self.codec_args, "-c:a", "pcm_s16le",
                "-f", "matroska", str(path)]

    # -- recording -----------------------------------------------------------------------------------------

    def start(self, path) -> None:
        """Launch ffmpeg recording to `path` (.mkv); returns once ffmpeg reports its first frame. Raises
        DeviceNotFound (no such device or file) or HardwareError (busy, no permission, other) with ffmpeg's
        reason."""
        if self.process is not None:
            raise HardwareError(f"camera {self.device!r} is already recording; stop() it first")
        self._path = _check_output(path)
        self._partial = _partial_path(self._path)
        command = self.command(self._partial)
        self._progress, self._stderr, self._dropped_lines = {}, deque(maxlen=200), 0
        self._first_frame.clear()
        self._stopping = False
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        self._readers = [threading.Thread(target=self._read_progress, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._first_frame.wait(0.05):
            if self.process.poll() is not None:
                self._join_readers()
                reason = self._reason()
                self._discard()
                raise self._open_error(reason)
            if time.monotonic() > deadline:
                self._kill()
                reason = self._reason()
                self._discard()
                raise HardwareError(f"camera {self.device!r} sent no frame within {self.start_timeout_s:g} s "
                                    f"(ffmpeg: {reason or 'no message'}); check that it is plugged in and not "
                                    "used by another program")

    def check(self) -> dict:
        """Whether the recording is still going: {"frames", "elapsed_s"}; raises DeviceLost when ffmpeg has
        died (the camera was unplugged, the file ended, ffmpeg crashed)."""
        if self.process is None:
            raise HardwareError(f"camera {self.device!r} is not recording; call start(path) first")
        if self.process.poll() is not None:
            raise self._lost()
        return {"frames": int(self._progress.get("frame", 0) or 0),
                "elapsed_s": time.monotonic() - (self.started_at or time.monotonic())}

    def stop(self) -> dict:
        """Stop gracefully ('q' on ffmpeg's stdin) and return {"path", "frames", "dropped", "duration_s",
        "has_audio", "started_at"} measured on the file with ffprobe. Raises DeviceLost when ffmpeg had
        died before (nothing is left at the path)."""
        process = self.process
        if process is None:
            raise HardwareError(f"camera {self.device!r} is not recording; call start(path) first")
        try:
            if process.poll() is not None:
                raise self._lost()
            self._stopping = True
            try:
                process.stdin.write(b"q")
                process.stdin.flush()
                process.stdin.close()
            except (BrokenPipeError, OSError):
                pass   # it is gone already; the exit status below says how
            try:
                returncode = process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self._kill()
                raise HardwareError(f"ffmpeg did not finish the recording of {self.device!r} within "
                                    f"{self.stop_timeout_s:g} s of being asked to; the recording was discarded")
            self._join_readers()
            if returncode < 0:
                raise self._lost()
            if returncode != 0:
                raise HardwareError(f"ffmpeg failed while recording {self.device!r} (exit {returncode}): "
                                    f"{self._reason()}")
            probe = probe_recording(self._partial, self.spec.get("fps"))
            if probe["frames"] == 0:
                raise HardwareError(f"the recording of {self.device!r} holds no video frame: {self._reason()}")
            os.replace(self._partial, self._path)
        except BaseException:
            self._kill()
            self._discard()
            raise
        finally:
            self.process = None
        dropped = probe["missing"] + int(self._progress.get("drop_frames", 0) or 0) + self._dropped_lines
        return {"path": str(self._path), "frames": probe["frames"], "dropped": dropped,
                "duration_s": probe["duration_s"], "has_audio": probe["has_audio"], "started_at": self.started_at}

    def health(self) -> dict:
        spec = self.spec
        if shutil.which("ffmpeg") is None:
            return {"ok": False, "detail": "ffmpeg is not installed on this machine"}
        target = spec.get("path") or (spec["video"] if spec["scheme"] == "v4l2" else None)
        if target is not None and not os.path.exists(target):
            return {"ok": False, "detail": f"{target} does not exist (camera unplugged, or a wrong device string)"}
        return {"ok": True, "detail": f"{spec['scheme']} device {self.device!r} (opened by ffmpeg at start)"}

    # -- internals -----------------------------------------------------------------------------------------

    def _read_progress(self) -> None:
        block: dict[str, str] = {}
        for raw in self.process.stdout:
            key, _eq, value = raw.decode("utf-8", "replace").strip().partition("=")
            if key != "progress":
                block[key] = value
                continue
            self._progress = block
            block = {}
            try:
                if int(self._progress.get("frame", "0")) > 0 and not self._first_frame.is_set():
                    self.first_frame_at = time.monotonic()
                    self._first_frame.set()
            except ValueError:
                pass

    def _read_stderr(self) -> None:
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr.append(line)
                if "frame dropped" in line:
                    self._dropped_lines += 1

    def _join_readers(self) -> None:
        for reader in self._readers:
            reader.join(5.0)

    def _reason(self) -> str:
        lines = [re.sub(r"^\[[^\]]*@ 0x[0-9a-f]+\] ", "", line) for line in self._stderr]
        meaningful = [line for line in lines if not line.startswith("ALSA lib")]
        return "; ".join(meaningful[-3:])

    def _open_error(self, reason: str) -> HardwareError:
        where = f"camera {self.device!r}"
        if _BUSY in reason:
            return HardwareError(f"{where} is busy ({reason}): another program is using it; close it and retry")
        if _DENIED in reason:
            return HardwareError(f"{where} cannot be opened ({reason}): give this user access (on Linux, add it "
                                 "to the 'video' and 'audio' groups)")
        if "Unknown input format" in reason:
            return DeviceNotFound(f"{where}: this ffmpeg cannot capture from {self.spec['scheme']} ({reason}); "
                                  "v4l2 is for Linux, avfoundation for macOS, dshow for Windows")
        if any(sign in reason for sign in _NOT_FOUND):
            listing = {"v4l2": "v4l2-ctl --list-devices", "avfoundation": "ffmpeg -f avfoundation "
                       "-list_devices true -i ''", "dshow": "ffmpeg -list_devices true -f dshow -i dummy",
                       "file": "ls"}[self.spec["scheme"]]
            return DeviceNotFound(f"{where} not found ({reason}); check the device string ({listing} lists "
                                  "what there is)")
        return HardwareError(f"{where} could not start recording: {reason or 'ffmpeg exited without a message'}")

    def _lost(self) -> DeviceLost:
        self._join_readers()
        status = self.process.returncode if self.process is not None else None
        how = f"killed by signal {-status}" if status is not None and status < 0 else f"exit status {status}"
        reason = self._reason()
        return DeviceLost(f"camera {self.device!r} stopped in the middle of the recording (ffmpeg {how}"
                          f"{': ' + reason if reason else ''}); check the cable and power, then record again")

    def _kill(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(5.0)
        self._join_readers()

    def _discard(self) -> None:
        if self._partial is not None:
            self._partial.unlink(missing_ok=True)
        self.process = None


# --- SimulatedCamera --------------------------------------------------------------------------------------


def read_audio(path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Any audio file ffmpeg reads, as mono float32 at `sample_rate`."""
    if not os.path.exists(path):
        raise HardwareError(f"audio file {path} does not exist")
    result = subprocess.run([_tool("ffmpeg"), "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-ar",
                             str(sample_rate), "-"], capture_output=True)
    if result.returncode != 0:
        raise HardwareError(f"cannot read the audio {path}: {result.stderr.decode(errors='replace').strip()[-300:]}")
    return np.frombuffer(result.stdout, np.float32).copy()


def _select_script(dropped: list[int]) -> str:
    """An ffmpeg filter that removes the input frames with these indices (runs of them as `between`)."""
    runs: list[tuple[int, int]] = []
    for k in dropped:
        if runs and runs[-1][1] == k - 1:
            runs[-1] = (runs[-1][0], k)
        else:
            runs.append((k, k))
    terms = "+".join(f"between(n,{a},{b})" for a, b in runs)
    return f"select='not({terms})'"


class SimulatedCamera(Camera):
    """A camera filming a simulated robot in real time; see the module docstring.

    `robot` has `state_at(t)` (actuator positions, profile order, at `time.monotonic()` t) and `describe()`
    (its profile). `size` is the frame's side in pixels (or (width, height)); `latency_ms` the delay from
    the robot moving to the frame showing it; `drop` the probability of losing each frame (never the first);
    `noise` the σ of Gaussian pixel noise in 8-bit levels; `audio_latency_ms` the delay from the speaker to
    the recorded track; `seed` makes drops and noise repeatable. `settings` (a RenderSettings) overrides how
    frames look; its size is replaced by `size`.
    """

    def __init__(self, robot, *, fps: float = 25.0, size=256, latency_ms: float = 0.0, drop: float = 0.0,
                 noise: float = 0.0, audio_latency_ms: float = 0.0, seed: int = 0, sample_rate: int = SAMPLE_RATE,
                 video_codec: str = "libx264", crf: int = 18, settings=None):
        if not (hasattr(robot, "state_at") and hasattr(robot, "describe")):
            raise HardwareError("the simulated camera films a simulated robot: give it an object with "
                                "state_at(t) and describe() (render.hardware.simulated.SimulatedRobot)")
        width, height = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        checks = [(fps > 0 and math.isfinite(fps), f"fps must be positive, got {fps}"),
                  (width > 0 and height > 0 and width % 2 == 0 and height % 2 == 0,
                   f"size must be even and positive (H.264 needs it), got {size}"),
                  (latency_ms >= 0 and audio_latency_ms >= 0, "latencies cannot be negative"),
                  (0.0 <= drop < 1.0, f"drop is a probability 0 ≤ drop < 1, got {drop}"),
                  (noise >= 0, f"noise is a σ in 8-bit levels ≥ 0, got {noise}")]
        for ok, message in checks:
            if not ok:
                raise HardwareError(f"simulated camera: {message}")
        self.robot = robot
        self.fps = float(fps)
        self.size = (int(width), int(height))
        self.latency_s = latency_ms / 1000.0
        self.audio_latency_s = audio_latency_ms / 1000.0
        self.drop = float(drop)
        self.noise = float(noise)
        self.seed = int(seed)
        self.sample_rate = int(sample_rate)
        self.codec_args = video_codec_args(video_codec, crf)
        self.settings = settings
        self.started_at: float | None = None
        self.late_frames = 0
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._stop_at: float | None = None
        self._error: BaseException | None = None
        self._sounds: list[tuple[np.ndarray, float]] = []
        self._workdir: Path | None = None
        self._path: Path | None = None
        self._slots = 0
        self._dropped: list[int] = []

    # -- recording -----------------------------------------------------------------------------------------

    def start(self, path) -> None:
        """Start filming into `path` (.mkv, written at stop); returns once the renderer is up, with
        `started_at` the instant of frame 0."""
        if self._thread is not None:
            raise HardwareError("the simulated camera is already recording; stop() it first")
        self._path = _check_output(path)
        self._workdir = Path(tempfile.mkdtemp(prefix=f".{self._path.stem}.", dir=self._path.parent))
        self._ready.clear()
        self._stop.clear()
        self._stop_at, self._error, self.started_at = None, None, None
        self.late_frames, self._slots, self._dropped, self._sounds = 0, 0, [], []
        self._thread = threading.Thread(target=self._film, name="simulated-camera", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            error, self._error = self._error, None
            self._thread.join()
            self._thread = None
            shutil.rmtree(self._workdir, ignore_errors=True)
            raise HardwareError(f"the simulated camera cannot film: {error}") from error

    def play_audio(self, wav_path, at: float) -> None:
        """The speaker played `wav_path` starting at `time.monotonic()` instant `at`: the recording's audio
        track will hold it from `at − started_at + audio_latency`."""
        self._sounds.append((read_audio(wav_path, self.sample_rate), float(at)))

    def check(self) -> dict:
        """{"frames", "elapsed_s"} so far; raises DeviceLost when filming failed."""
        if self._thread is None:
            raise HardwareError("the simulated camera is not recording; call start(path) first")
        if self._error is not None:
            raise DeviceLost(f"the simulated camera stopped filming at frame {self._slots}: {self._error}")
        return {"frames": self._slots - len(self._dropped), "elapsed_s": time.monotonic() - self.started_at}

    def stop(self) -> dict:
        """Stop filming (frames due before now are still drawn), write the MKV and return {"path", "frames",
        "dropped", "duration_s", "has_audio", "started_at", "late_frames"}."""
        if self._thread is None:
            raise HardwareError("the simulated camera is not recording; call start(path) first")
        self._stop_at = time.monotonic()
        self._stop.set()
        thread, self._thread = self._thread, None
        try:
            thread.join()
            if self._error is not None:
                raise DeviceLost(f"the simulated camera stopped filming at frame {self._slots}: "
                                 f"{self._error}") from self._error
            partial = _partial_path(self._path)
            self._encode(partial)
            probe = probe_recording(partial, self.fps)
            os.replace(partial, self._path)
        finally:
            shutil.rmtree(self._workdir, ignore_errors=True)
            _partial_path(self._path).unlink(missing_ok=True)
        return {"path": str(self._path), "frames": probe["frames"], "dropped": len(self._dropped),
                "duration_s": probe["duration_s"], "has_audio": probe["has_audio"], "started_at": self.started_at,
                "late_frames": self.late_frames}

    # -- the filming thread --------------------------------------------------------------------------------

    def _film(self) -> None:
        try:
            from render.offscreen import RenderSettings, Renderer
            from render.robot import SimRobot

            rig = SimRobot(self.robot.describe())
            base = self.settings or RenderSettings()
            settings = RenderSettings(**{**base.to_dict(), "width": self.size[0], "height": self.size[1]})
            renderer = Renderer(settings)   # this thread's own OpenGL context
        except BaseException as exc:   # reported by start()
            self._error = exc
            self._ready.set()
            return
        look_at = rig.look_at()
        try:
            renderer.render(rig.parts_for(rig.positions()), look_at=look_at)   # warm up before frame 0
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            renderer.close()
            return
        drops = np.random.default_rng([self.seed, 1])
        pixels = np.random.default_rng([self.seed, 2])
        period = 1.0 / self.fps
        try:
            with open(self._workdir / "frames.rgb", "wb") as out:
                self.started_at = time.monotonic()
                self._ready.set()
                previous = b""
                k = 0
                while True:
                    due = self.started_at + k * period
                    if self._stop_at is not None and due >= self._stop_at:
                        break
                    wait = due - time.monotonic()
                    if wait > 0:
                        self._stop.wait(wait)
                        continue   # re-check the stop instant before capturing
                    if k > 0 and drops.random() < self.drop:
                        self._dropped.append(k)
                        out.write(previous)   # a placeholder the encoder removes
                    else:
                        state = np.asarray(self.robot.state_at(due - self.latency_s), np.float32)
                        frame = renderer.render(rig.parts_for(state), look_at=look_at)
                        if self.noise > 0:
                            noisy = frame + pixels.normal(0.0, self.noise, frame.shape).astype(np.float32)
                            frame = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
                        previous = frame.tobytes()
                        out.write(previous)
                        if time.monotonic() - due > period:
                            self.late_frames += 1
                    k += 1
                    self._slots = k
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()
            renderer.close()

    # -- writing the file ----------------------------------------------------------------------------------

    def _audio_track(self) -> np.ndarray:
        length = int(round(self._slots / self.fps * self.sample_rate))
        rng = np.random.default_rng([self.seed, 3])
        track = rng.normal(0.0, NOISE_FLOOR, length)
        for samples, at in self._sounds:
            offset = int(round((at + self.audio_latency_s - self.started_at) * self.sample_rate))
            start, end = max(offset, 0), min(offset + len(samples), length)
            if start < end:
                track[start:end] += samples[start - offset:end - offset]
        return np.clip(track, -1.0, 1.0)

    def _encode(self, partial: Path) -> None:
        if self._slots == 0:
            raise HardwareError("the simulated camera recorded no frame (stopped before its first frame)")
        audio = self._workdir / "audio.wav"
        with wave.open(str(audio), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(self.sample_rate)
            wav.writeframes((self._audio_track() * 32767.0).round().astype("<i2").tobytes())
        select: list[str] = []
        if self._dropped:
            script = self._workdir / "select.txt"
            script.write_text(_select_script(self._dropped))
            select = ["-filter_script:v", str(script)]
        width, height = self.size
        command = [_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-y",
                   "-f", "rawvideo", "-pix_fmt", "rgb24", "-video_size", f"{width}x{height}",
                   "-framerate", f"{self.fps:g}", "-i", str(self._workdir / "frames.rgb"), "-i", str(audio),
                   *select, *self.codec_args, "-c:a", "pcm_s16le", "-f", "matroska", str(partial)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise HardwareError(f"ffmpeg could not write the simulated recording: {result.stderr.strip()[-500:]}")


__all__ = ["parse_device", "open_camera", "FFmpegCamera", "SimulatedCamera", "probe_recording", "read_audio",
           "video_codec_args", "SCHEMES"]
