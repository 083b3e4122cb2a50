"""MaestroRobot against a fake Maestro on a real pseudo-terminal.

The driver opens the pty's slave by its tty name, exactly as it opens /dev/ttyACM0; the fake reads the master
end, decodes every compact-protocol command byte by byte (Pololu Maestro User's Guide, section 5.e: command
byte with the top bit set, 7-bit data bytes), answers Get Errors / Get Position / Get Moving State as the guide
documents, and records (time.monotonic(), command). Expected bytes are computed by hand in each test.
"""
from __future__ import annotations

import errno
import os
import select
import threading
import time

import numpy as np
import pytest
import serial

from render.hardware.base import CommandOutOfRange, DeviceLost, DeviceNotFound, HardwareError
from render.hardware.maestro import (MaestroRobot, error_names, get_errors, get_moving_state, get_position, go_home,
                                     set_acceleration, set_multiple_targets, set_speed, set_target)

DATA_LENGTHS = {0x84: 3, 0x87: 3, 0x89: 3, 0x90: 1, 0x93: 0, 0xA1: 0, 0xA2: 0}   # 0x9F: 2 + 2 × count


class FakeMaestro:
    """A Maestro's Command Port at the far end of a pseudo-terminal."""

    def __init__(self, errors: int = 0, silent: bool = False):
        self.master, self.slave = os.openpty()
        self.port = os.ttyname(self.slave)
        self.errors, self.silent = errors, silent
        self.positions: dict[int, int] = {}
        self.moving_state = 0
        self.raw = bytearray()
        self.commands: list[tuple[float, tuple]] = []
        self.protocol_errors: list[str] = []
        self._packet = bytearray()
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    # -- decoding --

    def _serve(self):
        while self._running:
            ready, _, _ = select.select([self.master], [], [], 0.02)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                return
            now = time.monotonic()
            self.raw += chunk
            for byte in chunk:
                self._feed(byte, now)

    def _feed(self, byte: int, now: float):
        if byte & 0x80:
            if self._packet:
                self._protocol_error(f"command 0x{self._packet[0]:02X} interrupted by 0x{byte:02X}")
            if byte != 0x9F and byte not in DATA_LENGTHS:
                self._protocol_error(f"unknown command byte 0x{byte:02X}")
                return
            self._packet = bytearray([byte])
        elif not self._packet:
            self._protocol_error(f"data byte 0x{byte:02X} outside a command")
            return
        else:
            self._packet.append(byte)
        command = self._packet[0]
        size = 2 + 2 * self._packet[1] if command == 0x9F and len(self._packet) > 1 else DATA_LENGTHS.get(command)
        if size is not None and len(self._packet) == 1 + size:
            packet, self._packet = bytes(self._packet), bytearray()
            self._execute(packet, now)

    def _protocol_error(self, why: str):
        self.protocol_errors.append(why)
        self.errors |= 1 << 4
        self._packet = bytearray()

    def _execute(self, p: bytes, now: float):
        value = lambda lo, hi: lo | hi << 7   # noqa: E731
        reply = None
        if p[0] == 0x84:
            command = ("set_target", p[1], value(p[2], p[3]))
            self.positions[p[1]] = command[2]
        elif p[0] == 0x9F:
            targets = tuple(value(p[3 + 2 * k], p[4 + 2 * k]) for k in range(p[1]))
            command = ("set_multiple_targets", p[2], targets)
            for k, target in enumerate(targets):
                self.positions[p[2] + k] = target
        elif p[0] == 0x87:
            command = ("set_speed", p[1], value(p[2], p[3]))
        elif p[0] == 0x89:
            command = ("set_acceleration", p[1], value(p[2], p[3]))
        elif p[0] == 0x90:
            command = ("get_position", p[1])
            reply = self.positions.get(p[1], 0).to_bytes(2, "little")
        elif p[0] == 0x93:
            command = ("get_moving_state",)
            reply = bytes([self.moving_state])
        elif p[0] == 0xA1:
            command = ("get_errors",)
            reply, self.errors = self.errors.to_bytes(2, "little"), 0   # reading the register clears it
        else:
            command = ("go_home",)
        # Record (and change state) before answering, so whoever reads the answer sees the fake up to date.
        self.commands.append((now, command))
        if reply is not None:
            self._reply(reply)

    def _reply(self, data: bytes):
        if not self.silent:
            os.write(self.master, data)

    # -- the test's side --

    def wait_for(self, n_commands: int, timeout: float = 3.0) -> list[tuple]:
        deadline = time.monotonic() + timeout
        while len(self.commands) < n_commands and time.monotonic() < deadline:
            time.sleep(0.01)
        return [c for _, c in self.commands]

    def unplug(self):
        """The cable is pulled: the master end closes, and the driver's next write fails."""
        self._running = False
        self._thread.join()
        os.close(self.master)
        self.master = None

    def close(self):
        self._running = False
        self._thread.join()
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)
        self.master = self.slave = None


