"""Tests for render.hardware.camera: device strings, the ffmpeg capture path (driven by a real ffmpeg on a
`file:` source made here with lavfi, played in real time), its faults (unknown device, a missing /dev/video99,
ffmpeg killed mid-recording), and the simulated camera's timing: the jaw of a stand-in robot shows up in the
recording at step + latency within one frame, dropped frames leave gaps in the recorded timestamps, and audio
played at `at` lies at `at − started_at + audio_latency` in the recorded track.

Recorded facts are read back with ffprobe / ffmpeg and numpy here, never from the camera's own bookkeeping.
"""
import json
import os
import shutil
import signal
import subprocess
import time
import wave

import numpy as np
import pytest

from inference.robots import SIM_FACE
from render.hardware.base import DeviceLost, DeviceNotFound, HardwareError
from render.hardware.camera import FFmpegCamera, SimulatedCamera, open_camera, parse_device

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                reason="needs ffmpeg and ffprobe")

SOURCE_FPS = 25
SAMPLE_RATE = 48000


# --- parse_device -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device, expected", [
    ("v4l2:/dev/video0", {"scheme": "v4l2", "video": "/dev/video0", "audio": None, "audio_format": None,
                          "size": None, "fps": None, "input_format": None}),
    ("v4l2:/dev/video0?audio=alsa:hw:1,0&size=1280x720&fps=30",
     {"scheme": "v4l2", "video": "/dev/video0", "audio": "hw:1,0", "audio_format": "alsa", "size": (1280, 720),
      "fps": 30.0, "input_format": None}),
    ("v4l2:/dev/video2?format=mjpeg&audio=pulse:default",
     {"scheme": "v4l2", "video": "/dev/video2", "audio": "default", "audio_format": "pulse", "size": None,
      "fps": None, "input_format": "mjpeg"}),
    ("avfoundation:0:1", {"scheme": "avfoundation", "video": "0", "audio": "1", "audio_format": None, "size": None,
                          "fps": None, "input_format": None}),
    ("avfoundation:0", {"scheme": "avfoundation", "video": "0", "audio": None, "audio_format": None, "size": None,
                        "fps": None, "input_format": None}),
    ("dshow:video=Logitech BRIO:audio=Microphone (BRIO)",
     {"scheme": "dshow", "video": "Logitech BRIO", "audio": "Microphone (BRIO)", "audio_format": None,
      "size": None, "fps": None, "input_format": None}),
    ("dshow:video=Logitech BRIO?size=1920x1080&fps=60",
     {"scheme": "dshow", "video": "Logitech BRIO", "audio": None, "audio_format": None, "size": (1920, 1080),
      "fps": 60.0, "input_format": None}),
    ("sim", {"scheme": "sim"}),
    ("sim:latency_ms=120,drop=0.02,noise=2", {"scheme": "sim", "latency_ms": 120.0, "drop": 0.02, "noise": 2.0}),
    ("sim:fps=30,size=128,seed=7", {"scheme": "sim", "fps": 30.0, "size": 128, "seed": 7}),
    ("file:/path/video.mp4", {"scheme": "file", "path": "/path/video.mp4", "loop": False}),
    ("file:/path/video.mp4?loop=1", {"scheme": "file", "path": "/path/video.mp4", "loop": True}),
])
def test_parse_device_reads_each_scheme(device, expected):
    assert parse_device(device) == expected


def test_an_unknown_scheme_lists_the_schemes():
    with pytest.raises(DeviceNotFound) as error:
        parse_device("webcam:0")
    for scheme in ("v4l2", "avfoundation", "dshow", "file", "sim"):
        assert scheme in str(error.value)


@pytest.mark.parametrize("device, says", [
    ("v4l2:video0", "v4l2:/dev/video0"),                                  # not a /dev path
    ("v4l2:/dev/video0?size=big", "WIDTHxHEIGHT"),
    ("v4l2:/dev/video0?fps=-3", "fps must be a positive number"),
    ("v4l2:/dev/video0?audio=hw:1,0", "alsa:DEVICE"),                     # audio without its kind
    ("v4l2:/dev/video0?colour=red", "unknown option 'colour'"),
    ("avfoundation::1", "video device"),                                  # audio only
    ("dshow:Logitech BRIO", "video=NAME"),
    ("sim:latency=120", "latency_ms"),                                     # an unknown key
    ("sim:drop=often", "drop must be a float"),
    ("file:", "no file named"),
    ("", "schemes"),
])
def test_a_malformed_device_says_the_expected_form(device, says):
    with pytest.raises(DeviceNotFound) as error:
        parse_device(device)
    assert says in str(error.value)


