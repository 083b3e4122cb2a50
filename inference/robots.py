"""Robot profiles: what a robot's actuators are called, how far and how fast they move, and how late they
answer — the one description shared by the inverse model (inference/models/inverse.py), the simulated
robot rig (render/) and the hardware worker.

A robot's commands travel as a motion clip in layout `motors:<robot>`: one channel per actuator, named
with its face region first (`upper.brow_left`, `middle.cheek_right`, `lower.jaw`, `head.pan`), every value a
normalised command in 0..1 (0 and 1 are the ends of the actuator's travel). `lower`/`upper` narrow that to
what is safe on a given robot; `rest` is the command of its neutral face.

Head actuators are not seen in face landmarks; each names the head-pose angle it follows (`pose_channel`:
`rx` pitch/nod, `ry` yaw/turn, `rz` roll/tilt, in degrees as in a clip's head pose) and the angles that
command 0 and command 1 stand for (`pose_range_deg`). Commands are linear in the angle and clamped:
with the default ±30°, a yaw of +15° (nose to the subject's left) gives pan 0.75; `sim-face`'s pan spans
±25°, so there +15° gives 0.8.

Pure Python and numpy (the rigs and the hardware worker never need torch).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .layouts import HEAD_POSE_CHANNELS

HEAD_PREFIX = "head."
# Which head-pose angle a head actuator follows when its profile does not say (by the name after `head.`).
DEFAULT_HEAD_POSE = {"pan": "ry", "yaw": "ry", "tilt": "rx", "pitch": "rx", "nod": "rx", "roll": "rz"}
DEFAULT_HEAD_RANGE_DEG = (-30.0, 30.0)


class RobotError(ValueError):
    """A robot profile is malformed or unknown; the message says what to fix."""


@dataclass(frozen=True)
class ActuatorSpec:
    name: str                                   # region-prefixed channel name, e.g. "upper.brow_left"
    lower: float = 0.0                          # safe command range within 0..1
    upper: float = 1.0
    rest: float = 0.0                           # command of the neutral face / centred head
    max_speed: float | None = None              # command units per second (None: unlimited)
    pose_channel: str | None = None             # head actuators: "rx", "ry" or "rz"
    pose_range_deg: tuple[float, float] | None = None  # head actuators: degrees at command 0 and at 1

    def __post_init__(self):
        if not 0.0 <= self.lower < self.upper <= 1.0:
            raise RobotError(f"actuator {self.name}: need 0 ≤ lower < upper ≤ 1, got {self.lower}..{self.upper}")
        if not self.lower <= self.rest <= self.upper:
            raise RobotError(f"actuator {self.name}: rest {self.rest} lies outside {self.lower}..{self.upper}")
        if self.max_speed is not None and self.max_speed <= 0:
            raise RobotError(f"actuator {self.name}: max_speed must be positive (units/s), got {self.max_speed}")
        if self.pose_channel is not None:
            if self.pose_channel not in HEAD_POSE_CHANNELS[:3]:
                raise RobotError(f"actuator {self.name}: pose_channel must be rx, ry or rz, got {self.pose_channel!r}")
            lo, hi = self.pose_range_deg or DEFAULT_HEAD_RANGE_DEG
            if lo == hi:
                raise RobotError(f"actuator {self.name}: pose_range_deg needs two different angles")
            object.__setattr__(self, "pose_range_deg", (float(lo), float(hi)))

    @property
    def region(self) -> str:
        return self.name.split(".", 1)[0] if "." in self.name else ""

    @property
    def is_head(self) -> bool:
        return self.name.startswith(HEAD_PREFIX)

    def clamp(self, commands) -> np.ndarray:
        return np.clip(np.asarray(commands, np.float32), self.lower, self.upper)

    def command_from_degrees(self, degrees) -> np.ndarray:
        """Head actuators: the command for a head-pose angle (linear over `pose_range_deg`, then clamped)."""
        lo, hi = self._pose_range()
        return self.clamp((np.asarray(degrees, np.float64) - lo) / (hi - lo))

    def degrees_from_command(self, commands) -> np.ndarray:
        """Head actuators: the angle a command turns the head to (what a rig shows)."""
        lo, hi = self._pose_range()
        return (lo + np.asarray(commands, np.float64) * (hi - lo)).astype(np.float32)

    def _pose_range(self) -> tuple[float, float]:
        if self.pose_channel is None:
            raise RobotError(f"actuator {self.name} follows no head-pose angle")
        return self.pose_range_deg

    def to_dict(self) -> dict:
        data = asdict(self)
        data["pose_range_deg"] = list(self.pose_range_deg) if self.pose_range_deg else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ActuatorSpec":
        data = dict(data)
        if data.get("pose_range_deg") is not None:
            data["pose_range_deg"] = tuple(float(v) for v in data["pose_range_deg"])
        return cls(**data)

    @classmethod
    def default(cls, name: str) -> "ActuatorSpec":
        """An actuator known only by its channel name: full range; a `head.pan/tilt/roll` follows its angle."""
        if name.startswith(HEAD_PREFIX):
            pose = DEFAULT_HEAD_POSE.get(name[len(HEAD_PREFIX):])
            if pose is not None:
                return cls(name, rest=0.5, pose_channel=pose, pose_range_deg=DEFAULT_HEAD_RANGE_DEG)
        return cls(name)


@dataclass(frozen=True)
class RobotProfile:
    name: str
    actuators: tuple[ActuatorSpec, ...]
    latency_ms: float = 0.0          # command to visible motion
    description: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        names = [a.name for a in self.actuators]
        if not names:
            raise RobotError(f"robot {self.name!r} has no actuators")
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise RobotError(f"robot {self.name!r} names an actuator twice: {', '.join(twice)}")
        object.__setattr__(self, "actuators", tuple(self.actuators))

    @property
    def layout(self) -> str:
        return f"motors:{self.name}"

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.actuators)

    def actuator(self, name: str) -> ActuatorSpec:
        for a in self.actuators:
            if a.name == name:
                return a
        raise RobotError(f"robot {self.name!r} has no actuator {name!r}; it has {', '.join(self.channels)}")

    @property
    def rest(self) -> np.ndarray:
        return np.array([a.rest for a in self.actuators], np.float32)

    def head_commands(self, head_pose) -> np.ndarray:
        """Commands [T, n_head] of the head actuators (profile order) for a head pose [T, 6]."""
        pose = np.asarray(head_pose, np.float64)
        heads = [a for a in self.actuators if a.pose_channel]
        return np.stack([a.command_from_degrees(pose[:, HEAD_POSE_CHANNELS.index(a.pose_channel)]) for a in heads],
                        axis=1) if heads else np.zeros((len(pose), 0), np.float32)

    def to_dict(self) -> dict:
        return {"name": self.name, "actuators": [a.to_dict() for a in self.actuators],
                "latency_ms": self.latency_ms, "description": self.description, "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, data: dict) -> "RobotProfile":
        return cls(name=data["name"], actuators=tuple(ActuatorSpec.from_dict(a) for a in data["actuators"]),
                   latency_ms=float(data.get("latency_ms", 0.0)), description=data.get("description", ""),
                   extra=dict(data.get("extra") or {}))

    @classmethod
    def from_channels(cls, name: str, channels) -> "RobotProfile":
        """A profile for a robot known only by its channel names (full ranges, default head mapping)."""
        return cls(name, tuple(ActuatorSpec.default(c) for c in channels))


# The simulated animatronic face of inference/synthetic.py (`sim_face_pose`): 9 face servos and a pan/tilt
# neck, 11 in all, as the physical face of the audio-to-landmark study. Channel names and rest commands
# are synthetic.ROBOT_CHANNELS and ROBOT_REST; the neck turns ±25° (pan) and ±15° (tilt). Speeds and
# latency are plausible hobby-servo figures, not measurements.
SIM_FACE = RobotProfile(
    name="sim-face",
    actuators=(
        ActuatorSpec("upper.brow_left", rest=0.0, max_speed=4.0),         # 0 down … 1 raised
        ActuatorSpec("upper.brow_right", rest=0.0, max_speed=4.0),
        ActuatorSpec("upper.eyelid_left", rest=0.2, max_speed=10.0),      # 0 wide, 0.2 open … 1 closed
        ActuatorSpec("upper.eyelid_right", rest=0.2, max_speed=10.0),
        ActuatorSpec("lower.jaw", rest=0.0, max_speed=5.0),               # 0 closed … 1 open
        ActuatorSpec("lower.lip_corner_left", rest=0.5, max_speed=4.0),   # 0 down (frown) … 1 up (smile)
        ActuatorSpec("lower.lip_corner_right", rest=0.5, max_speed=4.0),
        ActuatorSpec("lower.upper_lip", rest=0.0, max_speed=4.0),         # 0 rest … 1 raised
        ActuatorSpec("lower.lower_lip", rest=0.0, max_speed=4.0),         # 0 rest … 1 lowered
        ActuatorSpec("head.pan", rest=0.5, max_speed=1.5, pose_channel="ry", pose_range_deg=(-25.0, 25.0)),
        ActuatorSpec("head.tilt", rest=0.5, max_speed=1.5, pose_channel="rx", pose_range_deg=(-15.0, 15.0)),
    ),
    latency_ms=40.0,
    description="simulated animatronic face: brows, eyelids, jaw, lip corners, upper and lower lip, pan/tilt neck",
)

PROFILES: dict[str, RobotProfile] = {SIM_FACE.name: SIM_FACE}


def robot_profile(name: str) -> RobotProfile:
    """A built-in robot's profile by name."""
    if name not in PROFILES:
        raise RobotError(f"no built-in profile for robot {name!r}; known: {', '.join(sorted(PROFILES))} "
                         "(or pass a RobotProfile)")
    return PROFILES[name]


__all__ = ["ActuatorSpec", "RobotProfile", "RobotError", "SIM_FACE", "PROFILES", "robot_profile"]
