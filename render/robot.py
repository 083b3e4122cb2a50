"""The simulated robot: a mechanical face on a pan/tilt neck that plays `motors:<robot>` clips the way a
servo-driven research robot would, so a study can show what a real robot could do with a motion (the
Furhat study found the robot smoothed much of it away).

Two layers:

- `simulate_servos(commands, fps, actuators)` turns a command trajectory into what the actuators
  physically do. Per actuator, in this order: the command is clamped to the actuator's safe range
  (`lower`..`upper`); delayed by its latency (`latency_ms`; a fraction of a frame is interpolated
  linearly; before the clip the robot was commanded its rest); optionally lagged by a first-order servo
  loop (`time_constant_ms`, the time to cover 63 % of a step); and slew-limited to `max_speed` command
  units per second. The robot starts the clip at its rest value: frame 0 shows `rest`, and frame i moves
  towards the delayed command of frame i by at most `max_speed / fps`. With no limits at all a command
  trajectory comes back unchanged except for frame 0.
- `SimRobot(profile)` is the rig (render/rig.py): `prepare` runs the simulation on a clip in its layout,
  `parts` poses the mechanical face for one frame of the result.

A profile is the plain dict `inference.robots.RobotProfile.to_dict()` gives (render never imports
inference.robots): `name`, `actuators` (dicts of `ActuatorSpec` fields: `name`, `lower`, `upper`, `rest`,
`max_speed`, `pose_channel`, `pose_range_deg`), `latency_ms` (the whole robot's command-to-motion delay)
and `extra`. ActuatorSpec has no per-actuator latency or servo lag, so those are read, when present, from
an actuator dict's own `latency_ms` / `time_constant_ms`, else from `extra["actuators"][name]`, else from
the profile (`latency_ms`, `extra["time_constant_ms"]`); absent everywhere they are 0.

The face
--------
Model space is millimetres with x to the viewer's right (the subject's left, so `..._left` channels move
parts at positive x), y up, z towards the camera; the origin lies between the eyes at eye level, as in
inference/face_geometry.py. A dark-grey plastic skull carries a white faceplate with screws; two
eyeballs (iris and black pupil lens) sit in dark bezels with grey upper lids on servos and fixed lower
lids; dark brow bars slide in metal guides; a white jaw plate is hinged behind the mouth with servo horns
at the hinge (the "ears"); rubber lips; metal lip-corner knobs pulled by links from servo horns on the
cheeks; the head sits on a pan/tilt(/roll) bracket on a neck post. The stills in docs/images show it.

Parts move by channel name (the `sim-face` channels of inference/robots.py plus a few optional ones).
Commands are the normalised travel 0..1 of each actuator, so a profile's narrower `lower`..`upper` also
narrows the motion. A channel the profile lacks leaves its parts at rest (`NEUTRAL`); a
channel the face has no part for (`middle.cheek_left`, say) is simulated but not drawn
(`SimRobot.unmapped_channels`).

How each channel's command c (0..1) moves its part:

- `upper.brow_left` / `_right`: the brow bar slides up 14·c mm (its servo horn turns 90°·c).
- `upper.brow_inner_*` / `upper.brow_outer_*` (optional): that end of the bar rises a further 10·c mm,
  tilting the bar.
- `upper.eyelid_left` / `_right`: the lid turns about the eye's horizontal axis; its edge stands
  50° − 150°·c above the eye's axis: 0 wide open (50°), 0.2 open (20°, rest), 1 closed (−100°).
- `lower.jaw`: the jaw plate opens 22°·c about the hinge axis at y −64, z −52 mm (the chin drops ≈ 23 mm).
- `lower.lip_corner_left` / `_right`: with d = 2c − 1 (0 frown, 0.5 rest, 1 smile) the corner knob moves
  up 8·d mm and out 4·max(d, 0) mm; the lips' ends follow it; the cheek horn turns 40°·d.
- `lower.upper_lip`: the upper lip rises 5·c mm. `lower.lower_lip`: the lower lip drops 6·c mm on the jaw.
- `head.pan` / `head.tilt` / `head.roll`: degrees = a + c·(b − a) for the actuator's `pose_range_deg`
  (a, b) (default ±30°). Pan is ry (positive turns the nose to the viewer's right), tilt rx (positive nods
  the nose down), roll rz (positive tips the top of the head to the viewer's left).

The head turns about the neck pivot `NECK_PIVOT` (below the chin) by R = Rz(roll)·Ry(pan)·Rx(tilt), the
convention of a clip's head pose (inference/face_geometry.head_rotation), so a clip's head angles and the
robot's agree. Head actuators are found by `pose_channel` (else by name: pan/yaw → ry, tilt/pitch/nod →
rx, roll → rz). Parts are merged by material and by what carries them (each part costs the renderer a
draw call): the head's, the jaw's and the neck's fixed meshes keep their vertices and move by
`Part.transform`; the small moving pieces (upper lids, brows, the metal linkage, the lips) are placed in
the head's frame and merged anew each frame.
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass

import numpy as np

from inference.motion import MotionClip, MotionError

from render.rig import Part, Rig, RigError

# --- the servo simulation ---------------------------------------------------------------------------------

# Which head-pose angle a head actuator follows when its dict does not say (inference/robots.py's default).
HEAD_POSE_BY_NAME = {"pan": "ry", "yaw": "ry", "tilt": "rx", "pitch": "rx", "nod": "rx", "roll": "rz"}
DEFAULT_HEAD_RANGE_DEG = (-30.0, 30.0)


@dataclass(frozen=True)
class Servo:
    """One actuator as the simulation and the rig read it (validated, defaults filled in)."""

    name: str
    lower: float
    upper: float
    rest: float
    max_speed: float | None       # command units per second; None: unlimited
    latency_ms: float
    time_constant_ms: float       # first-order lag; 0: none
    pose_channel: str | None      # head actuators: "rx", "ry" or "rz"
    pose_range_deg: tuple[float, float] | None

    def degrees(self, command: float) -> float:
        """Head actuators: the angle a command (actuator position) turns the head to."""
        lo, hi = self.pose_range_deg or DEFAULT_HEAD_RANGE_DEG
        return float(lo + command * (hi - lo))


def _number(data: dict, key: str, default, owner: str) -> float | None:
    """`data[key]` as a finite float (None stays None); `owner` names what it belongs to in the error."""
    value = data.get(key, default)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RigError(f"{owner}: {key} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise RigError(f"{owner}: {key} must be finite, got {value!r}")
    return number


def servo_from_dict(actuator: dict, *, latency_ms: float = 0.0, time_constant_ms: float = 0.0) -> Servo:
    """A `Servo` from an actuator dict (`ActuatorSpec.to_dict()` fields, plus optional `latency_ms` and
    `time_constant_ms`); the keyword arguments are the defaults for those two. Raises RigError naming the
    field to fix."""
    if not isinstance(actuator, dict):
        raise RigError(f"an actuator must be a dict of ActuatorSpec fields, got {type(actuator).__name__}")
    name = actuator.get("name")
    if not isinstance(name, str) or not name:
        raise RigError(f"every actuator needs a channel name (e.g. 'lower.jaw'), got {name!r}")
    lower = _number(actuator, "lower", 0.0, f"actuator {name}")
    upper = _number(actuator, "upper", 1.0, f"actuator {name}")
    if lower is None or upper is None or not 0.0 <= lower < upper <= 1.0:
        raise RigError(f"actuator {name}: need 0 ≤ lower < upper ≤ 1 (normalised commands), got {lower}..{upper}")
    rest = _number(actuator, "rest", 0.0, f"actuator {name}")
    if rest is None or not lower <= rest <= upper:
        raise RigError(f"actuator {name}: rest {rest} lies outside its range {lower}..{upper}")
    max_speed = _number(actuator, "max_speed", None, f"actuator {name}")
    if max_speed is not None and max_speed <= 0:
        raise RigError(f"actuator {name}: max_speed must be positive (command units per second) or null, "
                       f"got {max_speed}")
    latency = _number(actuator, "latency_ms", latency_ms, f"actuator {name}") or 0.0
    tau = _number(actuator, "time_constant_ms", time_constant_ms, f"actuator {name}") or 0.0
    if latency < 0 or tau < 0:
        raise RigError(f"actuator {name}: latency_ms and time_constant_ms cannot be negative, got {latency}, {tau}")
    pose_channel = actuator.get("pose_channel")
    if pose_channel is None and name.startswith("head."):
        pose_channel = HEAD_POSE_BY_NAME.get(name[len("head."):])
    if pose_channel not in (None, "rx", "ry", "rz"):
        raise RigError(f"actuator {name}: pose_channel must be rx, ry or rz, got {pose_channel!r}")
    pose_range = actuator.get("pose_range_deg")
    if pose_range is not None:
        try:
            lo, hi = (float(v) for v in pose_range)
        except (TypeError, ValueError):
            raise RigError(f"actuator {name}: pose_range_deg must be two angles in degrees, "
                           f"got {pose_range!r}") from None
        if lo == hi or not (math.isfinite(lo) and math.isfinite(hi)):
            raise RigError(f"actuator {name}: pose_range_deg needs two different finite angles, got {pose_range!r}")
        pose_range = (lo, hi)
    elif pose_channel is not None:
        pose_range = DEFAULT_HEAD_RANGE_DEG
    return Servo(name, lower, upper, rest, max_speed, latency, tau, pose_channel, pose_range)


def simulate_servos(commands, fps: float, actuators: list[dict | Servo], *, latency_ms: float = 0.0,
                    time_constant_ms: float = 0.0) -> np.ndarray:
    """What the robot physically does with a command trajectory: actuator positions [T, M] (float32).

    `commands` [T, M] are normalised commands (one column per actuator, in the order of `actuators`);
    `actuators` are dicts of `ActuatorSpec` fields, optionally with their own `latency_ms` and
    `time_constant_ms` (the keyword arguments are the defaults, e.g. the profile's `latency_ms`).
    Each column is clamped to `lower`..`upper`, delayed by the latency (rest before the clip; sub-frame
    delays interpolated linearly), lagged by the time constant if any, and slew-limited to `max_speed`
    units per second, starting from `rest` at frame 0 (see the module docstring).
    """
    cmd = np.asarray(commands, np.float64)
    if cmd.ndim == 1:
        cmd = cmd[:, None]
    servos = [a if isinstance(a, Servo) else servo_from_dict(a, latency_ms=latency_ms,
                                                             time_constant_ms=time_constant_ms) for a in actuators]
    if cmd.ndim != 2 or cmd.shape[1] != len(servos):
        raise RigError(f"commands must be [frames, {len(servos)}] (one column per actuator), got {cmd.shape}")
    if not np.isfinite(cmd).all():
        raise RigError("commands hold NaN or inf values; a robot cannot be sent those")
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        raise RigError(f"frame rate must be a positive number, got {fps!r}") from None
    if not (math.isfinite(fps) and fps > 0):
        raise RigError(f"frame rate must be a positive number, got {fps!r}")
    n = cmd.shape[0]
    if n == 0:
        return np.zeros((0, len(servos)), np.float32)
    lower = np.array([s.lower for s in servos])
    upper = np.array([s.upper for s in servos])
    rest = np.array([s.rest for s in servos])
    target = np.clip(cmd, lower, upper)

    # Latency: the command the servo acts on at frame i is the one sent at t_i − latency; before the
    # clip the robot was held at rest (a virtual frame −1 at rest makes a sub-frame delay of the first
    # command a blend of rest and it).
    frames = np.arange(-1, n, dtype=np.float64)
    for j, servo in enumerate(servos):
        delay = servo.latency_ms * fps / 1000.0
        if delay > 0:
            source = np.concatenate([[rest[j]], target[:, j]])
            target[:, j] = np.interp(np.arange(n) - delay, frames, source, left=rest[j])

    dt = 1.0 / fps
    max_step = np.array([s.max_speed * dt if s.max_speed is not None else np.inf for s in servos])
    gain = np.array([1.0 - math.exp(-1000.0 * dt / s.time_constant_ms) if s.time_constant_ms > 0 else 1.0
                     for s in servos])
    out = np.empty((n, len(servos)))
    position = rest.copy()
    out[0] = position
    for i in range(1, n):   # sequential by nature; vectorised over actuators
        position = position + np.clip(gain * (target[i] - position), -max_step, max_step)
        out[i] = position
    return out.astype(np.float32)


# --- the face's geometry ----------------------------------------------------------------------------------

Mesh = tuple[np.ndarray, np.ndarray]   # vertices [N, 3] float32 (mm), faces [F, 3] int32

NECK_PIVOT = np.array([0.0, -150.0, -62.0])        # where the pan, tilt and roll axes meet
EYE_CENTRES = {"left": np.array([31.0, 2.0, 10.0]), "right": np.array([-31.0, 2.0, 10.0])}
EYE_RADIUS = 14.0
LID_EDGE_DEG = (50.0, -150.0)                      # lid edge above the eye axis: 50° − 150°·command
BROW_CENTRES = {"left": np.array([31.0, 27.5, 17.0]), "right": np.array([-31.0, 27.5, 17.0])}
BROW_HALF_LENGTH = 18.0
BROW_RAISE_MM = 14.0
BROW_END_RAISE_MM = 10.0
JAW_HINGE = np.array([0.0, -64.0, -52.0])          # the hinge axis runs along x through this point
JAW_OPEN_DEG = 22.0
UPPER_LIP_CENTRE = np.array([0.0, -62.0, 16.5])
LOWER_LIP_CENTRE = np.array([0.0, -70.4, 16.5])
LIP_RADII = (26.0, 4.2, 5.0)
UPPER_LIP_RAISE_MM = 5.0
LOWER_LIP_DROP_MM = 6.0
LIP_CORNERS = {"left": np.array([28.5, -66.2, 16.5]), "right": np.array([-28.5, -66.2, 16.5])}
CORNER_UP_MM = 8.0
CORNER_OUT_MM = 4.0
CHEEK_HORNS = {"left": np.array([50.0, -44.0, 15.0]), "right": np.array([-50.0, -44.0, 15.0])}
CHEEK_HORN_DEG = 40.0
BROW_HORNS = {"left": np.array([53.0, 50.0, 14.5]), "right": np.array([-53.0, 50.0, 14.5])}
FACEPLATE = (np.array([0.0, 6.0, 2.0]), np.array([68.0, 74.0, 12.0]), 0.3)   # centre, radii, exponent

# The neutral command of each channel the face knows: what a profile without that channel shows.
NEUTRAL = {"upper.brow_left": 0.0, "upper.brow_right": 0.0, "upper.brow_inner_left": 0.0,
           "upper.brow_inner_right": 0.0, "upper.brow_outer_left": 0.0, "upper.brow_outer_right": 0.0,
           "upper.eyelid_left": 0.2, "upper.eyelid_right": 0.2, "lower.jaw": 0.0,
           "lower.lip_corner_left": 0.5, "lower.lip_corner_right": 0.5, "lower.upper_lip": 0.0,
           "lower.lower_lip": 0.0}

# A few expressions, as commands by channel (the rest at rest): the stills in docs/images were drawn from these.
EXPRESSIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "smile": {"lower.lip_corner_left": 1.0, "lower.lip_corner_right": 1.0, "upper.brow_left": 0.2,
              "upper.brow_right": 0.2},
    "jaw_open": {"lower.jaw": 1.0, "lower.lower_lip": 0.3, "lower.upper_lip": 0.3},
    "blink": {"upper.eyelid_left": 1.0, "upper.eyelid_right": 1.0},
    "brows_up": {"upper.brow_left": 1.0, "upper.brow_right": 1.0, "upper.eyelid_left": 0.0,
                 "upper.eyelid_right": 0.0, "lower.jaw": 0.15},
    "head_turned": {"head.pan": 0.9, "head.tilt": 0.35, "lower.lip_corner_left": 0.7, "lower.lip_corner_right": 0.7},
}

# Materials: linear RGBA, metallic, roughness.
WHITE_PLASTIC = ((0.96, 0.96, 0.94, 1.0), 0.0, 0.45)
GREY_PLASTIC = ((0.30, 0.31, 0.33, 1.0), 0.0, 0.5)
LID_PLASTIC = ((0.42, 0.43, 0.45, 1.0), 0.0, 0.45)
DARK_PLASTIC = ((0.025, 0.025, 0.03, 1.0), 0.0, 0.55)
SERVO_PLASTIC = ((0.02, 0.02, 0.025, 1.0), 0.0, 0.4)
METAL = ((0.62, 0.63, 0.66, 1.0), 0.85, 0.3)
DARK_METAL = ((0.22, 0.22, 0.24, 1.0), 0.8, 0.35)
RUBBER = ((0.20, 0.045, 0.045, 1.0), 0.0, 0.7)
CAVITY = ((0.008, 0.006, 0.006, 1.0), 0.0, 1.0)
EYE_WHITE = ((0.86, 0.86, 0.83, 1.0), 0.0, 0.25)
IRIS = ((0.05, 0.13, 0.22, 1.0), 0.0, 0.3)
PUPIL = ((0.004, 0.004, 0.005, 1.0), 0.2, 0.08)


def _signed_power(w: np.ndarray, e: float) -> np.ndarray:
    return np.sign(w) * np.abs(w) ** e


def _outward(vertices: np.ndarray, faces: np.ndarray) -> Mesh:
    """Faces wound so that a closed mesh's normals point outwards (positive signed volume)."""
    v = vertices[faces]
    volume = np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum()
    if volume < 0:
        faces = faces[:, ::-1]
    return vertices.astype(np.float32), np.ascontiguousarray(faces, dtype=np.int32)


def _ring_faces(n_rings: int, n_around: int, offset: int = 0) -> np.ndarray:
    """Quads (as triangles) between consecutive rings of `n_around` vertices that wrap around."""
    r, a = np.meshgrid(np.arange(n_rings - 1), np.arange(n_around), indexing="ij")
    p00 = offset + r * n_around + a
    p01 = offset + r * n_around + (a + 1) % n_around
    p10 = p00 + n_around
    p11 = p01 + n_around
    return np.concatenate([np.stack([p00, p01, p11], -1).reshape(-1, 3),
                           np.stack([p00, p11, p10], -1).reshape(-1, 3)])


def _fan(centre: int, ring: np.ndarray) -> np.ndarray:
    return np.stack([np.full(len(ring), centre), ring, np.roll(ring, -1)], axis=1)


def superellipsoid(radii, centre=(0.0, 0.0, 0.0), exponent: float = 1.0, exponent_around: float | None = None,
                   n_lat: int = 18, n_around: int = 36) -> Mesh:
    """A closed superellipsoid (1: ellipsoid; towards 0: a box with rounded edges), poles on ±y."""
    a, b, c = radii
    e1, e2 = exponent, exponent if exponent_around is None else exponent_around
    lat = np.linspace(-np.pi / 2, np.pi / 2, n_lat + 1)[1:-1]
    lon = np.linspace(-np.pi, np.pi, n_around, endpoint=False)
    cu, su = _signed_power(np.cos(lat), e1)[:, None], _signed_power(np.sin(lat), e1)[:, None]
    cv, sv = _signed_power(np.cos(lon), e2)[None], _signed_power(np.sin(lon), e2)[None]
    rings = np.stack([a * cu * cv, b * su * np.ones_like(cv), c * cu * sv], axis=-1).reshape(-1, 3)
    n = len(rings)
    vertices = np.concatenate([rings, [[0.0, -b, 0.0], [0.0, b, 0.0]]]) + np.asarray(centre, np.float64)
    faces = np.concatenate([_ring_faces(n_lat - 1, n_around),
                            _fan(n, np.arange(n_around)[::-1]),
                            _fan(n + 1, np.arange(n - n_around, n))])
    return _outward(vertices, faces)


def _axis_rotation(axis) -> np.ndarray:
    """A rotation taking +y to the unit vector `axis`."""
    axis = np.asarray(axis, np.float64)
    axis = axis / np.linalg.norm(axis)
    y = np.array([0.0, 1.0, 0.0])
    v, c = np.cross(y, axis), float(np.dot(y, axis))
    if np.linalg.norm(v) < 1e-9:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1.0 + c)


