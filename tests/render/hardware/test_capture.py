"""Tests for render.hardware.capture: a simulated robot filmed by a simulated camera in real time becomes a
checked stimulus aligned to its speech within one frame, whatever the link latency (0–300 ms), jitter, camera
delay, dropped frames and pixel noise; the faults (camera gone, robot lost mid-capture, a command that is not a
number, a cancel, a tail too short for the robot's delay, a marker nobody can see) leave the robot at rest and
nothing written; calibration finds the simulated latency and servo speeds.

The truth is never the capture's own estimate: it comes from the simulator's logs (when each command really
took effect, the camera's configured delay and its first frame's instant), from decoding the stimulus with
ffmpeg, or from numbers chosen here.
"""
import shutil
import threading
import wave

import numpy as np
import pytest

from inference.robots import SIM_FACE
from render.checks import check_stimulus
from render.hardware.camera import FFmpegCamera, SimulatedCamera, read_audio
from render.hardware.capture import (CaptureCancelled, CaptureError, CaptureSettings, calibrate, capture_stimulus,
                                     health, marker_actuators)
from render.hardware.simulated import NEUTRAL_FRAME, SimulatedRobot

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")

FPS = 25
RATE = 48000
PROFILE = SIM_FACE.to_dict()
NAMES = [a["name"] for a in PROFILE["actuators"]]
REST = np.array([a["rest"] for a in PROFILE["actuators"]])


def _speech(path, seconds=1.2, click_at=None):
    """A 'speech' recording: a 220 Hz tone gated at 3 Hz (or silence with one click at `click_at` s)."""
    t = np.arange(int(seconds * RATE)) / RATE
    if click_at is None:
        signal = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    else:
        signal = np.zeros_like(t)
        k = int(click_at * RATE)
        signal[k:k + 240] = 0.8 * np.sin(2 * np.pi * 1000 * t[:240])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((signal * 32767).astype("<i2").tobytes())
    return path


def _trajectory(frames, jaw_step_at=None):
    """Rest, with the jaw swinging (or stepping open at frame `jaw_step_at`)."""
    values = np.tile(REST, (frames, 1))
    jaw = NAMES.index("lower.jaw")
    if jaw_step_at is None:
        values[:, jaw] = 0.5 + 0.4 * np.sin(2 * np.pi * 1.5 * np.arange(frames) / FPS)
    else:
        values[jaw_step_at:, jaw] = 1.0
    return values


def _true_start(robot, camera, result, frames):
    """Where motion commanded at the speech's first frame really shows in the recording (seconds of its
    timeline), from the simulator: when each of the trajectory's commands took effect on the robot, on
    average, plus the camera's delay, minus the camera's first frame's instant."""
    start_at = result.play["start_at"]
    speech_frame = result.play["timeline_frames"] - frames - int(np.ceil(CaptureSettings().tail_s * FPS - 1e-9))
    delays = [effective - (start_at + frame / FPS)
              for (sent, frame, _cmd), effective in zip(robot.sent_log, robot.effective_log)
              if frame != NEUTRAL_FRAME and speech_frame <= frame < speech_frame + frames and effective is not None]
    assert len(delays) == frames
    return start_at + speech_frame / FPS + float(np.mean(delays)) + camera.latency_s - result.recording["started_at"]


def _decoded_frames(path, size=64):
    import subprocess

    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-vf", f"scale={size}:{size},format=gray",
                          "-f", "rawvideo", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, size, size).astype(np.float32)


def _connected(**options):
    robot = SimulatedRobot(PROFILE, **options)
    robot.connect()
    return robot


