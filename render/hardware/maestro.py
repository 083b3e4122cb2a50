"""Servos on a Pololu Maestro USB servo controller, driven through pyserial with the Maestro's compact protocol.

A robot whose face and neck are hobby servos wired to a Maestro (Micro Maestro 6, Mini Maestro 12/18/24) plays
`motors:<robot>` trajectories through `MaestroRobot`. Each actuator of the robot's profile is wired to one
Maestro channel; a normalised command c (0..1, clamped to the actuator's `lower`..`upper` by
`base.check_trajectory`) becomes the pulse width `min_us + c · (max_us − min_us)` (so `min_us > max_us` mirrors a
servo), sent in quarter-microseconds rounded to the nearest (halves up).

The protocol (Pololu Maestro Servo Controller User's Guide, https://www.pololu.com/docs/0J40, section 5.e
"Serial Servo Commands"; error bits from section 4.e "Errors"). Every command is a command byte with its top
bit set followed by data bytes with it clear; a 14-bit value travels as two data bytes, bits 0–6 then bits 7–13:

| command | bytes | reply |
|---|---|---|
| Set Target | 0x84, channel, target low 7 bits, target high 7 bits (quarter-µs; 0 = no pulses) | — |
| Set Multiple Targets (Mini Maestro only) | 0x9F, count, first channel, then low/high per channel | — |
| Set Speed | 0x87, channel, speed low, speed high ((0.25 µs)/(10 ms); 0 = unlimited) | — |
| Set Acceleration | 0x89, channel, acceleration low, high ((0.25 µs)/(10 ms)/(80 ms), 0..255) | — |
| Get Position | 0x90, channel | position low 8 bits, high 8 bits (little-endian) |
| Get Moving State (Mini Maestro only) | 0x93 | 0x00 none moving, 0x01 some moving |
| Get Errors | 0xA1 | error bits 0–7, error bits 8–15 (reading clears the register) |
| Go Home | 0xA2 | — |

The guide's worked examples are checked byte for byte in tests/render/hardware/test_maestro.py (e.g. channel 2
to 1500 µs is 0x84 0x02 0x70 0x2E).

Connecting. The Maestro's USB "Command Port" (on Linux the first of its two ports, usually /dev/ttyACM0) takes
these commands when its serial mode (Maestro Control Center → Serial Settings) is "USB Dual Port" or
"USB Chained"; the baud rate only matters on the TTL pins. Ports open with `serial.serial_for_url`, so a
pseudo-terminal path or a pyserial URL (`loop://`, `rfc2217://…`) works as well as a device node. `connect()`
sends each channel's configured speed and acceleration (channels without them keep the limits saved on the
Maestro) and reads the error register; a nonzero register is an error naming the bits. The Maestro clamps
targets to the per-channel minimum and maximum saved on it, so keep those no narrower than `min_us..max_us`.

Configuration, as a YAML-able dict for `MaestroRobot.from_config`:

    port: /dev/ttyACM0
    baudrate: 9600            # optional; ignored by the USB Command Port
    profile: sim-face         # a built-in profile name, or the profile dict itself
    multi_target: false       # true only on a Mini Maestro 12/18/24
    timeout_s: 0.5            # optional: reply and write timeout
    channels:
      lower.jaw: {channel: 0, min_us: 1000, max_us: 2000, neutral_us: 1100, speed: 60, acceleration: 10}
      head.pan: {channel: 1, min_us: 2000, max_us: 1000}

Timing: frame i of a trajectory goes out at `start_at + i / fps` (`time.monotonic()`), each deadline computed
from the start so waiting errors never accumulate; a late frame goes out at once. Per frame the driver sends
one Set Target per channel, or with `multi_target` one Set Multiple Targets per run of consecutive channel
numbers. Over the TTL pins at 9600 baud one Set Target takes about 4 ms, so many channels at a high frame rate
need a higher baud rate (or the USB port, which has no such limit).

Faults: a write that fails or times out in the middle of a play is a `DeviceLost`; before raising it the driver
tries to send every channel to neutral, on the same port handle, else by reopening the port (for up to
`timeout_s`, in case the USB device comes back at once) and reapplying speeds and accelerations.
"""
from __future__ import annotations

import copy
import errno
import math
import numbers
import threading
import time
from dataclasses import dataclass

import numpy as np
import serial