def cylinder(radius: float, p0, p1, n_around: int = 24) -> Mesh:
    """A capped cylinder from point p0 to p1 (caps have their own vertices, so they shade flat)."""
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    length = float(np.linalg.norm(p1 - p0))
    angle = np.linspace(0, 2 * np.pi, n_around, endpoint=False)
    ring = np.stack([radius * np.cos(angle), np.zeros(n_around), radius * np.sin(angle)], axis=1)
    top = ring + [0.0, length, 0.0]
    local = np.concatenate([ring, top, ring, top, [[0.0, 0.0, 0.0], [0.0, length, 0.0]]])
    side = _ring_faces(2, n_around)
    bottom = _fan(4 * n_around, np.arange(2 * n_around, 3 * n_around))
    cap = _fan(4 * n_around + 1, np.arange(3 * n_around, 4 * n_around)[::-1])
    vertices = local @ _axis_rotation(p1 - p0).T + p0
    faces = np.concatenate([side, bottom, cap])
    # The side alone decides the winding (the caps were written to match it).
    v, f = _outward(vertices, side)
    if f[0, 0] != side[0, 0]:
        faces = faces[:, ::-1]
    return v, np.ascontiguousarray(faces, dtype=np.int32)


def disc(radius: float, thickness: float, centre, axis, n_around: int = 28) -> Mesh:
    centre, axis = np.asarray(centre, np.float64), np.asarray(axis, np.float64)
    axis = axis / np.linalg.norm(axis)
    return cylinder(radius, centre - axis * thickness / 2, centre + axis * thickness / 2, n_around)


