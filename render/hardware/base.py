"""The driver interface every robot and camera implements, and the errors they raise.

A robot plays a motor trajectory: `[T, n]` commands, each actuator's normalised travel 0..1 (the
`motors:<robot>` layout; any other layout reaches it through the inverse model before it arrives here), at a
frame rate, starting at a given `time.monotonic()` instant. Commands outside 0..1 are clamped to each
actuator's range (the count is reported); NaN or inf, a wrong shape or an unknown actuator are errors. On any
error, `stop()` and `neutral()` bring the robot back to rest; drivers call `neutral()` themselves when a
play fails midway.

A robot describes itself with a profile dict in the shape `inference.robots.RobotProfile.to_dict()` gives
(render/robot.py reads the same): `name`, `actuators` ([{`name`, `lower`, `upper`, `rest`, `max_speed`,
`pose_channel`, `pose_range_deg`}]), `latency_ms`, `extra`.

A camera records video (and, where the device has it, audio) to a file from `start(path)` until `stop()`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


class HardwareError(RuntimeError):
    """A robot or camera failed or cannot be used; the message says which device and what to do."""


class DeviceNotFound(HardwareError):
    """The device string names nothing that answers (unknown scheme, no such port or camera)."""


class DeviceLost(HardwareError):
    """A device stopped answering in the middle of a capture (unplugged, powered off, crashed)."""


class CommandOutOfRange(HardwareError):
    """A command the hardware cannot take (beyond what clamping may fix: NaN, inf, a raw value outside the
    protocol's range)."""


@dataclass
class PlayReport:
    """What a robot did with a trajectory: frames sent, values clamped, when the first frame went out
    (`time.monotonic()`), and the commands as actually sent ([T, n], after clamping)."""

    frames: int
    clamped: int
    started_at: float
    sent: np.ndarray = field(repr=False)


def wait_until(deadline: float, stop, clock) -> bool:
    """Sleep until `clock()` reaches `deadline` (a frame's send time, computed from the start so delays never
    add up), waking early when the `stop` event is set; True when it was stopped."""
    while not stop.is_set():
        left = deadline - clock()
        if left <= 0:
            return False
        stop.wait(left)
    return True


def check_trajectory(trajectory, profile: dict) -> tuple[np.ndarray, int]:
    """The trajectory as float64 [T, n] clamped to 0..1 and the number of values clamped; raises
    CommandOutOfRange for NaN/inf and HardwareError for a wrong shape."""
    values = np.asarray(trajectory, dtype=np.float64)
    n = len(profile["actuators"])
    if values.ndim != 2 or values.shape[1] != n or len(values) == 0:
        names = ", ".join(a["name"] for a in profile["actuators"])
        raise HardwareError(f"robot {profile['name']!r} takes a [frames, {n}] trajectory ({names}), "
                            f"got shape {values.shape}")
    bad = ~np.isfinite(values)
    if bad.any():
        frame, column = map(int, np.argwhere(bad)[0])
        raise CommandOutOfRange(f"command {values[frame, column]!r} for actuator "
                                f"{profile['actuators'][column]['name']!r} at frame {frame} is not a number; "
                                "nothing was sent")
    lower = np.array([a.get("lower", 0.0) for a in profile["actuators"]], dtype=np.float64)
    upper = np.array([a.get("upper", 1.0) for a in profile["actuators"]], dtype=np.float64)
    clamped = np.clip(values, lower, upper)
    return clamped, int(np.count_nonzero(clamped != values))


class Robot(ABC):
    """A robot that plays motor trajectories. Use as a context manager: closing it returns it to neutral."""

    @abstractmethod
    def connect(self) -> None:
        """Open the connection; raises DeviceNotFound when nothing answers."""

    @abstractmethod
    def describe(self) -> dict:
        """The robot's profile (see the module docstring)."""

    @abstractmethod
    def neutral(self) -> None:
        """Move every actuator to its rest value."""

    @abstractmethod
    def play(self, trajectory, fps: float, *, start_at: float | None = None) -> PlayReport:
        """Send `trajectory` ([T, n] normalised commands) at `fps`, frame 0 at `start_at` (a
        `time.monotonic()` instant; now when None); returns when the last frame has been sent."""

    @abstractmethod
    def stop(self) -> None:
        """Stop playing as soon as possible (from another thread); the robot holds where it is."""

    def health(self) -> dict:
        """{"ok": bool, "detail": str}: whether the robot answers now."""
        return {"ok": True, "detail": "no health probe for this driver"}

    def close(self) -> None:
        """Go to neutral and release the device."""

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        try:
            self.neutral()
        finally:
            self.close()
        return False


class Camera(ABC):
    """A camera (with or without a microphone) that records to a file."""

    @abstractmethod
    def start(self, path) -> None:
        """Begin recording to `path` (a container ffmpeg can write, e.g. .mkv); raises DeviceNotFound."""

    @abstractmethod
    def stop(self) -> dict:
        """End the recording; returns {"path", "frames", "dropped", "duration_s", "has_audio"}."""

    def health(self) -> dict:
        return {"ok": True, "detail": "no health probe for this camera"}