from render.hardware.base import (CommandOutOfRange, DeviceLost, DeviceNotFound, HardwareError, PlayReport, Robot,
                                  check_trajectory)

# --- the compact protocol ---------------------------------------------------------------------------------

SET_TARGET = 0x84
SET_SPEED = 0x87
SET_ACCELERATION = 0x89
GET_POSITION = 0x90
GET_MOVING_STATE = 0x93
SET_MULTIPLE_TARGETS = 0x9F
GET_ERRORS = 0xA1
GO_HOME = 0xA2

MAX_VALUE = 0x3FFF            # the largest value two 7-bit data bytes carry
MAX_ACCELERATION = 255
MAX_CHANNELS = 24             # Mini Maestro 24; the Micro Maestro has 6, the others 12 and 18

# The error register's bits, with what to do about each (guide section 4.e).
ERROR_BITS = {
    0: ("serial signal error", "the TTL baud rate differs from the Maestro's; match them or use the USB port"),
    1: ("serial overrun error", "the Maestro's UART overflowed; lower the baud rate"),
    2: ("serial RX buffer full", "commands arrived faster than the Maestro read them; send fewer or slower"),
    3: ("serial CRC error", "the Maestro expects CRC bytes; turn off 'Enable CRC' in its Serial Settings"),
    4: ("serial protocol error", "a malformed command reached it; is another program writing to the port?"),
    5: ("serial timeout error", "no command arrived within its serial timeout; raise or disable the timeout"),
    6: ("script stack error", "the user script on the Maestro has a bug; stop or fix the script"),
    7: ("script call stack error", "the user script on the Maestro has a bug; stop or fix the script"),
    8: ("script program counter error", "the user script on the Maestro has a bug; stop or fix the script"),
}


def _data(value: int, what: str) -> bytes:
    """A 14-bit value as the two 7-bit data bytes (low, high) of the compact protocol."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= MAX_VALUE:
        raise CommandOutOfRange(f"{what} {value!r} does not fit the Maestro protocol (an integer 0..{MAX_VALUE}); "
                                "nothing was sent")
    return bytes((int(value) & 0x7F, (int(value) >> 7) & 0x7F))


def _channel(channel: int) -> int:
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= channel < MAX_CHANNELS:
        raise CommandOutOfRange(f"Maestro channel {channel!r} does not exist (0..{MAX_CHANNELS - 1}); nothing was sent")
    return int(channel)


def set_target(channel: int, target: int) -> bytes:
    """Set Target: 0x84, channel, target (quarter-µs) low 7 bits, high 7 bits."""
    return bytes((SET_TARGET, _channel(channel))) + _data(target, f"target for channel {channel}")


def set_multiple_targets(first_channel: int, targets) -> bytes:
    """Set Multiple Targets (Mini Maestro 12/18/24): 0x9F, count, first channel, then each target low/high."""
    targets = list(targets)
    if not targets or _channel(first_channel) + len(targets) > MAX_CHANNELS:
        raise CommandOutOfRange(f"{len(targets)} targets from channel {first_channel} do not fit a Maestro's "
                                f"{MAX_CHANNELS} channels; nothing was sent")
    return bytes((SET_MULTIPLE_TARGETS, len(targets), first_channel)) + b"".join(
        _data(t, f"target for channel {first_channel + k}") for k, t in enumerate(targets))


def set_speed(channel: int, speed: int) -> bytes:
    """Set Speed: 0x87, channel, speed low, high; units of (0.25 µs)/(10 ms) at the default 50 Hz, 0 unlimited."""
    return bytes((SET_SPEED, _channel(channel))) + _data(speed, f"speed for channel {channel}")


def set_acceleration(channel: int, acceleration: int) -> bytes:
    """Set Acceleration: 0x89, channel, acceleration low, high (0..255; 0 unlimited)."""
    if isinstance(acceleration, (int, np.integer)) and not isinstance(acceleration, bool) \
            and acceleration > MAX_ACCELERATION:
        raise CommandOutOfRange(f"acceleration {acceleration} for channel {channel} is above the Maestro's "
                                f"{MAX_ACCELERATION}; nothing was sent")
    return bytes((SET_ACCELERATION, _channel(channel))) + _data(acceleration, f"acceleration for channel {channel}")


def get_position(channel: int) -> bytes:
    """Get Position: 0x90, channel; the reply is the position in quarter-µs, two bytes little-endian."""
    return bytes((GET_POSITION, _channel(channel)))


def get_moving_state() -> bytes:
    """Get Moving State (Mini Maestro): 0x93; the reply is one byte, 1 while a speed-limited servo moves."""
    return bytes((GET_MOVING_STATE,))


def get_errors() -> bytes:
    """Get Errors: 0xA1; the reply is the error register, two bytes little-endian (reading clears it)."""
    return bytes((GET_ERRORS,))


def go_home() -> bytes:
    """Go Home: 0xA2; every channel goes to the home position saved on the Maestro."""
    return bytes((GO_HOME,))


def error_names(register: int) -> list[str]:
    """The names of the errors set in a Get Errors register (unknown bits as 'error bit N')."""
    return [ERROR_BITS[bit][0] if bit in ERROR_BITS else f"error bit {bit}"
            for bit in range(16) if register >> bit & 1]


# --- the driver -------------------------------------------------------------------------------------------

CHANNEL_KEYS = {"channel", "min_us", "max_us", "neutral_us", "speed", "acceleration"}
CONFIG_KEYS = {"port", "baudrate", "profile", "channels", "multi_target", "timeout_s"}


@dataclass(frozen=True)
class _Wiring:
    """One actuator's Maestro channel, validated."""

    actuator: str
    channel: int
    min_us: float
    max_us: float
    neutral_qus: int
    speed: int | None
    acceleration: int | None

    def quarter_us(self, commands: np.ndarray) -> np.ndarray:
        """Normalised commands to quarter-microsecond targets, rounded half up."""
        return np.floor(4.0 * (self.min_us + commands * (self.max_us - self.min_us)) + 0.5).astype(np.int64)