def torus(major: float, minor: float, centre, n_major: int = 40, n_minor: int = 12) -> Mesh:
    """A ring in the xy plane (facing the camera) around `centre`."""
    u = np.linspace(0, 2 * np.pi, n_major, endpoint=False)[:, None]
    v = np.linspace(0, 2 * np.pi, n_minor, endpoint=False)[None]
    r = major + minor * np.cos(v)
    vertices = np.stack([r * np.cos(u), r * np.sin(u), minor * np.sin(v) * np.ones_like(u)], -1).reshape(-1, 3)
    faces = _ring_faces(n_major + 1, n_minor) % (n_major * n_minor)
    return _outward(vertices + np.asarray(centre, np.float64), faces)


def shell_patch(r_inner: float, r_outer: float, alpha_deg: tuple[float, float], half_width_deg: float,
                centre, n_alpha: int = 28, n_beta: int = 20) -> Mesh:
    """A closed curved plate: the part of a spherical shell between angles `alpha_deg` about the x axis
    (0° points at the camera, 90° straight up) and within ±`half_width_deg` sideways. An eyelid."""
    alpha = np.radians(np.linspace(*alpha_deg, n_alpha + 1))[:, None]
    beta = np.radians(np.linspace(-half_width_deg, half_width_deg, n_beta + 1))[None]

    def surface(r):
        return np.stack([r * np.sin(beta) * np.ones_like(alpha), r * np.cos(beta) * np.sin(alpha),
                         r * np.cos(beta) * np.cos(alpha)], -1).reshape(-1, 3)

    rows, cols = n_alpha + 1, n_beta + 1
    outer, inner = surface(r_outer), surface(r_inner)
    vertices = np.concatenate([outer, inner]) + np.asarray(centre, np.float64)
    idx_o = np.arange(rows * cols).reshape(rows, cols)
    idx_i = idx_o + rows * cols

    def grid(idx, flip):
        p00, p01, p10, p11 = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
        tri = np.concatenate([np.stack([p00, p10, p11], -1).reshape(-1, 3),
                              np.stack([p00, p11, p01], -1).reshape(-1, 3)])
        return tri[:, ::-1] if flip else tri

    def strip(a, b, flip):   # joins two matching boundary rows
        tri = np.concatenate([np.stack([a[:-1], b[:-1], b[1:]], -1), np.stack([a[:-1], b[1:], a[1:]], -1)])
        return tri[:, ::-1] if flip else tri

    faces = np.concatenate([grid(idx_o, False), grid(idx_i, True),
                            strip(idx_o[0], idx_i[0], False), strip(idx_o[-1], idx_i[-1], True),
                            strip(idx_o[:, 0], idx_i[:, 0], True), strip(idx_o[:, -1], idx_i[:, -1], False)])
    return _outward(vertices, faces)