class Bus:
    """Stable port names for fakes, so a test can pull one and plug in another under the same name (as a USB
    device re-enumerating as /dev/ttyACM0). Opens the real pty with pyserial."""

    def __init__(self):
        self.plugged: dict[str, FakeMaestro] = {}
        self.opened: list[str] = []

    def open(self, port, **kwargs):
        fake = self.plugged.get(port)
        if fake is None:
            raise serial.SerialException(errno.ENOENT, f"could not open port {port}: [Errno 2] No such file or "
                                                       f"directory: '{port}'")
        self.opened.append(fake.port)
        return serial.serial_for_url(fake.port, **kwargs)


TWO = {"name": "two", "actuators": [
    {"name": "lower.jaw", "lower": 0.0, "upper": 1.0, "rest": 0.0, "max_speed": None},
    {"name": "head.pan", "lower": 0.0, "upper": 1.0, "rest": 0.5, "max_speed": 1.5},
]}
# The jaw runs 1000..2000 µs on channel 0; the pan servo is mounted mirrored, 2000..1000 µs, on channel 1.
WIRING = {"lower.jaw": {"channel": 0, "min_us": 1000, "max_us": 2000, "speed": 60, "acceleration": 10},
          "head.pan": {"channel": 1, "min_us": 2000, "max_us": 1000}}
CONNECT_BYTES = bytes([0x87, 0, 60, 0, 0x89, 0, 10, 0, 0xA1])


@pytest.fixture
def fakes():
    made = []

    def make(**kwargs):
        made.append(FakeMaestro(**kwargs))
        return made[-1]

    yield make
    for fake in made:
        fake.close()


def robot_on(fake, profile=TWO, wiring=WIRING, **kwargs) -> MaestroRobot:
    robot = MaestroRobot(fake.port, profile, wiring, timeout_s=kwargs.pop("timeout_s", 0.5), **kwargs)
    robot.connect()
    return robot


def played_targets(fake, skip: int) -> list[tuple]:
    return [c for _, c in fake.commands[skip:]]


# --- the protocol itself ----------------------------------------------------------------------------------

def test_encoders_reproduce_the_guides_worked_examples():
    assert set_target(2, 6000) == bytes([0x84, 0x02, 0x70, 0x2E])            # 1500 µs on channel 2
    assert set_speed(5, 140) == bytes([0x87, 0x05, 0x0C, 0x01])               # speed 140 on channel 5
    assert set_multiple_targets(3, [0, 6000]) == bytes([0x9F, 0x02, 0x03, 0x00, 0x00, 0x70, 0x2E])
    assert set_acceleration(1, 10) == bytes([0x89, 0x01, 0x0A, 0x00])
    assert get_position(4) == bytes([0x90, 0x04])
    assert get_moving_state() == bytes([0x93]) and get_errors() == bytes([0xA1]) and go_home() == bytes([0xA2])
    assert set_target(0, 16383) == bytes([0x84, 0, 0x7F, 0x7F])
    with pytest.raises(CommandOutOfRange):
        set_target(0, 16384)
    with pytest.raises(CommandOutOfRange):
        set_target(0, -1)
    with pytest.raises(CommandOutOfRange):
        set_acceleration(0, 256)
    assert error_names(0b1_0001_0001) == ["serial signal error", "serial protocol error",
                                          "script program counter error"]