def _quarter_us_in_range(value: int, actuator: str, channel: int, what: str) -> int:
    if not 0 <= value <= MAX_VALUE:
        raise CommandOutOfRange(
            f"actuator {actuator!r} (Maestro channel {channel}): {what} is {value / 4:g} µs = {value} quarter-µs, "
            f"outside the protocol's 0..{MAX_VALUE} (0..{MAX_VALUE / 4:g} µs); fix min_us/max_us/neutral_us in its "
            "channel config (servos usually take about 500..2500 µs); nothing was sent")
    return value


def _profile_from(profile) -> dict:
    """A profile dict from a dict or a built-in profile's name (inference.robots, imported only when needed)."""
    if isinstance(profile, str):
        from inference.robots import RobotError, robot_profile
        try:
            return robot_profile(profile).to_dict()
        except RobotError as exc:
            raise HardwareError(f"Maestro config: {exc}") from None
    if not isinstance(profile, dict) or not isinstance(profile.get("name"), str) \
            or not isinstance(profile.get("actuators"), (list, tuple)) or not profile["actuators"]:
        raise HardwareError("Maestro config: profile must be a built-in profile name (e.g. 'sim-face') or a dict "
                            "with 'name' and a non-empty 'actuators' list (RobotProfile.to_dict())")
    for actuator in profile["actuators"]:
        if not isinstance(actuator, dict) or not isinstance(actuator.get("name"), str):
            raise HardwareError(f"Maestro config: every actuator of profile {profile['name']!r} needs a name, "
                                f"got {actuator!r}")
    return copy.deepcopy(profile)


def _finite(config: dict, key: str, owner: str) -> float:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HardwareError(f"Maestro config: {owner}: {key} must be a number of microseconds, got {value!r}")
    return float(value)


def _small_int(config: dict, key: str, owner: str, top: int) -> int | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise HardwareError(f"Maestro config: {owner}: {key} must be an integer 0..{top} (Maestro units, "
                            f"0 = unlimited), got {value!r}")
    return value