def merge(*meshes: Mesh) -> Mesh:
    vertices, faces, offset = [], [], 0
    for v, f in meshes:
        vertices.append(v)
        faces.append(f + offset)
        offset += len(v)
    return np.concatenate(vertices).astype(np.float32), np.concatenate(faces).astype(np.int32)


# --- rigid transforms -------------------------------------------------------------------------------------

def rotation(axis: str, degrees: float) -> np.ndarray:
    """3×3 right-handed rotation about x, y or z."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def head_rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """R = Rz(rz)·Ry(ry)·Rx(rx): the head-pose convention of a motion clip (inference/face_geometry.py)."""
    return rotation("z", rz) @ rotation("y", ry) @ rotation("x", rx)


def about(point, matrix3: np.ndarray) -> np.ndarray:
    """4×4 transform rotating by `matrix3` about `point`."""
    out = np.eye(4)
    out[:3, :3] = matrix3
    out[:3, 3] = np.asarray(point, np.float64) - matrix3 @ np.asarray(point, np.float64)
    return out


def translation(offset) -> np.ndarray:
    out = np.eye(4)
    out[:3, 3] = offset
    return out


def faceplate_front_z(x: float, y: float) -> float:
    """z of the faceplate's front surface at (x, y) (for mounting screws and horns flush)."""
    centre, radii, e = FACEPLATE
    n = 2.0 / e
    rest = 1.0 - abs((x - centre[0]) / radii[0]) ** n - abs((y - centre[1]) / radii[1]) ** n
    return float(centre[2] + radii[2] * max(rest, 0.0) ** (1.0 / n))