def test_connect_sends_speed_and_acceleration_then_reads_the_error_register(fakes):
    fake = fakes()
    robot = robot_on(fake)
    assert bytes(fake.raw) == CONNECT_BYTES
    assert fake.wait_for(3) == [("set_speed", 0, 60), ("set_acceleration", 0, 10), ("get_errors",)]
    assert robot.health() == {"ok": True, "detail": f"Maestro on {fake.port!r} answers with no errors", "errors": []}


def test_a_trajectory_goes_out_as_exactly_the_documented_set_target_bytes(fakes):
    fake = fakes()
    robot = robot_on(fake)
    trajectory = [[0.5, 0.0], [0.25, 1.0], [1.0, 0.75]]
    report = robot.play(trajectory, fps=50)
    # jaw 0.5 → 1500 µs → 6000 q-µs = 46·128 + 112 → 0x70 0x2E;  pan 0.0 (mirrored) → 2000 µs → 8000 → 0x40 0x3E
    # jaw 0.25 → 1250 µs → 5000 = 39·128 + 8 → 0x08 0x27;        pan 1.0 → 1000 µs → 4000 = 31·128 + 32 → 0x20 0x1F
    # jaw 1.0 → 2000 µs → 8000 → 0x40 0x3E;                      pan 0.75 → 1250 µs → 5000 → 0x08 0x27
    expected = bytes([0x84, 0, 0x70, 0x2E, 0x84, 1, 0x40, 0x3E,
                      0x84, 0, 0x08, 0x27, 0x84, 1, 0x20, 0x1F,
                      0x84, 0, 0x40, 0x3E, 0x84, 1, 0x08, 0x27])
    commands = fake.wait_for(3 + 6)
    assert bytes(fake.raw) == CONNECT_BYTES + expected
    assert commands[3:] == [("set_target", 0, 6000), ("set_target", 1, 8000), ("set_target", 0, 5000),
                            ("set_target", 1, 4000), ("set_target", 0, 8000), ("set_target", 1, 5000)]
    assert fake.protocol_errors == []
    assert report.frames == 3 and report.clamped == 0
    np.testing.assert_array_equal(report.sent, trajectory)


def test_targets_round_to_the_nearest_quarter_microsecond(fakes):
    fake = fakes()
    robot = robot_on(fake)
    robot.play([[1 / 3, 0.3]], fps=50)
    # jaw 1333.33 µs → 5333.3 → 5333;  pan 2000 − 300 = 1700 µs → 6800
    assert fake.wait_for(5)[3:] == [("set_target", 0, 5333), ("set_target", 1, 6800)]


def test_frames_go_out_one_frame_period_apart_counted_from_the_start(fakes):
    fake = fakes()
    robot = robot_on(fake)
    fps, n = 20.0, 8
    start = time.monotonic() + 0.1
    report = robot.play(np.full((n, 2), 0.5), fps=fps, start_at=start)
    fake.wait_for(3 + 2 * n)
    frame_done = [t for t, c in fake.commands[3:] if c[1] == 1]     # the second command of each frame
    assert len(frame_done) == n
    for i, t in enumerate(frame_done):
        deadline = start + i / fps
        assert deadline - 0.002 <= t <= deadline + 0.1, (i, t - deadline)   # never early, never drifting late
    assert start <= report.started_at <= start + 0.1