def test_open_camera_needs_the_robot_for_sim_and_gives_ffmpeg_otherwise():
    with pytest.raises(HardwareError, match="robot="):
        open_camera("sim")
    assert isinstance(open_camera("v4l2:/dev/video0"), FFmpegCamera)
    camera = open_camera("sim:latency_ms=40,size=64", robot=JawStandIn())
    assert isinstance(camera, SimulatedCamera) and camera.latency_s == pytest.approx(0.04)


# --- FFmpegCamera -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source_file(tmp_path_factory):
    """A 6 s test pattern with a 440 Hz tone: the 'camera' the file: scheme plays in real time."""
    path = tmp_path_factory.mktemp("source") / "source.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc=size=160x120:rate={SOURCE_FPS}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={SAMPLE_RATE}", "-t", "6",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le", str(path)],
                   check=True)
    return path


def probe(path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                          "stream=codec_type,nb_read_frames:format=duration", "-of", "json", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def test_ffmpeg_camera_records_a_live_file_source(source_file, tmp_path):
    camera = FFmpegCamera(f"file:{source_file}")
    out = tmp_path / "take.mkv"
    before = time.monotonic()
    camera.start(out)
    assert before <= camera.started_at <= time.monotonic()
    assert camera.check()["frames"] >= 1
    time.sleep(1.5)
    report = camera.stop()
    assert report["path"] == str(out) and out.exists()
    assert not list(tmp_path.glob(".*part*")), "the temporary file is renamed, not left behind"
    # Played in real time: ~1.5 s recorded (≥ 0.25 s slack either way for a loaded machine).
    assert 1.25 <= report["duration_s"] <= 2.5
    assert report["has_audio"] is True
    assert report["dropped"] == 0
    measured = probe(out)
    kinds = {s["codec_type"]: s for s in measured["streams"]}
    assert set(kinds) == {"video", "audio"}
    assert report["frames"] == int(kinds["video"]["nb_read_frames"])
    # the container's duration is the longer of its streams: the audio may run a few frames past the video
    assert abs(report["frames"] - SOURCE_FPS * report["duration_s"]) <= 3


def test_an_unknown_device_is_not_found():
    with pytest.raises(DeviceNotFound, match="unknown camera device"):
        FFmpegCamera("usb:camera")


@pytest.mark.skipif(not os.path.isdir("/dev") or os.name != "posix", reason="v4l2 is Linux's")
def test_a_missing_v4l2_device_is_not_found_with_ffmpegs_reason(tmp_path):
    camera = FFmpegCamera("v4l2:/dev/video99")
    with pytest.raises(DeviceNotFound) as error:
        camera.start(tmp_path / "take.mkv")
    message = str(error.value)
    assert "/dev/video99" in message
    assert "No such file or directory" in message or "Unknown input format" in message
    assert not list(tmp_path.iterdir()), "a failed start leaves no file"
    assert camera.process is None


def test_a_missing_file_is_not_found(tmp_path):
    with pytest.raises(DeviceNotFound, match="No such file or directory"):
        FFmpegCamera(f"file:{tmp_path / 'nothing.mkv'}").start(tmp_path / "take.mkv")


def test_ffmpeg_killed_mid_recording_is_device_lost(source_file, tmp_path):
    camera = FFmpegCamera(f"file:{source_file}")
    out = tmp_path / "take.mkv"
    camera.start(out)
    os.kill(camera.process.pid, signal.SIGKILL)
    camera.process.wait(5)
    with pytest.raises(DeviceLost, match="signal 9"):
        camera.check()
    with pytest.raises(DeviceLost, match="stopped in the middle of the recording"):
        camera.stop()
    assert not out.exists() and not list(tmp_path.iterdir()), "nothing half-written is left"


def test_recording_to_a_non_matroska_path_is_refused(source_file, tmp_path):
    with pytest.raises(HardwareError, match=".mkv"):
        FFmpegCamera(f"file:{source_file}").start(tmp_path / "take.mp4")


# --- SimulatedCamera --------------------------------------------------------------------------------------


class JawStandIn:
    """Stands in for render.hardware.simulated.SimulatedRobot: sim-face at rest but for its jaw, which
    follows `jaw(t)` (monotonic time → 0..1); by default it stays shut."""

    def __init__(self, jaw=lambda t: 0.0):
        self.profile = SIM_FACE.to_dict()
        self.jaw = jaw
        names = [a["name"] for a in self.profile["actuators"]]
        self.rest = np.array([a["rest"] for a in self.profile["actuators"]], np.float32)
        self.jaw_index = names.index("lower.jaw")

    def describe(self) -> dict:
        return self.profile

    def state_at(self, t: float) -> np.ndarray:
        state = self.rest.copy()
        state[self.jaw_index] = self.jaw(t)
        return state


def frame_times(path) -> np.ndarray:
    """The decoded video frames' timestamps (ffprobe -show_frames; `pts_time`, once `pkt_pts_time`)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_frames", "-show_entries",
                          "frame=pts_time,pkt_pts_time", "-of", "json", str(path)], check=True, capture_output=True,
                         text=True).stdout
    return np.array([float(f.get("pts_time", f.get("pkt_pts_time"))) for f in json.loads(out)["frames"]])


def decoded_frames(path, size: int) -> np.ndarray:
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-fps_mode", "passthrough", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, size, size, 3).astype(np.float32)


def recorded_audio(path) -> np.ndarray:
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "f32le", "-ac", "1",
                          "-ar", str(SAMPLE_RATE), "-"], check=True, capture_output=True).stdout
    return np.frombuffer(out, np.float32)


@pytest.mark.parametrize("latency_ms", [0, 200])
def test_the_jaw_moves_in_the_recording_at_step_plus_latency(tmp_path, latency_ms):
    size, fps = 96, 25.0
    step = {"at": float("inf")}
    robot = JawStandIn(lambda t: 1.0 if t >= step["at"] else 0.0)
    camera = SimulatedCamera(robot, fps=fps, size=size, latency_ms=latency_ms, noise=2.0, seed=3)
    out = tmp_path / "jaw.mkv"
    camera.start(out)
    step["at"] = camera.started_at + 0.5   # set long before any frame at t ≥ 0.5 s is drawn
    time.sleep(1.2)
    report = camera.stop()

    times = frame_times(out)
    frames = decoded_frames(out, size)
    assert len(frames) == len(times) == report["frames"] >= 25
    energy = np.abs(frames - frames[0]).mean(axis=(1, 2, 3))   # how far each frame is from the shut jaw
    assert energy.max() > 5 * max(energy[1:5].max(), 0.5), "the jaw's opening must stand out from the noise"
    first_open = times[np.argmax(energy > energy.max() / 2)]
    expected = 0.5 + latency_ms / 1000.0
    # Frame k (at k/fps) shows the robot at k/fps − latency: the first open frame is the first slot ≥ expected.
    assert expected - 1e-6 <= first_open <= expected + 1.0 / fps + 1e-6


def test_drops_leave_gaps_and_audio_lands_at_its_offset(tmp_path):
    size, fps, drop = 64, 25.0, 0.25
    camera = SimulatedCamera(JawStandIn(), fps=fps, size=size, drop=drop, noise=1.0, audio_latency_ms=80, seed=11)
    # A 0.3 s burst of seeded white noise: one sharp cross-correlation peak.
    burst = np.random.default_rng(5).uniform(-0.5, 0.5, int(0.3 * SAMPLE_RATE)).astype(np.float32)
    wav_path = tmp_path / "burst.wav"
    with wave.open(str(wav_path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes((burst * 32767).astype("<i2").tobytes())
    out = tmp_path / "take.mkv"
    camera.start(out)
    camera.play_audio(wav_path, at=camera.started_at + 0.4)
    time.sleep(1.5)
    report = camera.stop()

    times = frame_times(out)
    assert report["frames"] == len(times)
    slots = np.rint(times * fps)
    assert np.allclose(times, slots / fps, atol=0.0015), "every frame sits on its capture slot k/fps"
    gaps = np.diff(slots)
    assert (gaps >= 1).all() and (gaps > 1).any(), "dropped frames leave gaps in the timeline"
    missing = int((gaps - 1).sum())
    assert report["dropped"] >= missing >= 1
    total = report["frames"] + report["dropped"]
    assert 0.1 < report["dropped"] / total < 0.45   # ~25 % dropped

    assert report["has_audio"] is True
    audio = recorded_audio(out)
    n = len(audio) + len(burst)
    correlation = np.fft.irfft(np.fft.rfft(audio, n) * np.conj(np.fft.rfft(burst, n)), n)
    lag = int(np.argmax(correlation[:len(audio)]))
    assert abs(lag / SAMPLE_RATE - (0.4 + 0.080)) <= 0.001


def test_a_render_failure_fails_start_clearly(tmp_path):
    class Broken(JawStandIn):
        def describe(self):
            return {"name": "broken", "actuators": []}

    with pytest.raises(HardwareError, match="cannot film"):
        SimulatedCamera(Broken(), size=64).start(tmp_path / "x.mkv")
    assert not list(tmp_path.iterdir())


def test_a_robot_failing_mid_recording_is_device_lost(tmp_path):
    def jaw(t):
        if t > failing["after"]:
            raise HardwareError("simulated robot disconnected")
        return 0.0

    failing = {"after": float("inf")}
    camera = SimulatedCamera(JawStandIn(jaw), size=64)
    camera.start(tmp_path / "x.mkv")
    failing["after"] = camera.started_at + 0.2
    deadline = time.monotonic() + 5
    with pytest.raises(DeviceLost, match="disconnected"):
        while time.monotonic() < deadline:
            camera.check()
            time.sleep(0.05)
    with pytest.raises(DeviceLost):
        camera.stop()
    assert not (tmp_path / "x.mkv").exists()