# --- the rig ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Shape:
    mesh: Mesh
    material: tuple
    smooth: bool = True


@dataclass(frozen=True)
class FacePose:
    """One frame of the face in physical terms (what `parts` draws); see the table in the module docstring."""

    brow_raise_mm: dict          # side → (inner end, outer end) raise in mm
    brow_horn_deg: dict          # side → degrees
    lid_edge_deg: dict           # side → lid edge angle above the eye axis
    jaw_deg: float
    corner_mm: dict              # side → (outward, up) displacement of the lip corner in mm
    corner_horn_deg: dict        # side → degrees
    upper_lip_mm: float
    lower_lip_mm: float
    head_deg: dict               # rx, ry, rz


SIDES = ("left", "right")
_SIGN = {"left": 1.0, "right": -1.0}


def face_pose(commands: dict[str, float], head_deg: dict[str, float] | None = None) -> FacePose:
    """The physical pose for actuator positions by channel name (missing channels: `NEUTRAL`)."""
    c = {**NEUTRAL, **commands}
    brow, horn, lid, corner, corner_horn = {}, {}, {}, {}, {}
    for side in SIDES:
        base = BROW_RAISE_MM * c[f"upper.brow_{side}"]
        brow[side] = (base + BROW_END_RAISE_MM * c[f"upper.brow_inner_{side}"],
                      base + BROW_END_RAISE_MM * c[f"upper.brow_outer_{side}"])
        horn[side] = 90.0 * c[f"upper.brow_{side}"]
        lid[side] = LID_EDGE_DEG[0] + LID_EDGE_DEG[1] * c[f"upper.eyelid_{side}"]
        d = 2.0 * c[f"lower.lip_corner_{side}"] - 1.0
        corner[side] = (CORNER_OUT_MM * max(d, 0.0), CORNER_UP_MM * d)
        corner_horn[side] = CHEEK_HORN_DEG * d
    return FacePose(brow, horn, lid, JAW_OPEN_DEG * c["lower.jaw"], corner, corner_horn,
                    UPPER_LIP_RAISE_MM * c["lower.upper_lip"], LOWER_LIP_DROP_MM * c["lower.lower_lip"],
                    {"rx": 0.0, "ry": 0.0, "rz": 0.0, **(head_deg or {})})


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