def test_commands_beyond_an_actuators_range_are_clamped_and_counted(fakes):
    fake = fakes()
    profile = {"name": "two", "actuators": [dict(TWO["actuators"][0], lower=0.1, upper=0.9, rest=0.1),
                                            TWO["actuators"][1]]}
    robot = robot_on(fake, profile)
    report = robot.play([[-0.5, 1.5], [0.95, 0.5]], fps=50)
    assert report.clamped == 3
    np.testing.assert_array_equal(report.sent, [[0.1, 1.0], [0.9, 0.5]])
    # jaw 0.1 → 1100 µs → 4400, 0.9 → 1900 µs → 7600; pan 1.0 → 1000 µs → 4000, 0.5 → 1500 µs → 6000
    assert fake.wait_for(7)[3:] == [("set_target", 0, 4400), ("set_target", 1, 4000),
                                    ("set_target", 0, 7600), ("set_target", 1, 6000)]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_number_raises_command_out_of_range_and_sends_nothing(fakes, bad):
    fake = fakes()
    robot = robot_on(fake)
    fake.wait_for(3)
    with pytest.raises(CommandOutOfRange, match="head.pan.*frame 2"):
        robot.play([[0.5, 0.5], [0.5, 0.5], [0.5, bad]], fps=50)
    time.sleep(0.1)
    assert bytes(fake.raw) == CONNECT_BYTES


def test_a_misconfigured_channel_is_refused_before_anything_is_sent(fakes):
    fake = fakes()
    # 1000..5000 µs: command 1 would be 20000 quarter-µs, beyond the protocol's 14 bits (16383)
    with pytest.raises(CommandOutOfRange, match=r"channel 1\).*20000 quarter-µs.*min_us/max_us"):
        MaestroRobot(fake.port, TWO, {**WIRING, "head.pan": {"channel": 1, "min_us": 1000, "max_us": 5000}})
    with pytest.raises(CommandOutOfRange, match="neutral"):
        MaestroRobot(fake.port, TWO, {**WIRING, "head.pan": {**WIRING["head.pan"], "neutral_us": -5}})
    time.sleep(0.05)
    assert bytes(fake.raw) == b""


def test_stop_from_another_thread_ends_play_before_the_next_frame(fakes):
    fake = fakes()
    robot = robot_on(fake)
    stopper = threading.Timer(0.3, robot.stop)
    stopper.start()
    began = time.monotonic()
    report = robot.play(np.full((100, 2), 0.5), fps=20)   # 5 s if nobody stopped it
    took = time.monotonic() - began
    stopper.join()
    assert took < 1.5 and 2 <= report.frames < 30
    assert len(report.sent) == report.frames
    time.sleep(0.1)
    assert len(fake.commands) == 3 + 2 * report.frames


def test_unplugged_mid_play_is_device_lost_and_neutral_goes_to_the_port_that_comes_back(fakes):
    bus = Bus()
    first, second = fakes(), fakes()
    bus.plugged["maestro"] = first
    robot = MaestroRobot("maestro", TWO, WIRING, timeout_s=0.5, serial_factory=bus.open)
    robot.connect()

    def replug():
        first.unplug()
        bus.plugged["maestro"] = second

    threading.Timer(0.3, replug).start()
    with pytest.raises(DeviceLost, match=r"'maestro' stopped answering at frame \d+ of 60.*came back.*neutral"):
        robot.play(np.full((60, 2), 0.8), fps=20)
    # The replacement was configured again and sent every channel's neutral: jaw rest 0 → 1000 µs → 4000;
    # pan rest 0.5 → 1500 µs → 6000.
    assert second.wait_for(4) == [("set_speed", 0, 60), ("set_acceleration", 0, 10),
                                  ("set_target", 0, 4000), ("set_target", 1, 6000)]
    assert bytes(second.raw) == CONNECT_BYTES[:-1] + bytes([0x84, 0, 0x20, 0x1F, 0x84, 1, 0x70, 0x2E])
    played = [c for _, c in first.commands if c[0] == "set_target"]
    assert 0 < len(played) < 120
    # The robot carries on, on the port that came back.
    assert robot.health()["ok"]
    robot.close()
    assert second.wait_for(7)[-2:] == [("set_target", 0, 4000), ("set_target", 1, 6000)]