@pytest.mark.parametrize("latency_ms, jitter_ms, camera_ms, drop", [
    (0, 0, 0, 0.0),
    (150, 15, 30, 0.03),
    (300, 20, 60, 0.03),
])
def test_captured_stimulus_is_aligned_to_its_speech_within_one_frame(tmp_path, latency_ms, jitter_ms, camera_ms, drop):
    frames = 30
    robot = _connected(latency_ms=latency_ms, jitter_ms=jitter_ms, seed=4)
    camera = SimulatedCamera(robot, fps=FPS, size=128, latency_ms=camera_ms, drop=drop, noise=2.0, seed=5)
    audio = _speech(tmp_path / "speech.wav")
    out = tmp_path / "stimulus.mp4"
    result = capture_stimulus(robot, camera, _trajectory(frames), FPS, audio, out)

    truth = _true_start(robot, camera, result, frames)
    assert abs(result.sync["v_start_s"] - truth) < 1 / FPS, (result.sync, truth)
    assert result.sync["method"] == "marker+audio"
    # The stimulus passes the platform's checks and lasts exactly the trajectory.
    facts = check_stimulus(out)
    assert abs(facts.duration_s - frames / FPS) < 1e-6 and len(_decoded_frames(out)) == frames
    # Its sound is the clean source (not the recording's), starting the sub-frame remainder of the offset in.
    heard = read_audio(out, RATE)
    source = read_audio(audio, RATE)
    advance = int(round(result.sync["audio_advance_ms"] / 1000 * RATE))
    assert 0 <= advance < RATE / FPS
    n = int(0.9 * RATE)
    lags = range(advance - 480, advance + 481, 8)
    best = max(lags, key=lambda lag: float(np.dot(heard[2000:2000 + n], source[2000 + lag:2000 + lag + n])))
    assert abs(best - advance) <= 48  # 1 ms, the AAC codec's own delay handled by the encoder
    # The robot was sent back to rest and nothing else was left beside the stimulus.
    assert robot.neutral_log and robot.neutral_log[-1][1] == "sent"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.wav", "stimulus.mp4"]


def test_a_jaw_step_at_the_click_shows_within_a_frame_of_it_in_the_stimulus(tmp_path):
    """End to end, read from the encoded stimulus alone: the speech has a click at 0.6 s and the jaw is
    commanded open from frame 15 (0.6 s); with 250 ms of link delay the jaw starts moving in the stimulus's
    frame 15 (first seen changed in frame 15 or 16) — not 6 frames later, where the unaligned recording has it."""
    robot = _connected(latency_ms=250, jitter_ms=5, seed=2)
    camera = SimulatedCamera(robot, fps=FPS, size=128, latency_ms=20, noise=1.0, seed=3)
    audio = _speech(tmp_path / "click.wav", seconds=1.2, click_at=0.6)
    out = tmp_path / "stimulus.mp4"
    capture_stimulus(robot, camera, _trajectory(30, jaw_step_at=15), FPS, audio, out)
    grey = _decoded_frames(out)
    change = np.abs(grey - grey[:10].mean(axis=0)).mean(axis=(1, 2))
    first_changed = int(np.argmax(change > change[:10].max() + 1.0))
    assert first_changed in (15, 16), change.round(2)
    sound = read_audio(out, RATE)
    click = int(np.argmax(np.abs(sound) > 0.4)) / RATE
    assert abs(click - 0.6) < 1 / FPS


def test_without_a_marker_the_calibrated_latency_and_the_heard_sound_place_the_motion(tmp_path):
    frames = 25
    robot = _connected(latency_ms=120, seed=1)
    camera = SimulatedCamera(robot, fps=FPS, size=96, latency_ms=30, seed=1)
    audio = _speech(tmp_path / "speech.wav", seconds=1.0)
    result = capture_stimulus(robot, camera, _trajectory(frames), FPS, audio, tmp_path / "s.mp4",
                              settings={"marker": False}, calibration={"latency_ms": 150.0})
    assert result.sync["method"] == "audio+calibration"
    assert abs(result.sync["v_start_s"] - _true_start(robot, camera, result, frames)) < 1 / FPS

    with pytest.raises(CaptureError, match="no marker was played.*no calibrated latency"):
        capture_stimulus(robot, camera, _trajectory(frames), FPS, audio, tmp_path / "t.mp4",
                         settings={"marker": False})
    assert not (tmp_path / "t.mp4").exists()