class SimRobot(Rig):
    """A simulated servo-driven robot face for one robot profile (the `RobotProfile.to_dict()` shape)."""

    name = "robot_sim"

    def __init__(self, profile: dict):
        if not isinstance(profile, dict):
            raise RigError(f"a robot profile is a dict (RobotProfile.to_dict()), got {type(profile).__name__}")
        robot = profile.get("name")
        if not isinstance(robot, str) or not robot:
            raise RigError(f"the robot profile needs a name (e.g. 'sim-face'), got {robot!r}")
        actuators = profile.get("actuators")
        if not isinstance(actuators, (list, tuple)) or not actuators:
            raise RigError(f"robot {robot!r}: the profile lists no actuators; give at least one "
                           "(dicts with name, lower, upper, rest, max_speed)")
        extra = profile.get("extra") or {}
        if not isinstance(extra, dict):
            raise RigError(f"robot {robot!r}: extra must be a dict, got {type(extra).__name__}")
        latency = _number(profile, "latency_ms", 0.0, f"robot {robot!r}") or 0.0
        tau = _number(extra, "time_constant_ms", 0.0, f"robot {robot!r} (extra)") or 0.0
        if latency < 0 or tau < 0:
            raise RigError(f"robot {robot!r}: latency_ms and time_constant_ms cannot be negative")
        per_actuator = extra.get("actuators") or {}
        if not isinstance(per_actuator, dict):
            raise RigError(f"robot {robot!r}: extra.actuators must map channel names to servo figures "
                           f"(latency_ms, time_constant_ms), got {type(per_actuator).__name__}")
        for actuator in actuators:
            if not isinstance(actuator, dict):
                raise RigError(f"robot {robot!r}: each actuator must be a dict of ActuatorSpec fields, "
                               f"got {type(actuator).__name__}")
        names = [a.get("name") for a in actuators]
        twice = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
        if twice:
            raise RigError(f"robot {robot!r} names an actuator twice: {', '.join(twice)}; "
                           "channel names must be unique")
        # An actuator's own figures win over extra.actuators[name], which wins over the profile's.
        servos = [servo_from_dict({**(per_actuator.get(a.get("name")) or {}), **a}, latency_ms=latency,
                                  time_constant_ms=tau) for a in actuators]
        self.servos: tuple[Servo, ...] = tuple(servos)
        self.channels: tuple[str, ...] = tuple(s.name for s in servos)
        self.consumes = f"motors:{robot}"
        try:   # the layout's own rules decide whether the name makes a valid motor layout
            MotionClip(fps=1.0, layout=self.consumes, values=np.zeros((1, len(servos)), np.float32),
                       channels=self.channels)
        except MotionError as exc:
            raise RigError(f"robot {robot!r} cannot name a motor layout ({exc}); use lower-case letters, digits, "
                           "'-' and '_'") from None
        head = {}
        for s in servos:
            if s.pose_channel is not None:
                if s.pose_channel in head:
                    raise RigError(f"robot {robot!r}: actuators {head[s.pose_channel].name} and {s.name} both follow "
                                   f"head angle {s.pose_channel}; give each head actuator its own pose_channel")
                head[s.pose_channel] = s
        self.head_servos: dict[str, Servo] = head
        self.unmapped_channels = tuple(n for n in self.channels if n not in NEUTRAL and n not in
                                       {s.name for s in head.values()})
        self.profile = copy.deepcopy(dict(profile))
        self.robot = robot
        self._index = {n: i for i, n in enumerate(self.channels)}
        _geometry()   # built once per process, here rather than at the first frame

    # --- Rig ------------------------------------------------------------------------------------------

    def prepare(self, clip: MotionClip) -> MotionClip:
        """The simulated actuator positions for a clip of this robot's commands (see `simulate_servos`);
        metadata records `simulated: True` and the profile. A clip this rig already prepared is returned
        as it is."""
        values = self._commands(clip)
        if clip.metadata.get("simulated") is True and clip.metadata.get("robot_profile") == self.profile:
            return clip
        positions = simulate_servos(values, clip.fps, list(self.servos))
        return MotionClip(fps=clip.fps, layout=clip.layout, values=positions, channels=self.channels,
                          head_pose=clip.head_pose,
                          metadata={**clip.metadata, "simulated": True, "robot_profile": copy.deepcopy(self.profile)})

    def parts(self, clip: MotionClip, frame: int) -> list[Part]:
        values = self._commands(clip)
        if not 0 <= frame < len(values):
            raise RigError(f"frame {frame} is outside this clip of {len(values)} frames")
        return self.parts_for(values[frame])

    def look_at(self) -> tuple[np.ndarray, float]:
        return np.array([0.0, -48.0, 0.0], np.float32), 345.0

    # --- the face ---------------------------------------------------------------------------------------

    def positions(self, commands: dict[str, float] | None = None) -> np.ndarray:
        """One frame of actuator positions (profile order): each actuator's rest, with `commands` (by
        channel name) in their place; names the robot lacks are ignored, as its face would."""
        commands = commands or {}
        return np.array([commands.get(s.name, s.rest) for s in self.servos], np.float32)

    def pose(self, positions) -> FacePose:
        """The physical pose for one frame of actuator positions (profile order)."""
        positions = np.asarray(positions, np.float64).reshape(-1)
        if len(positions) != len(self.channels):
            raise RigError(f"need {len(self.channels)} actuator positions ({', '.join(self.channels)}), "
                           f"got {len(positions)}")
        face = {n: float(positions[i]) for n, i in self._index.items() if n in NEUTRAL}
        head = {axis: s.degrees(float(positions[self._index[s.name]])) for axis, s in self.head_servos.items()}
        return face_pose(face, head)

    def parts_for(self, positions) -> list[Part]:
        """The posed parts for one frame of actuator positions (profile order)."""
        return pose_parts(self.pose(positions))

    def _commands(self, clip: MotionClip) -> np.ndarray:
        if clip.layout != self.consumes:
            raise RigError(
                f"the simulated robot {self.robot!r} plays {self.consumes} clips (its actuator commands), not "
                f"{clip.layout!r}: convert the clip with the robot inverse model first "
                f"(inference.models.inverse.apply_inverse with a model trained for {self.robot!r})")
        if tuple(clip.channels) == self.channels:
            return clip.values
        missing = [c for c in self.channels if c not in clip.channels]
        extra = [c for c in clip.channels if c not in self._index]
        if missing or extra:
            raise RigError(f"this {self.consumes} clip does not match the robot's channels: "
                           + "; ".join(filter(None, [f"missing {', '.join(missing)}" if missing else "",
                                                     f"unknown {', '.join(extra)}" if extra else ""]))
                           + f" (the robot has {', '.join(self.channels)})")
        order = [clip.channels.index(c) for c in self.channels]
        return clip.values[:, order]


def _cheek_arm_tip(side: str) -> np.ndarray:
    """Where the cheek horn's arm ends at rest: 10 mm from the horn's centre, towards the lip corner."""
    horn = CHEEK_HORNS[side]
    toward = LIP_CORNERS[side][:2] - horn[:2]
    return horn + np.array([*(10.0 * toward / np.linalg.norm(toward)), 1.4])


# Parts are grouped by material and by what carries them, because each part costs the renderer a draw
# call (with every light): the head's fixed parts are a few static meshes posed by the neck; the jaw's
# ride on the jaw; the small moving parts are re-placed in the head's frame and merged each frame.
@dataclass(frozen=True)
class _Geometry:
    static: dict          # part name → (_Shape, carrier: "head", "jaw", "bracket" or "stand")
    moving: dict          # component name → (_Shape, part name); placed per frame