def _wiring(profile: dict, channels: dict) -> list[_Wiring]:
    """Each profile actuator's channel config, validated, in the profile's actuator order."""
    if not isinstance(channels, dict):
        raise HardwareError("Maestro config: channels must map each actuator name to {channel, min_us, max_us, …}")
    names = [a["name"] for a in profile["actuators"]]
    missing = [n for n in names if n not in channels]
    unknown = [n for n in channels if n not in names]
    if missing or unknown:
        parts = [f"no channel config for {', '.join(missing)}"] if missing else []
        parts += [f"channels {', '.join(map(str, unknown))} are not actuators of the profile"] if unknown else []
        raise HardwareError(f"Maestro config for robot {profile['name']!r}: {'; '.join(parts)} "
                            f"(its actuators: {', '.join(names)})")
    wiring, used = [], {}
    for actuator in profile["actuators"]:
        name, config = actuator["name"], channels[actuator["name"]]
        owner = f"actuator {name!r}"
        if not isinstance(config, dict):
            raise HardwareError(f"Maestro config: {owner} needs a dict {{channel, min_us, max_us}}, got {config!r}")
        extra = sorted(set(config) - CHANNEL_KEYS)
        if extra:
            raise HardwareError(f"Maestro config: {owner} has unknown keys {', '.join(extra)}; "
                                f"known: {', '.join(sorted(CHANNEL_KEYS))}")
        channel = config.get("channel")
        if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < MAX_CHANNELS:
            raise HardwareError(f"Maestro config: {owner}: channel must be an integer 0..{MAX_CHANNELS - 1}, "
                                f"got {channel!r}")
        if channel in used:
            raise HardwareError(f"Maestro config: channel {channel} is given to both {used[channel]!r} and {name!r}")
        used[channel] = name
        min_us, max_us = _finite(config, "min_us", owner), _finite(config, "max_us", owner)
        if min_us == max_us:
            raise HardwareError(f"Maestro config: {owner}: min_us and max_us are both {min_us:g}; the servo would "
                                "not move")
        # The extremes a clamped command can reach: checking them (and neutral) checks every target ever sent.
        for command, what in ((actuator.get("lower", 0.0), "its lower limit"), (actuator.get("upper", 1.0),
                                                                                 "its upper limit")):
            _quarter_us_in_range(int(math.floor(4.0 * (min_us + command * (max_us - min_us)) + 0.5)), name, channel,
                                 f"the target for {what} ({command:g})")
        if config.get("neutral_us") is not None:
            neutral = int(math.floor(4.0 * _finite(config, "neutral_us", owner) + 0.5))
        else:
            rest = float(actuator.get("rest", 0.0))
            neutral = int(math.floor(4.0 * (min_us + rest * (max_us - min_us)) + 0.5))
        _quarter_us_in_range(neutral, name, channel, "the neutral target")
        wiring.append(_Wiring(name, channel, min_us, max_us, neutral, _small_int(config, "speed", owner, MAX_VALUE),
                              _small_int(config, "acceleration", owner, MAX_ACCELERATION)))
    return wiring


def _runs(channels: list[int]) -> list[list[int]]:
    """Indices into `channels` grouped into runs of consecutive channel numbers, in channel order."""
    order = sorted(range(len(channels)), key=lambda k: channels[k])
    runs: list[list[int]] = []
    for k in order:
        if runs and channels[k] == channels[runs[-1][-1]] + 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    return runs