def test_a_robot_lost_mid_capture_is_retried_from_the_start_and_then_given_up(tmp_path):
    audio = _speech(tmp_path / "speech.wav", seconds=1.0)
    robot = _connected(latency_ms=40, fail_after_s=1.0)
    camera = SimulatedCamera(robot, fps=FPS, size=96)
    stages = []
    with pytest.raises(CaptureError, match="lost its link.*gave up after 2 attempt"):
        capture_stimulus(robot, camera, _trajectory(25), FPS, audio, tmp_path / "s.mp4", progress=stages.append,
                         settings={"retries": 1})
    assert sum(s.startswith("recording") for s in stages) == 2
    assert not (tmp_path / "s.mp4").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["speech.wav"]
    # The failsafe and the neutral command leave every actuator at rest.
    np.testing.assert_allclose(robot.state_at(robot.clock() + 5.0), REST)

    # The link comes back after the first loss: the second attempt captures the stimulus.
    robot = _connected(latency_ms=40, fail_after_s=1.0)
    camera = SimulatedCamera(robot, fps=FPS, size=96)

    def heal(stage):
        if stage.startswith("device lost"):
            robot.fail_after_s = None

    result = capture_stimulus(robot, camera, _trajectory(25), FPS, audio, tmp_path / "s.mp4", progress=heal)
    assert result.attempts == 2
    check_stimulus(tmp_path / "s.mp4")


def test_a_camera_that_is_gone_fails_cleanly_with_the_robot_at_rest(tmp_path):
    audio = _speech(tmp_path / "speech.wav", seconds=0.6)
    robot = _connected()
    camera = FFmpegCamera(f"file:{tmp_path / 'no-such-camera.mp4'}")
    with pytest.raises(CaptureError, match="no-such-camera"):
        capture_stimulus(robot, camera, _trajectory(15), FPS, audio, tmp_path / "s.mp4")
    assert [n for n in robot.neutral_log if n[1] == "sent"]
    assert [f for _t, f, _c in robot.sent_log if f != NEUTRAL_FRAME] == []   # nothing was played
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.wav"]


def test_a_command_that_is_not_a_number_is_refused_before_anything_moves(tmp_path):
    audio = _speech(tmp_path / "speech.wav", seconds=0.6)
    robot = _connected()
    camera = SimulatedCamera(robot, fps=FPS, size=64)
    trajectory = _trajectory(15)
    trajectory[7, NAMES.index("upper.brow_left")] = np.nan
    with pytest.raises(CaptureError, match="upper.brow_left.*frame 7.*not a number"):
        capture_stimulus(robot, camera, trajectory, FPS, audio, tmp_path / "s.mp4")
    assert [f for _t, f, _c in robot.sent_log] == [NEUTRAL_FRAME]
    assert camera.started_at is None
    assert not (tmp_path / "s.mp4").exists()


def test_cancel_stops_the_robot_and_returns_it_to_rest(tmp_path):
    audio = _speech(tmp_path / "speech.wav", seconds=2.0)
    robot = _connected()
    camera = SimulatedCamera(robot, fps=FPS, size=64)
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    with pytest.raises(CaptureCancelled, match="cancelled"):
        capture_stimulus(robot, camera, _trajectory(50), FPS, audio, tmp_path / "s.mp4", cancel=cancel)
    played = [f for _t, f, _c in robot.sent_log if f != NEUTRAL_FRAME]
    assert 0 < len(played) < 50 + 40
    assert robot.sent_log[-1][1] == NEUTRAL_FRAME
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.wav"]


def test_a_robot_later_than_the_tail_is_an_error_not_a_short_stimulus(tmp_path):
    audio = _speech(tmp_path / "speech.wav", seconds=0.6)
    robot = _connected(latency_ms=400)
    camera = SimulatedCamera(robot, fps=FPS, size=64)
    with pytest.raises(CaptureError, match="longer tail"):
        capture_stimulus(robot, camera, _trajectory(15), FPS, audio, tmp_path / "s.mp4", settings={"tail_s": 0.1})
    assert not (tmp_path / "s.mp4").exists()