@functools.lru_cache(maxsize=1)
def _geometry() -> _Geometry:
    """Every mesh at rest in the head's frame (the neck's in model space); built once per process and
    shared read-only by every rig and frame."""
    centre, radii, e = FACEPLATE
    pivot, hinge = NECK_PIVOT, JAW_HINGE
    screws = [(x, y) for x in (-58.0, 58.0) for y in (66.0, -54.0)] + [(-16.0, 72.0), (16.0, 72.0)]
    eye_front = {side: EYE_CENTRES[side] + [0.0, 0.0, EYE_RADIUS] for side in SIDES}
    static = {
        "shell": (_Shape(superellipsoid((80.0, 94.0, 70.0), (0.0, 18.0, -62.0), 0.55, 0.7, 28, 56), GREY_PLASTIC),
                  "head"),
        "faceplate": (_Shape(merge(superellipsoid(radii, centre, e, e, 28, 56),
                                   superellipsoid((8.5, 15.0, 10.0), (0.0, -27.0, 14.0), 0.6, 0.8)), WHITE_PLASTIC),
                      "head"),
        "mouth_cavity": (_Shape(superellipsoid((48.0, 18.0, 22.0), (0.0, -74.0, -13.0), 0.3, 0.3), CAVITY), "head"),
        "eyes": (_Shape(merge(*[superellipsoid((EYE_RADIUS,) * 3, EYE_CENTRES[side], 1.0, 1.0, 20, 40)
                                for side in SIDES]), EYE_WHITE), "head"),
        "irises": (_Shape(merge(*[superellipsoid((6.6, 6.6, 1.4), eye_front[side] - [0, 0, 0.6], 0.35, 1.0, 8, 32)
                                  for side in SIDES]), IRIS), "head"),
        "pupils": (_Shape(merge(*[merge(superellipsoid((3.4, 3.4, 1.2), eye_front[side] + [0, 0, 0.6], 0.35, 1.0,
                                                       8, 24),
                                        torus(3.6, 0.45, eye_front[side] + [0, 0, 0.9], 24, 8)) for side in SIDES]),
                          PUPIL), "head"),
        "lower_lids": (_Shape(merge(*[shell_patch(16.9, 18.2, (-178.0, -48.0), 80.0, EYE_CENTRES[side])
                                      for side in SIDES]), LID_PLASTIC), "head"),
        # Eye bezels, brow guides, screws and the head's neck mount.
        "fittings": (_Shape(merge(*[torus(18.2, 2.8, EYE_CENTRES[side] + [0.0, 0.0, 4.5]) for side in SIDES],
                                  *[superellipsoid((5.5, 6.0, 3.0), BROW_CENTRES[side] + [0, 22.0, -1.5], 0.3, 0.3,
                                                   8, 16) for side in SIDES],
                                  *[superellipsoid((2.8, 2.8, 1.3), (x, y, faceplate_front_z(x, y)), 0.6, 0.25, 6, 12)
                                    for x, y in screws],
                                  cylinder(18.0, pivot + [0, 6.0, 0], pivot + [0, 64.0, 0]),
                                  disc(10.0, 4.0, pivot + [33.0, 0, 0], (1, 0, 0)),
                                  disc(10.0, 4.0, pivot - [33.0, 0, 0], (1, 0, 0))), DARK_METAL), "head"),
        # Hobby-servo bodies: cheeks, jaw hinge and the neck's tilt servo (mounted on the head).
        "servos": (_Shape(merge(*[superellipsoid((7.5, 12.0, 4.0), CHEEK_HORNS[side] + [0, 5.0, -3.0], 0.25, 0.25,
                                                 10, 20) for side in SIDES],
                                *[superellipsoid((9.0, 13.0, 15.0), hinge + [x * 71.0, 0, 0], 0.25, 0.25, 10, 20)
                                  for x in (-1.0, 1.0)],
                                superellipsoid((8.0, 12.0, 14.0), pivot + [48.0, 4.0, 0], 0.25, 0.25, 10, 20)),
                          SERVO_PLASTIC), "head"),
        "jaw": (_Shape(superellipsoid((56.0, 23.0, 36.0), (0.0, -93.0, -16.0), 0.3, 0.45, 24, 48), WHITE_PLASTIC),
                "jaw"),
        # The mouth's floor, on the jaw: seen (dark) behind the lower lip when the jaw opens.
        "mouth_floor": (_Shape(superellipsoid((53.0, 2.0, 31.0), (0.0, -70.0, -17.0), 0.3, 0.3, 8, 24), CAVITY),
                        "jaw"),
        "neck_bracket": (_Shape(merge(superellipsoid((2.5, 20.0, 16.0), pivot + [37.0, -6.0, 0], 0.2, 0.2, 8, 16),
                                      superellipsoid((2.5, 20.0, 16.0), pivot - [37.0, 6.0, 0], 0.2, 0.2, 8, 16),
                                      superellipsoid((40.0, 3.0, 18.0), pivot - [0, 26.0, 0], 0.2, 0.2, 8, 16)),
                                METAL), "bracket"),
        "neck_post": (_Shape(merge(disc(30.0, 8.0, pivot - [0, 33.0, 0], (0, 1, 0), 40),
                                   cylinder(17.0, pivot - [0, 160.0, 0], pivot - [0, 37.0, 0])), METAL), "stand"),
    }
    moving = {"upper_lip": (_Shape(superellipsoid(LIP_RADII, UPPER_LIP_CENTRE, 0.5, 0.5, 12, 48), RUBBER), "lips"),
              "lower_lip": (_Shape(superellipsoid(LIP_RADII, LOWER_LIP_CENTRE, 0.5, 0.5, 12, 48), RUBBER), "lips"),
              "jaw_horns": (_Shape(merge(*[merge(disc(9.0, 3.0, hinge + [x * 81.0, 0, 0], (1, 0, 0)),
                                                 cylinder(2.2, hinge + [x * 82.5, 0, 0],
                                                          hinge + [x * 82.5, -16.0, 12.0], 10))
                                           for x in (-1.0, 1.0)]), METAL), "linkage")}
    for side in SIDES:
        brow, horn = BROW_CENTRES[side], BROW_HORNS[side]
        moving[f"upper_lid_{side}"] = (_Shape(shell_patch(15.3, 16.7, (0.0, 200.0), 84.0, EYE_CENTRES[side]),
                                              LID_PLASTIC), "upper_lids")
        moving[f"brow_{side}"] = (_Shape(superellipsoid((BROW_HALF_LENGTH, 3.6, 4.0), brow, 0.35, 0.5), DARK_PLASTIC),
                                  "brows")
        moving[f"brow_rod_{side}"] = (_Shape(cylinder(1.5, brow + [0, 3.0, -2.0], brow + [0, 34.0, -2.0], 12), METAL),
                                      "linkage")
        arm = superellipsoid((9.0, 1.8, 1.0), horn + [-5.0 * _SIGN[side], 0.0, 1.2], 0.4, 0.4, 8, 16)
        moving[f"brow_horn_{side}"] = (_Shape(merge(disc(5.0, 2.0, horn, (0, 0, 1)), arm), METAL), "linkage")
        horn = CHEEK_HORNS[side]
        moving[f"cheek_horn_{side}"] = (_Shape(merge(disc(5.5, 2.0, horn, (0, 0, 1)),
                                                     cylinder(1.6, horn + [0, 0, 1.4], _cheek_arm_tip(side), 10)),
                                               METAL), "linkage")
        knob = superellipsoid((4.2,) * 3, LIP_CORNERS[side], 1.0, 1.0, 12, 24)
        moving[f"lip_corner_{side}"] = (_Shape(knob, METAL), "linkage")
    for shape, _carrier in (*static.values(), *moving.values()):
        for array in shape.mesh:
            array.setflags(write=False)
    return _Geometry(static, moving)


