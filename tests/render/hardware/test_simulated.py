"""The simulated robot in real time: frames go out on their deadlines, commands take effect after the
seeded latency and jitter, the servos follow them under their speed limits and lag, and faults end in
DeviceLost with the robot back at rest.

Wall-clock checks allow ≥ 50 ms; everything else is checked on the recorded timestamps.
"""
import math
import threading

import numpy as np
import pytest

from inference.robots import SIM_FACE
from render.hardware.base import CommandOutOfRange, DeviceLost, HardwareError
from render.hardware.simulated import NEUTRAL_FRAME, SimulatedRobot

SLACK_S = 0.05


def _profile(*actuators, name="test-bot"):
    return {"name": name, "actuators": list(actuators), "latency_ms": 0.0, "extra": {}}


def _actuator(name, **fields):
    return {"name": name, "lower": 0.0, "upper": 1.0, "rest": 0.0, "max_speed": None, "pose_channel": None,
            "pose_range_deg": None, **fields}


def test_frames_leave_on_deadlines_counted_from_the_start():
    robot = SimulatedRobot(SIM_FACE.to_dict(), latency_ms=40)
    robot.connect()
    start = robot.clock() + 0.05
    trajectory = np.tile(SIM_FACE.rest, (25, 1))
    report = robot.play(trajectory, 50, start_at=start)

    assert report.frames == 25 and report.clamped == 0
    sent = np.array([entry[0] for entry in robot.sent_log])
    lateness = sent - (start + np.arange(25) / 50)
    assert lateness.min() >= 0 and lateness.max() < SLACK_S        # no drift: each against its own deadline
    assert [entry[1] for entry in robot.sent_log] == list(range(25))
    assert report.started_at == sent[0]
    np.testing.assert_allclose(np.array(robot.effective_log) - sent, 0.040, atol=1e-9)   # no jitter: latency only


def test_latency_and_jitter_show_in_effective_log_with_half_normal_statistics():
    profile = _profile(_actuator("upper.brow_left"))
    frames, latency_ms, jitter_ms = 200, 120.0, 5.0

    def delays(seed):
        robot = SimulatedRobot(profile, latency_ms=latency_ms, jitter_ms=jitter_ms, seed=seed)
        robot.connect()
        robot.play(np.linspace(0, 1, frames)[:, None], 200)
        sent = np.array([entry[0] for entry in robot.sent_log])
        return (np.array(robot.effective_log) - sent) * 1000.0

    first, again, other = delays(7), delays(7), delays(8)
    jitter = first - latency_ms
    assert jitter.min() >= -1e-9                                   # truncated at 0: never earlier than the latency
    # Half-normal with σ = 5 ms: mean σ·√(2/π) ≈ 3.99 ms, sd σ·√(1 − 2/π) ≈ 3.01 ms (200 draws: se ≈ 0.2 ms).
    # The draws do not depend on when frames went out, so these hold however loaded the machine is.
    assert jitter.mean() == pytest.approx(jitter_ms * math.sqrt(2 / math.pi), abs=1.0)
    assert jitter.std() == pytest.approx(jitter_ms * math.sqrt(1 - 2 / math.pi), abs=1.0)
    np.testing.assert_allclose(first, again, atol=1e-9)            # seeded: the same draws again
    assert not np.allclose(first, other)


def test_state_follows_the_commands_under_speed_limit_and_lag():
    # A: slew-limited at 4 units/s. B: 2 units/s and a 100 ms first-order lag (τ·speed = 0.2 units: beyond that
    # gap it ramps at full speed, within it it closes exponentially).
    profile = _profile(_actuator("upper.brow_left", max_speed=4.0),
                       _actuator("upper.brow_right", max_speed=2.0, time_constant_ms=100.0))
    robot = SimulatedRobot(profile, latency_ms=100)
    robot.connect()
    robot.play([[1.0, 1.0], [0.2, 1.0]], 1.0)                      # second frame a second later
    (s0, _, _), (s1, _, _) = robot.sent_log
    e0, e1 = robot.effective_log
    assert e0 == pytest.approx(s0 + 0.1) and e1 == pytest.approx(s1 + 0.1)

    np.testing.assert_allclose(robot.state_at(s0 - 1.0), [0.0, 0.0])          # at rest before anything
    np.testing.assert_allclose(robot.state_at(e0 - 0.01), [0.0, 0.0])         # sent, not yet in effect
    np.testing.assert_allclose(robot.state_at(e0 + 0.125), [0.5, 0.25])       # 4 × 0.125; 2 × 0.125
    np.testing.assert_allclose(robot.state_at(e0 + 0.4), [1.0, 0.8])          # A arrived at 0.25 s; B ramps
    np.testing.assert_allclose(robot.state_at(e0 + 0.5), [1.0, 1.0 - 0.2 * math.exp(-1.0)])   # B: lag phase
    np.testing.assert_allclose(robot.state_at(e1 + 0.1)[0], 1.0 - 0.4)        # A comes back at 4 units/s
    np.testing.assert_allclose(robot.state_at(e1 + 0.2)[0], 0.2)              # and stops at the command
    np.testing.assert_allclose(robot.state_at(e1 + 5.0)[0], 0.2)