def test_unplugged_for_good_is_device_lost_saying_neutral_could_not_be_sent(fakes):
    bus = Bus()
    fake = fakes()
    bus.plugged["maestro"] = fake
    robot = MaestroRobot("maestro", TWO, WIRING, timeout_s=0.3, serial_factory=bus.open)
    robot.connect()

    def unplug():
        fake.unplug()
        del bus.plugged["maestro"]

    threading.Timer(0.2, unplug).start()
    began = time.monotonic()
    with pytest.raises(DeviceLost, match="neutral could not be sent"):
        robot.play(np.full((100, 2), 0.5), fps=20)
    assert time.monotonic() - began < 2.0
    with pytest.raises(DeviceLost, match="did not come back"):
        robot.neutral()
    assert robot.health()["ok"] is False
    robot.close()   # nothing open: nothing to do


def test_a_port_that_does_not_exist_is_device_not_found_with_what_to_do():
    robot = MaestroRobot("/dev/ttyACM_no_such_maestro", TWO, WIRING)
    with pytest.raises(DeviceNotFound) as caught:
        robot.connect()
    message = str(caught.value)
    assert "/dev/ttyACM_no_such_maestro" in message
    assert "ls /dev/ttyACM*" in message and "USB Dual Port" in message


def test_a_port_where_nothing_answers_is_device_not_found(fakes):
    fake = fakes(silent=True)
    with pytest.raises(DeviceNotFound, match="nothing answered Get Errors.*Command Port"):
        robot_on(fake, timeout_s=0.2)


def test_error_bits_at_connect_are_a_hardware_error_naming_them(fakes):
    fake = fakes(errors=0x0111)
    robot = MaestroRobot(fake.port, TWO, WIRING)
    with pytest.raises(HardwareError) as caught:
        robot.connect()
    assert not isinstance(caught.value, DeviceNotFound)
    message = str(caught.value)
    for name in ("serial signal error (bit 0", "serial protocol error (bit 4", "script program counter error (bit 8"):
        assert name in message
    assert "0x0111" in message
    # Reading the register cleared it, so connecting again works; later errors show in health().
    robot.connect()
    fake.errors = 1 << 5
    health = robot.health()
    assert health["ok"] is False and health["errors"] == ["serial timeout error"]
    assert "raise or disable the timeout" in health["detail"]
    assert robot.health()["ok"] is True


def test_multi_target_sends_one_set_multiple_targets_per_run_of_consecutive_channels(fakes):
    fake = fakes()
    # pan on channel 3, jaw on channel 4: one block, in channel order (pan first)
    wiring = {"lower.jaw": {"channel": 4, "min_us": 1000, "max_us": 2000},
              "head.pan": {"channel": 3, "min_us": 2000, "max_us": 1000}}
    robot = robot_on(fake, TWO, wiring, multi_target=True)
    robot.play([[0.5, 0.0], [0.25, 1.0]], fps=50)
    fake.wait_for(3)
    assert bytes(fake.raw) == bytes([0xA1,
                                     0x9F, 2, 3, 0x40, 0x3E, 0x70, 0x2E,     # pan 8000, jaw 6000
                                     0x9F, 2, 3, 0x20, 0x1F, 0x08, 0x27])    # pan 4000, jaw 5000
    assert fake.wait_for(3)[1:] == [("set_multiple_targets", 3, (8000, 6000)),
                                    ("set_multiple_targets", 3, (4000, 5000))]
    robot.close()


def test_multi_target_splits_channels_that_are_not_consecutive(fakes):
    fake = fakes()
    three = {"name": "three", "actuators": TWO["actuators"] + [{"name": "lower.upper_lip", "rest": 0.0}]}
    wiring = {"lower.jaw": {"channel": 0, "min_us": 1000, "max_us": 2000},
              "head.pan": {"channel": 1, "min_us": 1000, "max_us": 2000},
              "lower.upper_lip": {"channel": 5, "min_us": 1000, "max_us": 2000}}
    robot = robot_on(fake, three, wiring, multi_target=True)
    robot.play([[0.5, 0.25, 1.0]], fps=50)
    fake.wait_for(3)
    assert bytes(fake.raw)[1:] == bytes([0x9F, 2, 0, 0x70, 0x2E, 0x08, 0x27, 0x84, 5, 0x40, 0x3E])