def test_a_marker_the_camera_cannot_see_is_reported(tmp_path):
    """The camera films something else (a still test picture with no sound): neither the marker nor the
    sound can place the motion."""
    import subprocess

    still = tmp_path / "still.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=96x96:rate=25:duration=6",
                    "-pix_fmt", "yuv420p", str(still)], check=True)
    audio = _speech(tmp_path / "speech.wav", seconds=0.6)
    robot = _connected()
    camera = FFmpegCamera(f"file:{still}")
    with pytest.raises(CaptureError, match="marker impulse was not seen.*sound was not found"):
        capture_stimulus(robot, camera, _trajectory(15), FPS, audio, tmp_path / "s.mp4",
                         speaker=_NullSpeaker())
    assert not (tmp_path / "s.mp4").exists()


class _NullSpeaker:
    """A speaker that is not connected to anything the camera hears."""

    def play(self, wav_path, at):
        pass


def test_marker_defaults_to_the_fastest_actuators_or_the_profiles_choice():
    chosen = marker_actuators(PROFILE)
    assert sorted(NAMES[j] for j, _ in chosen) == ["upper.eyelid_left", "upper.eyelid_right"]
    assert all(target == 1.0 for _, target in chosen)   # rest 0.2: the far end is closed
    custom = {**PROFILE, "extra": {"sync_marker": {"actuators": ["lower.jaw"], "to": 0.8}}}
    assert marker_actuators(custom) == [(NAMES.index("lower.jaw"), 0.8)]
    with pytest.raises(CaptureError, match="sync_marker"):
        marker_actuators({**PROFILE, "extra": {"sync_marker": {"actuators": ["lower.tongue"]}}})


def test_settings_are_checked():
    with pytest.raises(CaptureError, match="size must be two positive even"):
        CaptureSettings(size=(101, 100))
    with pytest.raises(CaptureError, match="unknown keys colour"):
        CaptureSettings.from_dict({"colour": "red"})
    assert CaptureSettings.from_dict(CaptureSettings(size=(64, 48)).to_dict()) == CaptureSettings(size=(64, 48))


def test_calibration_measures_the_simulated_latency_and_servo_speeds(tmp_path):
    robot = _connected(latency_ms=120, jitter_ms=5, seed=9)
    camera = SimulatedCamera(robot, fps=FPS, size=128, latency_ms=30, noise=1.0, seed=2)
    figures = calibrate(robot, camera, repeats=3, actuators=["upper.eyelid_left", "lower.jaw", "head.pan"])
    # 120 ms link + 30 ms camera + the jitter's mean (σ·√(2/π) = 4 ms).
    assert abs(figures["latency_ms"] - 154) < 15, figures
    assert len(figures["latencies_ms"]) == 3
    jaw, pan = figures["actuators"]["lower.jaw"], figures["actuators"]["head.pan"]
    assert 3.0 < jaw["speed_per_s"] < 7.5, jaw           # the profile's 5 units/s
    assert 1.0 < pan["speed_per_s"] < 2.2, pan           # 1.5 units/s
    assert 100 < jaw["latency_ms"] < 210, jaw
    assert figures["measured_at"].endswith("+00:00")
    np.testing.assert_allclose(robot.state_at(robot.clock() + 5.0), REST)


def test_health_reports_each_device():
    robot = SimulatedRobot(PROFILE)
    camera = FFmpegCamera("v4l2:/dev/video99")
    report = health(robot, camera)
    assert report["ok"] is False
    assert report["robot"]["ok"] is False and "not connected" in report["robot"]["detail"]
    assert report["camera"]["ok"] is False
    robot.connect()
    assert health(robot, SimulatedCamera(robot, size=64))["ok"] is True