def test_fail_after_raises_device_lost_and_the_robot_ends_at_rest():
    profile = SIM_FACE.to_dict()
    robot = SimulatedRobot(profile, latency_ms=100, fail_after_s=0.5)
    robot.connect()
    away = np.where(SIM_FACE.rest > 0.5, 0.0, 1.0)
    with pytest.raises(DeviceLost, match="lost its link.*connect\\(\\) again"):
        robot.play(np.tile(away, (40, 1)), 20)                     # 2 s of motion; the link drops at 0.5 s

    lost_at = robot.link_lost_at
    assert lost_at == pytest.approx(robot.connected_at + 0.5)
    assert robot.sent_log and max(entry[0] for entry in robot.sent_log) < lost_at
    assert len(robot.sent_log) < 40
    assert robot.effective_log[-1] is None                         # in flight when the link dropped: lost
    assert robot.neutral_log and robot.neutral_log[-1][0] >= lost_at   # neutral was attempted
    np.testing.assert_allclose(robot.state_at(lost_at + 2.0), SIM_FACE.rest, atol=1e-6)
    assert not robot.health()["ok"]
    with pytest.raises(DeviceLost):
        robot.play(np.tile(away, (2, 1)), 20)

    robot.connect()
    assert robot.health()["ok"]


def test_non_numbers_are_refused_before_anything_is_sent():
    robot = SimulatedRobot(SIM_FACE.to_dict())
    robot.connect()
    trajectory = np.tile(SIM_FACE.rest, (3, 1))
    trajectory[1, 4] = np.nan
    with pytest.raises(CommandOutOfRange, match="lower.jaw.*frame 1"):
        robot.play(trajectory, 25)
    assert robot.sent_log == []


def test_commands_are_clamped_to_each_actuators_range_and_counted():
    profile = _profile(_actuator("lower.jaw", lower=0.1, upper=0.9, rest=0.1), _actuator("upper.brow_left"))
    robot = SimulatedRobot(profile)
    robot.connect()
    report = robot.play([[-0.5, 0.5], [0.5, 1.5], [1.2, 0.3]], 100)
    assert report.clamped == 3
    np.testing.assert_allclose(report.sent, [[0.1, 0.5], [0.5, 1.0], [0.9, 0.3]])
    np.testing.assert_allclose(np.stack([entry[2] for entry in robot.sent_log]), report.sent)


def test_wrong_use_gives_specific_errors():
    robot = SimulatedRobot(SIM_FACE.to_dict())
    with pytest.raises(HardwareError, match="connect"):
        robot.play(np.tile(SIM_FACE.rest, (2, 1)), 25)
    robot.connect()
    with pytest.raises(HardwareError, match="\\[frames, 11\\]"):
        robot.play(np.zeros((4, 3)), 25)
    with pytest.raises(HardwareError, match="frame rate"):
        robot.play(np.tile(SIM_FACE.rest, (2, 1)), 0)
    with pytest.raises(HardwareError, match="jitter_ms"):
        SimulatedRobot(SIM_FACE.to_dict(), jitter_ms=-1)


def test_stop_from_another_thread_ends_the_play_and_the_robot_holds():
    robot = SimulatedRobot(SIM_FACE.to_dict())
    robot.connect()
    timer = threading.Timer(0.2, robot.stop)
    timer.start()
    report = robot.play(np.tile(SIM_FACE.rest, (250, 1)), 50)      # would take 5 s
    timer.join()
    assert 5 <= report.frames < 250
    assert len(robot.sent_log) == report.frames
    assert robot.sent_log[-1][0] - robot.sent_log[0][0] < 0.2 + 0.5


def test_context_manager_returns_to_neutral():
    profile = SIM_FACE.to_dict()
    with SimulatedRobot(profile, latency_ms=30) as robot:
        robot.play(np.tile(np.where(SIM_FACE.rest > 0.5, 0.0, 1.0), (5, 1)), 50)
    last_time, frame, commands = robot.sent_log[-1]
    assert frame == NEUTRAL_FRAME
    np.testing.assert_allclose(commands, SIM_FACE.rest)
    np.testing.assert_allclose(robot.state_at(last_time + 5.0), SIM_FACE.rest, atol=1e-6)
    assert robot.describe()["latency_ms"] == 30
    assert not robot.health()["ok"]                                # closed
