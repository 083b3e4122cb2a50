"""Tests for render.checks.sync_self_test: a known motion impulse and a known click come out in one frame
through the real encoder, and the test is able to fail: a renderer whose picture is 3 frames late (or one
frame early) fails it, and so does one that draws nothing.

Each run renders and decodes a 2 s, 96×96 clip: about a second.
"""

import numpy as np
import pytest

from inference.motion import time_shift
from render.checks import StimulusCheckError, SyncReport, flash_render, sync_self_test
from render.encode import encode_stimulus


def test_the_default_render_passes_with_the_flash_on_the_click_frame():
    report = sync_self_test()

    assert isinstance(report, SyncReport)
    assert report.passed, report.message
    assert report.flash_frame == report.impulse_frame == 25
    assert report.click_time_s == pytest.approx(1.02, abs=0.002)  # the middle of frame 25
    assert abs(report.offset_frames) < 0.1
    assert report.message.startswith("sync self-test passed")


def test_a_picture_three_frames_late_fails():
    def late_render(clip, audio_path, out_path):
        flash_render(time_shift(clip, 3 * 1000 / clip.fps), audio_path, out_path)

    report = sync_self_test(late_render)

    assert not report.passed
    assert report.flash_frame == 28
    assert report.offset_frames == pytest.approx(3.0, abs=0.1)
    assert "3.0 frames (120 ms) late" in report.message


def test_a_picture_one_frame_early_fails_too():
    report = sync_self_test(lambda clip, audio, out: flash_render(time_shift(clip, -40), audio, out))

    assert not report.passed
    assert report.offset_frames == pytest.approx(-1.0, abs=0.1)
    assert "early" in report.message


def test_a_renderer_that_ignores_the_motion_fails_saying_so():
    def blank_render(clip, audio_path, out_path):
        frames = (np.full((96, 96, 3), 40, np.uint8) for _ in range(clip.n_frames))
        encode_stimulus(frames, audio_path, out_path, fps=clip.fps, width=96, height=96)

    report = sync_self_test(blank_render)

    assert not report.passed and report.flash_frame is None
    assert "no frame differs visibly" in report.message


def test_a_renderer_that_writes_no_usable_stimulus_raises_the_check_failure():
    def broken_render(clip, audio_path, out_path):
        out_path.write_bytes(b"not a video")

    with pytest.raises(StimulusCheckError, match="ffprobe cannot read the file"):
        sync_self_test(broken_render)


@pytest.mark.parametrize("embodiment", ["avatar", "robot"])
def test_the_real_rigs_pass_the_sync_self_test(embodiment):
    """The whole stimulus path — rig, offscreen renderer, encoder — keeps a jaw impulse on its click's frame.
    The robot's servo latency is set to zero here: with latency the robot is late by design (the sim shows
    what a real robot does), which is not an encoding fault."""
    from inference.robots import robot_profile
    from render.avatar import Avatar
    from render.offscreen import RenderSettings
    from render.robot import SimRobot
    from render.stimulus import make_stimulus

    settings = RenderSettings(width=128, height=128, supersample=1)
    if embodiment == "avatar":
        rig = Avatar()

        def render_fn(clip, audio, out):
            make_stimulus(rig, clip, audio, out, settings=settings)
    else:
        profile = robot_profile("sim-face").to_dict()
        profile["latency_ms"] = 0.0
        for actuator in profile["actuators"]:
            actuator["max_speed"] = 1000.0  # no slew limit: the impulse must reach the jaw in its frame
            actuator.pop("latency_ms", None)
        rig = SimRobot(profile)
        jaw = rig.channels.index("lower.jaw")

        def render_fn(clip, audio, out):
            rest = [next(a["rest"] for a in profile["actuators"] if a["name"] == c) for c in rig.channels]
            motors = np.tile(np.asarray(rest, np.float32), (clip.n_frames, 1))  # the robot holds its rest pose
            motors[:, jaw] = clip.values[:, clip.channels.index("jawOpen")]
            from inference.motion import MotionClip

            make_stimulus(rig, MotionClip(fps=clip.fps, layout=rig.consumes, values=motors, channels=rig.channels),
                          audio, out, settings=settings)

    report = sync_self_test(render_fn)
    assert report.passed, report.message
    assert report.flash_frame == report.impulse_frame