def test_neutral_position_moving_go_home_and_close(fakes):
    fake = fakes()
    wiring = {**WIRING, "lower.jaw": {**WIRING["lower.jaw"], "neutral_us": 1100}}
    robot = robot_on(fake, TWO, wiring)
    robot.neutral()
    fake.wait_for(5)
    # jaw neutral_us 1100 → 4400 = 34·128 + 48 → 0x30 0x22; pan rest 0.5 → 1500 µs → 6000
    assert bytes(fake.raw)[len(CONNECT_BYTES):] == bytes([0x84, 0, 0x30, 0x22, 0x84, 1, 0x70, 0x2E])
    assert robot.position_us("lower.jaw") == 1100.0
    fake.moving_state = 1
    assert robot.moving() is True
    robot.go_home()
    robot.play([[1.0, 1.0]], fps=50)
    robot.close()
    commands = fake.wait_for(11)
    assert commands[3:] == [("set_target", 0, 4400), ("set_target", 1, 6000), ("get_position", 0),
                            ("get_moving_state",), ("go_home",), ("set_target", 0, 8000), ("set_target", 1, 4000),
                            ("set_target", 0, 4400), ("set_target", 1, 6000)]
    assert robot.health()["ok"] is False    # closed
    with pytest.raises(HardwareError, match="no actuator"):
        robot.position_us("upper.brow_left")


def test_from_config_with_a_built_in_profile_and_describe():
    from inference.robots import SIM_FACE
    names = [a.name for a in SIM_FACE.actuators]
    channels = {name: {"channel": k, "min_us": 1000, "max_us": 2000} for k, name in enumerate(names)}
    channels["lower.jaw"]["speed"] = 20          # 20 · 0.25 µs / 10 ms = 500 µs/s over 1000 µs: 0.5 per s
    robot = MaestroRobot.from_config({"port": "/dev/ttyACM0", "profile": "sim-face", "channels": channels,
                                      "multi_target": True})
    described = robot.describe()
    speeds = {a["name"]: a["max_speed"] for a in described["actuators"]}
    assert speeds["lower.jaw"] == pytest.approx(0.5) and speeds["head.pan"] == 1.5
    assert described["extra"]["maestro"]["port"] == "/dev/ttyACM0"
    assert SIM_FACE.to_dict()["actuators"][4]["max_speed"] == 5.0     # the profile itself is untouched

    with pytest.raises(HardwareError, match="unknown keys baud"):
        MaestroRobot.from_config({"port": "/dev/ttyACM0", "profile": "sim-face", "channels": channels, "baud": 1})
    with pytest.raises(HardwareError, match="no channel config for lower.jaw"):
        MaestroRobot.from_config({"port": "/dev/ttyACM0", "profile": "sim-face",
                                  "channels": {k: v for k, v in channels.items() if k != "lower.jaw"}})
    with pytest.raises(HardwareError, match="channel 0 is given to both"):
        MaestroRobot.from_config({"port": "/dev/ttyACM0", "profile": "sim-face",
                                  "channels": {**channels, "head.pan": {"channel": 0, "min_us": 1000, "max_us": 2000}}})
    with pytest.raises(HardwareError, match="no built-in profile"):
        MaestroRobot.from_config({"port": "/dev/ttyACM0", "profile": "no-such-robot", "channels": {}})


def test_playing_before_connect_says_to_connect():
    robot = MaestroRobot("/dev/ttyACM0", TWO, WIRING)
    with pytest.raises(HardwareError, match="call connect"):
        robot.play([[0.5, 0.5]], fps=30)