class MaestroRobot(Robot):
    """A robot whose actuators are servos on one Pololu Maestro (see the module docstring)."""

    def __init__(self, port: str, profile: dict, channels: dict[str, dict], *, baudrate: int = 9600,
                 multi_target: bool = False, timeout_s: float = 0.5, serial_factory=None):
        if not isinstance(port, str) or not port:
            raise HardwareError(f"Maestro: port must be a serial port name such as /dev/ttyACM0, got {port!r}")
        if not (isinstance(timeout_s, numbers.Real) and math.isfinite(timeout_s) and timeout_s > 0):
            raise HardwareError(f"Maestro: timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if isinstance(baudrate, bool) or not isinstance(baudrate, numbers.Integral) or baudrate <= 0:
            raise HardwareError(f"Maestro: baudrate must be a positive integer (e.g. 9600), got {baudrate!r}")
        self.port = port
        self.profile = _profile_from(profile)
        self.baudrate = int(baudrate)
        self.multi_target = bool(multi_target)
        self.timeout_s = float(timeout_s)
        self._wiring = _wiring(self.profile, channels)
        self._channels = copy.deepcopy(channels)
        self._open_port = serial_factory or serial.serial_for_url
        self._serial = None
        self._connected_once = False
        self._io = threading.RLock()       # one command and its reply at a time (health() may come from elsewhere)
        self._stop = threading.Event()

    @classmethod
    def from_config(cls, config: dict, *, serial_factory=None) -> "MaestroRobot":
        """A robot from a YAML-able dict: port, profile (a name such as 'sim-face', or a dict), channels, and
        optionally baudrate, multi_target and timeout_s (see the module docstring)."""
        if not isinstance(config, dict):
            raise HardwareError(f"Maestro config must be a mapping, got {type(config).__name__}")
        unknown = sorted(set(config) - CONFIG_KEYS)
        if unknown:
            raise HardwareError(f"Maestro config: unknown keys {', '.join(unknown)}; "
                                f"known: {', '.join(sorted(CONFIG_KEYS))}")
        missing = [k for k in ("port", "profile", "channels") if k not in config]
        if missing:
            raise HardwareError(f"Maestro config needs {', '.join(missing)} (e.g. port: /dev/ttyACM0, "
                                "profile: sim-face, channels: {lower.jaw: {channel: 0, min_us: 1000, max_us: 2000}})")
        return cls(config["port"], config["profile"], config["channels"],
                   baudrate=config.get("baudrate", 9600), multi_target=config.get("multi_target", False),
                   timeout_s=config.get("timeout_s", 0.5), serial_factory=serial_factory)

    # --- connection ---

    def _open(self):
        try:
            return self._open_port(self.port, baudrate=self.baudrate, timeout=self.timeout_s,
                                   write_timeout=self.timeout_s)
        except (serial.SerialException, OSError, ValueError) as exc:
            code = getattr(exc, "errno", None)
            if code in (errno.EACCES, errno.EPERM):
                hint = "permission denied: add your user to the 'dialout' group (then log in again)"
            elif code == errno.EBUSY:
                hint = "the port is busy: close Maestro Control Center or any other program using it"
            else:
                hint = ("check the cable, list the ports with `ls /dev/ttyACM*` (the Maestro's Command Port is the "
                        "first of its two), and set its serial mode to \"USB Dual Port\" in Maestro Control Center")
            raise DeviceNotFound(f"cannot open Maestro port {self.port!r} ({exc}); {hint}") from None

    def _configure(self, port) -> None:
        """Send each channel's configured speed and acceleration."""
        packets = [set_speed(w.channel, w.speed) for w in self._wiring if w.speed is not None]
        packets += [set_acceleration(w.channel, w.acceleration) for w in self._wiring if w.acceleration is not None]
        if packets:
            port.write(b"".join(packets))

    def _query(self, command: bytes, size: int) -> bytes | None:
        """Send a command and read its `size`-byte reply; None when the Maestro does not answer in time."""
        with self._io:
            self._serial.reset_input_buffer()
            self._serial.write(command)
            reply = self._serial.read(size)
        return reply if len(reply) == size else None

    def connect(self) -> None:
        """Open the port, send speeds and accelerations, and check the error register. Raises DeviceNotFound when
        the port cannot be opened or nothing answers, HardwareError when the Maestro reports errors."""
        self._close_port()
        self._serial = self._open()
        try:
            self._configure(self._serial)
            reply = self._query(get_errors(), 2)
        except (serial.SerialException, OSError) as exc:
            self._close_port()
            raise DeviceNotFound(f"Maestro port {self.port!r} opened but writing to it failed ({exc}); "
                                 "check the cable and that it is the Maestro's Command Port") from None
        if reply is None:
            self._close_port()
            raise DeviceNotFound(f"nothing answered Get Errors on {self.port!r} within {self.timeout_s:g} s; is it the "
                                 "Maestro's Command Port (the first of its two, see `ls /dev/ttyACM*`) with serial "
                                 "mode \"USB Dual Port\" set in Maestro Control Center?")
        register = int.from_bytes(reply, "little")
        if register:
            self._close_port()
            raise HardwareError(f"Maestro on {self.port!r} reports errors (register 0x{register:04X}): "
                                f"{self._explain(register)}. On an error it sends its servos home; fix the cause "
                                "and connect again (reading the register cleared it)")
        self._connected_once = True

    @staticmethod
    def _explain(register: int) -> str:
        return "; ".join(f"{ERROR_BITS[bit][0]} (bit {bit}: {ERROR_BITS[bit][1]})" if bit in ERROR_BITS
                         else f"error bit {bit}" for bit in range(16) if register >> bit & 1)

    def _close_port(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass

    def _reopen(self) -> bool:
        """Reopen a lost port (retrying for up to `timeout_s`) and reapply speeds and accelerations."""
        self._close_port()
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                port = self._open()
                try:
                    self._configure(port)
                except (serial.SerialException, OSError):
                    port.close()
                    raise
                self._serial = port
                return True
            except (HardwareError, serial.SerialException, OSError):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.1)

    def _require_port(self) -> None:
        if self._serial is not None:
            return
        if not self._connected_once:
            raise HardwareError(f"Maestro on {self.port!r} is not connected; call connect() first")
        if not self._reopen():
            raise DeviceLost(f"the Maestro on {self.port!r} is gone and did not come back within {self.timeout_s:g} s; "
                             "check its USB cable and servo power, then connect again")

    def _recover(self, packet: bytes) -> str:
        """After a failed write: send `packet` (the neutral targets) on the old handle, else on a reopened port;
        says what happened."""
        if self._serial is not None:
            try:
                with self._io:
                    self._serial.write(packet)
                return "the servos were sent to neutral"
            except (serial.SerialException, OSError):
                pass
        if self._reopen():
            try:
                with self._io:
                    self._serial.write(packet)
                return "the port came back and the servos were sent to neutral"
            except (serial.SerialException, OSError) as exc:
                self._close_port()
                return f"the port came back but neutral could not be sent ({exc})"
        return "neutral could not be sent (the port did not come back)"

    # --- the Robot interface ---

    def describe(self) -> dict:
        """The profile, with each actuator's `max_speed` lowered to its Maestro speed limit where that is tighter
        (assuming the default 20 ms servo period), and the wiring under `extra["maestro"]`."""
        profile = copy.deepcopy(self.profile)
        for actuator, wire in zip(profile["actuators"], self._wiring):
            if wire.speed:
                limit = 25.0 * wire.speed / abs(wire.max_us - wire.min_us)   # (0.25 µs / 10 ms) → commands / s
                own = actuator.get("max_speed")
                actuator["max_speed"] = limit if own is None else min(float(own), limit)
        profile["extra"] = dict(profile.get("extra") or {})
        profile["extra"]["maestro"] = {"port": self.port, "baudrate": self.baudrate, "multi_target": self.multi_target,
                                       "channels": copy.deepcopy(self._channels)}
        return profile

    def encode_frame(self, targets) -> bytes:
        """The bytes that set one frame of quarter-µs targets (one per actuator, profile order): a Set Target per
        channel in profile order, or with `multi_target` a Set Multiple Targets per run of consecutive channels
        (a run of one is a Set Target)."""
        targets = [int(t) for t in targets]
        if not self.multi_target:
            return b"".join(set_target(w.channel, t) for w, t in zip(self._wiring, targets))
        channels = [w.channel for w in self._wiring]
        packets = []
        for run in _runs(channels):
            if len(run) == 1:
                packets.append(set_target(channels[run[0]], targets[run[0]]))
            else:
                packets.append(set_multiple_targets(channels[run[0]], [targets[k] for k in run]))
        return b"".join(packets)

    def _neutral_packet(self) -> bytes:
        return self.encode_frame([w.neutral_qus for w in self._wiring])

    def neutral(self) -> None:
        """Send every channel its neutral target (`neutral_us`, else the actuator's rest mapped)."""
        self._require_port()
        packet = self._neutral_packet()
        try:
            with self._io:
                self._serial.write(packet)
        except (serial.SerialException, OSError) as exc:
            outcome = self._recover(packet)
            raise DeviceLost(f"the Maestro on {self.port!r} stopped answering while going to neutral ({exc}); "
                             f"{outcome}; check its USB cable and servo power") from None

    def play(self, trajectory, fps: float, *, start_at: float | None = None) -> PlayReport:
        """Send `trajectory` ([T, n] normalised commands, clamped to each actuator's range) with frame i at
        `start_at + i / fps`. Every frame is encoded before the first byte goes out, so a bad value sends nothing.
        Returns early after `stop()`; a failed or timed-out write tries neutral, then raises DeviceLost."""
        clamped, n_clamped = check_trajectory(trajectory, self.profile)
        if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
            raise HardwareError(f"frame rate must be a positive number of frames per second, got {fps!r}")
        targets = np.stack([w.quarter_us(clamped[:, j]) for j, w in enumerate(self._wiring)], axis=1)
        packets = [self.encode_frame(row) for row in targets]
        self._require_port()
        self._stop.clear()
        start = time.monotonic() if start_at is None else float(start_at)
        started_at, sent = start, 0
        for i, packet in enumerate(packets):
            delay = start + i / fps - time.monotonic()
            if (delay > 0 and self._stop.wait(delay)) or self._stop.is_set():
                break
            try:
                with self._io:
                    self._serial.write(packet)
            except (serial.SerialException, OSError) as exc:
                outcome = self._recover(self._neutral_packet())
                raise DeviceLost(f"the Maestro on {self.port!r} stopped answering at frame {i} of {len(packets)} "
                                 f"({exc}); {outcome}. Check its USB cable and servo power, then play the "
                                 "stimulus again from its start") from None
            if i == 0:
                started_at = time.monotonic()
            sent = i + 1
        return PlayReport(frames=sent, clamped=n_clamped, started_at=started_at, sent=clamped[:sent])

    def stop(self) -> None:
        """Make a running play() return before its next frame; the servos hold their last targets."""
        self._stop.set()

    def health(self) -> dict:
        """Reads the error register: {"ok", "detail", "errors" (names)}. Reading clears the register."""
        if self._serial is None:
            return {"ok": False, "detail": f"Maestro on {self.port!r} is not connected", "errors": []}
        try:
            reply = self._query(get_errors(), 2)
        except (serial.SerialException, OSError) as exc:
            return {"ok": False, "detail": f"Maestro on {self.port!r} cannot be written to ({exc})", "errors": []}
        if reply is None:
            return {"ok": False, "detail": f"Maestro on {self.port!r} did not answer Get Errors within "
                                           f"{self.timeout_s:g} s", "errors": []}
        register = int.from_bytes(reply, "little")
        if register:
            return {"ok": False, "detail": f"Maestro on {self.port!r} reports {self._explain(register)}",
                    "errors": error_names(register)}
        return {"ok": True, "detail": f"Maestro on {self.port!r} answers with no errors", "errors": []}

    def close(self) -> None:
        """Send neutral (if the port is open) and close the port."""
        if self._serial is None:
            return
        try:
            self.neutral()
        finally:
            self._close_port()

    # --- Maestro extras ---

    def _wire(self, actuator: str) -> _Wiring:
        for wire in self._wiring:
            if wire.actuator == actuator:
                return wire
        raise HardwareError(f"robot {self.profile['name']!r} has no actuator {actuator!r}; it has "
                            f"{', '.join(w.actuator for w in self._wiring)}")

    def _ask(self, command: bytes, size: int, what: str) -> bytes:
        """A query's reply on a connected port; DeviceLost when the write fails or no reply comes in time."""
        self._require_port()
        try:
            reply = self._query(command, size)
        except (serial.SerialException, OSError) as exc:
            raise DeviceLost(f"the Maestro on {self.port!r} cannot be written to ({exc}); "
                             "check its USB cable") from None
        if reply is None:
            raise DeviceLost(f"the Maestro on {self.port!r} did not answer {what} within {self.timeout_s:g} s; "
                             "check its USB cable and that it is the Command Port")
        return reply

    def position_us(self, actuator: str) -> float:
        """The pulse width (µs) the Maestro is sending an actuator's servo now (Get Position)."""
        wire = self._wire(actuator)
        return int.from_bytes(self._ask(get_position(wire.channel), 2, "Get Position"), "little") / 4.0

    def moving(self) -> bool:
        """Whether a speed- or acceleration-limited servo is still on its way (Get Moving State; Mini Maestro)."""
        return self._ask(get_moving_state(), 1, "Get Moving State") != b"\x00"

    def go_home(self) -> None:
        """Send every channel to the home position saved on the Maestro (Go Home)."""
        self._require_port()
        try:
            with self._io:
                self._serial.write(go_home())
        except (serial.SerialException, OSError) as exc:
            raise DeviceLost(f"the Maestro on {self.port!r} cannot be written to ({exc}); "
                             "check its USB cable") from None


__all__ = ["MaestroRobot", "ERROR_BITS", "error_names", "set_target", "set_multiple_targets", "set_speed",
           "set_acceleration", "get_position", "get_moving_state", "get_errors", "go_home"]