# The materials of the parts merged per frame.
_MOVING_MATERIALS = {"upper_lids": LID_PLASTIC, "brows": DARK_PLASTIC, "linkage": METAL, "lips": RUBBER}


def pose_parts(pose: FacePose) -> list[Part]:
    """The rig's parts for one `FacePose`: 13 static meshes posed by their carriers' transforms and 4
    meshes re-shaped per frame in the head's frame (upper_lids, brows, linkage, lips)."""
    geometry = _geometry()
    head = about(NECK_PIVOT, head_rotation(pose.head_deg["rx"], pose.head_deg["ry"], pose.head_deg["rz"]))
    jaw = about(JAW_HINGE, rotation("x", pose.jaw_deg))
    carriers = {"head": head, "jaw": head @ jaw, "stand": np.eye(4),
                "bracket": about(NECK_PIVOT, head_rotation(0.0, pose.head_deg["ry"], pose.head_deg["rz"]))}
    parts = [_part(name, shape, carriers[carrier], static=True) for name, (shape, carrier) in geometry.static.items()]

    local: dict[str, np.ndarray] = {"jaw_horns": jaw}
    corners = {}
    for side in SIDES:
        sign = _SIGN[side]
        inner, outer = pose.brow_raise_mm[side]
        tilt = math.degrees(math.atan2(outer - inner, 2.0 * BROW_HALF_LENGTH)) * sign
        brow = translation([0.0, (inner + outer) / 2.0, 0.0]) @ about(BROW_CENTRES[side], rotation("z", tilt))
        local[f"brow_{side}"] = local[f"brow_rod_{side}"] = brow
        local[f"brow_horn_{side}"] = about(BROW_HORNS[side], rotation("z", -sign * pose.brow_horn_deg[side]))
        local[f"upper_lid_{side}"] = about(EYE_CENTRES[side], rotation("x", -pose.lid_edge_deg[side]))
        out, up = pose.corner_mm[side]
        corners[side] = np.array([sign * out, up, 0.0])
        local[f"lip_corner_{side}"] = translation(corners[side])
        local[f"cheek_horn_{side}"] = about(CHEEK_HORNS[side], rotation("z", -sign * pose.corner_horn_deg[side]))

    pieces: dict[str, list[Mesh]] = {name: [] for name in _MOVING_MATERIALS}
    for name, (shape, group) in geometry.moving.items():
        if name == "upper_lip":
            mesh = _bent_lip(shape.mesh, UPPER_LIP_CENTRE, [0.0, pose.upper_lip_mm, 0.0], corners)
        elif name == "lower_lip":   # rides on the jaw; its ends are bent in the jaw's frame
            mesh = _moved(_bent_lip(shape.mesh, LOWER_LIP_CENTRE, [0.0, -pose.lower_lip_mm, 0.0], corners), jaw)
        else:
            mesh = _moved(shape.mesh, local[name])
        pieces[group].append(mesh)
    for side in SIDES:   # the link from each cheek horn's arm to its lip corner
        tip = (local[f"cheek_horn_{side}"] @ np.append(_cheek_arm_tip(side), 1.0))[:3]
        pieces["linkage"].append(cylinder(1.1, tip, LIP_CORNERS[side] + corners[side], 8))
    for group, material in _MOVING_MATERIALS.items():
        parts.append(_part(group, _Shape(merge(*pieces[group]), material), head, static=False))
    return parts


def _moved(mesh: Mesh, matrix: np.ndarray) -> Mesh:
    v, f = mesh
    return (np.asarray(v, np.float64) @ matrix[:3, :3].T + matrix[:3, 3]).astype(np.float32), f


def _bent_lip(mesh: Mesh, centre: np.ndarray, offset, corners: dict[str, np.ndarray]) -> Mesh:
    """A lip moved by `offset`, its ends drawn towards the displaced lip corners (smile, frown)."""
    v, f = mesh
    x = v[:, 0] - centre[0]
    weight = _smoothstep((np.abs(x) - 6.0) / (LIP_RADII[0] - 6.0))[:, None]
    shift = np.where((x >= 0)[:, None], corners["left"], corners["right"])
    return (v + np.asarray(offset, np.float32) + weight * shift).astype(np.float32), f


def _part(name: str, shape: _Shape, transform: np.ndarray, *, static: bool) -> Part:
    color, metallic, roughness = shape.material
    return Part(name=name, vertices=shape.mesh[0], faces=shape.mesh[1], color=color,
                transform=np.asarray(transform, np.float32), metallic=metallic, roughness=roughness,
                static=static, smooth=shape.smooth)


def world_vertices(part: Part) -> np.ndarray:
    """A part's vertices placed by its transform (model space, mm)."""
    t = np.asarray(part.transform, np.float64)
    return (np.asarray(part.vertices, np.float64) @ t[:3, :3].T + t[:3, 3]).astype(np.float32)


__all__ = ["simulate_servos", "servo_from_dict", "Servo", "SimRobot", "FacePose", "face_pose", "pose_parts",
           "world_vertices", "EXPRESSIONS", "NECK_PIVOT", "EYE_CENTRES", "JAW_HINGE", "JAW_OPEN_DEG",
           "LID_EDGE_DEG", "NEUTRAL"]
