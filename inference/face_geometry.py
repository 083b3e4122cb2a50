"""A small linear face model in the iBUG 68-point scheme: ARKit blendshape weights → 3-D landmarks.

`arkit_to_ibug68(values)` turns blendshape weights `[T, 52]` (the `arkit52` layout) into landmarks
`[T, 68, 3]` as the neutral face plus a weighted sum of displacement fields:

    points = NEUTRAL_IBUG68 + Σ_k clip(w_k, 0, 1) · Δ_k

It is what `retarget(clip, "landmarks:ibug68")` uses, what the synthetic corpus and the simulated robot
face (inference/synthetic.py) are measured with, and what landmark metrics see for blendshape clips. It is
a documented stand-in, not a fitted model: the neutral face is generated from a handful of adult
proportions (`FaceProportions`, no downloaded data), and each displacement field is written down from the
action the blendshape names (Apple's ARKit blendshape descriptions, FACS).

Coordinates are millimetres in the head's frame: x to the viewer's right (the subject's left), y up,
z towards the camera; the origin lies between the eyes at eye level. iBUG "right" is the subject's right
(points 36–41 are the right eye, at negative x); ARKit "Left" is the subject's left (positive x).

Blendshapes whose action leaves no mark on these 68 points (the eyeLook* gaze shapes — the scheme has no
pupils — and tongueOut) have zero displacement. Jaw opening is a rotation of the mandible about the
jaw-hinge axis plus the condyle's forward glide, taken at full opening; because the model is linear,
intermediate weights move points along the chord of that arc, which is within a millimetre of the arc for
the angles used.

Head pose is kept apart from the face's shape, as in a motion clip; `apply_head_pose` places landmarks
in the camera's frame when a consumer needs to see the head move (the simulated robot's pan and tilt).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layouts import ARKIT52

N_POINTS = 68

# Index of each point's mirror image across the face's mid-sagittal plane (x → −x).
MIRROR_IBUG68 = np.array(
    [16 - i for i in range(17)]                      # jaw contour
    + [26, 25, 24, 23, 22, 21, 20, 19, 18, 17]        # brows, outer right … outer left
    + [27, 28, 29, 30]                                # nose bridge
    + [35, 34, 33, 32, 31]                            # nostrils
    + [45, 44, 43, 42, 47, 46]                        # right eye ↔ left eye
    + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lip
    + [64, 63, 62, 61, 60, 67, 66, 65],               # inner lip
    dtype=np.int64,
)

# Point groups used to write the displacement fields ("L" = subject's left, positive x).
RIGHT_BROW = (17, 18, 19, 20, 21)   # outer → inner
LEFT_BROW = (22, 23, 24, 25, 26)    # inner → outer
RIGHT_EYE = (36, 37, 38, 39, 40, 41)
LEFT_EYE = (42, 43, 44, 45, 46, 47)
OUTER_LIP = tuple(range(48, 60))
INNER_LIP = tuple(range(60, 68))
UPPER_LIP = (49, 50, 51, 52, 53, 61, 62, 63)
LOWER_LIP = (55, 56, 57, 58, 59, 65, 66, 67)
LIP_CORNERS = (48, 54, 60, 64)
# Upper/lower lip points that meet when the mouth closes (outer and inner contour).
LIP_PAIRS = ((49, 59), (50, 58), (51, 57), (52, 56), (53, 55), (61, 67), (62, 66), (63, 65))


@dataclass(frozen=True)
class FaceProportions:
    """The few numbers the neutral face is generated from (millimetres, a plausible adult)."""

    jaw_width: float = 140.0          # between jaw contour points 0 and 16, at ear level
    face_height: float = 118.0        # eye line to chin
    face_depth: float = 85.0          # how far the jaw contour's ends lie behind the chin
    eye_spacing: float = 62.0         # between the eye centres
    eye_width: float = 28.0           # corner to corner of one eye
    eye_height: float = 9.0           # lid to lid, open eye
    brow_height: float = 17.0         # brow arch above the eye line
    nose_length: float = 38.0         # nasion to nose tip, vertically
    nose_projection: float = 33.0     # how far the tip stands in front of the eyes
    nose_width: float = 30.0          # between the outer nostril points
    mouth_width: float = 50.0         # corner to corner
    mouth_height: float = 70.0        # mouth line below the eye line
    upper_lip_height: float = 8.0
    lower_lip_height: float = 11.0
    lip_projection: float = 16.0      # lips in front of the eyes
    lip_gap: float = 0.5              # between the inner lips at rest
    hinge_drop: float = 10.0          # jaw-hinge axis below the eye line
    hinge_depth: float = 90.0         # jaw-hinge axis behind the eyes
    jaw_open_degrees: float = 20.0    # mandible rotation at jawOpen = 1
    condyle_glide: float = 28.0       # forward glide of the condyle at jawOpen = 1


def neutral_face(p: FaceProportions = FaceProportions()) -> np.ndarray:
    """The neutral face `[68, 3]` float64 for proportions `p`, exactly left-right symmetric."""
    pts = np.zeros((N_POINTS, 3))
    half_jaw = p.jaw_width / 2

    # Jaw contour 0 (subject's right, at ear level) → 8 (chin) → 16; squarer than an ellipse.
    for i in range(9):
        phi = np.pi * i / 16
        c, s = np.cos(phi), np.sin(phi)
        x = -half_jaw * c ** 0.7 if i < 8 else 0.0
        y = -0.04 * p.face_height - 0.96 * p.face_height * s ** 1.3
        z = 5.0 - p.face_depth * c ** 1.6 if i < 8 else 5.0
        pts[i] = (x, y, z)

    # Brows, outer → inner on the right; an arch peaking a little outside the eye centre.
    brow_x = np.array([1.62, 1.35, 1.06, 0.77, 0.46]) * p.eye_spacing / 2
    brow_y = p.brow_height + np.array([-4.5, 0.5, 2.5, 2.0, 0.0])
    brow_z = np.array([-20.0, -7.0, 2.0, 7.0, 9.0])
    for k, i in enumerate(RIGHT_BROW):
        pts[i] = (-brow_x[k], brow_y[k], brow_z[k])

    # Nose bridge 27–30 from the nasion down to the tip, nostrils 31–35.
    for k, i in enumerate((27, 28, 29, 30)):
        f = k / 3
        pts[i] = (0.0, 2.0 - f * (p.nose_length + 2.0), 11.0 + f * (p.nose_projection - 11.0))
    base_y = -(p.nose_length + 9.0)
    half_nose = p.nose_width / 2
    for i, fx, dy, z in ((31, -1.0, 2.0, 0.55), (32, -0.5, 0.8, 0.67), (33, 0.0, 0.0, 0.72)):
        pts[i] = (fx * half_nose, base_y + dy, z * p.nose_projection)

    # Right eye 36 outer corner, 37–38 upper lid, 39 inner corner, 40–41 lower lid. The lower lid
    # points sit under the upper ones so that a closed lid lies exactly on the lower one.
    cx, half_w, half_h = -p.eye_spacing / 2, p.eye_width / 2, p.eye_height / 2
    lid_x = 0.36 * half_w
    pts[36] = (cx - half_w, 0.0, -8.0)
    pts[37] = (cx - lid_x, half_h, 0.0)
    pts[38] = (cx + lid_x, half_h, 0.5)
    pts[39] = (cx + half_w, 0.0, -2.0)
    pts[40] = (cx + lid_x, -half_h, 0.5)
    pts[41] = (cx - lid_x, -half_h, 0.0)

    # Lips: outer contour 48 (right corner) → 54 (left corner) over the top, back along the bottom;
    # inner contour 60 → 64 → back. Mouth corners at ±mouth_width / 2.
    mx, my, mz = p.mouth_width / 2, -p.mouth_height, p.lip_projection
    uh, lh, gap = p.upper_lip_height, p.lower_lip_height, p.lip_gap
    pts[48] = (-mx, my, mz - 11.0)
    pts[49] = (-0.62 * mx, my + 0.72 * uh, mz - 4.0)
    pts[50] = (-0.26 * mx, my + 1.05 * uh, mz - 0.5)
    pts[51] = (0.0, my + 0.95 * uh, mz)              # the dip of the Cupid's bow
    pts[59] = (-0.62 * mx, my - 0.68 * lh, mz - 4.0)
    pts[58] = (-0.28 * mx, my - 0.95 * lh, mz - 1.0)
    pts[57] = (0.0, my - lh, mz - 0.5)
    pts[60] = (-0.8 * mx, my, mz - 9.0)
    pts[61] = (-0.33 * mx, my + gap / 2, mz - 3.0)
    pts[62] = (0.0, my + gap / 2, mz - 2.5)
    pts[67] = (-0.33 * mx, my - gap / 2, mz - 3.0)
    pts[66] = (0.0, my - gap / 2, mz - 2.5)

    # The left half is the mirror image of the right; points on the midline keep x = 0.
    for i in range(N_POINTS):
        j = MIRROR_IBUG68[i]
        if pts[i].any() and not pts[j].any():
            pts[j] = pts[i] * (-1.0, 1.0, 1.0)
    return pts


def _mirror(delta: np.ndarray) -> np.ndarray:
    """The displacement field of the other side: points swapped with their mirror images, x negated."""
    return delta[MIRROR_IBUG68] * np.array([-1.0, 1.0, 1.0])


def _jaw_weights() -> np.ndarray:
    """How much each point moves with the mandible (1 = rigidly attached, 0 = not at all)."""
    w = np.zeros(N_POINTS)
    w[[0, 16]] = 0.0
    w[[1, 15]] = 0.2
    w[[2, 14]] = 0.6
    w[3:14] = 1.0
    w[list(LOWER_LIP)] = 0.92
    w[list(LIP_CORNERS)] = 0.45
    w[list(UPPER_LIP)] = 0.06
    return w


def _jaw_open_delta(neutral: np.ndarray, p: FaceProportions) -> np.ndarray:
    """Rotation about the hinge axis (parallel to x) plus the condyle's glide, weighted per point."""
    theta = np.radians(p.jaw_open_degrees)
    hinge = np.array([0.0, -p.hinge_drop, -p.hinge_depth])
    rel = neutral - hinge
    c, s = np.cos(theta), np.sin(theta)
    # Opening turns the chin down and back (a rotation that takes +y towards −z, seen from the side)
    y = c * rel[:, 1] - s * rel[:, 2]
    z = s * rel[:, 1] + c * rel[:, 2]
    moved = np.stack([rel[:, 0], y, z], axis=1) + hinge + np.array([0.0, -3.0, p.condyle_glide])
    return (moved - neutral) * _jaw_weights()[:, None]


def _shift(points, dx=0.0, dy=0.0, dz=0.0, weights=None) -> np.ndarray:
    """A field moving `points` by (dx, dy, dz), each scaled by its weight."""
    delta = np.zeros((N_POINTS, 3))
    weights = np.ones(len(points)) if weights is None else np.asarray(weights, float)
    for i, w in zip(points, weights):
        delta[i] += w * np.array([dx, dy, dz])
    return delta


def _towards_midline(neutral: np.ndarray, points, amount: float, weights=None) -> np.ndarray:
    """A field moving points towards x = 0 by `amount` mm (negative: away from the midline)."""
    delta = np.zeros((N_POINTS, 3))
    weights = np.ones(len(points)) if weights is None else np.asarray(weights, float)
    for i, w in zip(points, weights):
        delta[i, 0] = -np.sign(neutral[i, 0]) * amount * w
    return delta


def blendshape_basis(p: FaceProportions = FaceProportions()) -> tuple[np.ndarray, np.ndarray]:
    """(neutral [68, 3], displacement fields [52, 68, 3]) in the order of `layouts.ARKIT52`, float64.

    Left-side fields are written out; right-side ones are their mirror images, so the model stays
    symmetric. Magnitudes are for weight 1 (the extreme of each action).
    """
    n = neutral_face(p)
    fields: dict[str, np.ndarray] = {}
    jaw_w = _jaw_weights()

    jaw_open = _jaw_open_delta(n, p)
    fields["jawOpen"] = jaw_open
    fields["jawForward"] = _shift(range(N_POINTS), dz=7.0, weights=jaw_w)
    fields["jawLeft"] = _shift(range(N_POINTS), dx=8.0, weights=jaw_w)
    fields["jawRight"] = _mirror(fields["jawLeft"])

    # mouthClose: the lips meet although the jaw is open (the lower lip rises 60 % of the way, the upper
    # lip comes down the rest), so jawOpen = mouthClose = 1 gives closed lips.
    close = np.zeros((N_POINTS, 3))
    for upper, lower in LIP_PAIRS:
        gap = jaw_open[lower] - jaw_open[upper]
        close[lower] -= 0.6 * gap
        close[upper] += 0.4 * gap
    for corner in LIP_CORNERS:
        close[corner] -= 0.5 * jaw_open[corner]
    fields["mouthClose"] = close

    lips = OUTER_LIP + INNER_LIP
    # Funnel: lips pushed forward and flared open, corners drawn in; pucker: forward, narrow, closed.
    funnel = _shift(lips, dz=8.0) + _towards_midline(n, LIP_CORNERS, 7.0)
    funnel += _shift((49, 50, 51, 52, 53, 61, 62, 63), dy=3.0) + _shift((55, 56, 57, 58, 59, 65, 66, 67), dy=-4.0)
    fields["mouthFunnel"] = funnel
    pucker = _shift(lips, dz=10.0) + _towards_midline(n, LIP_CORNERS, 11.0)
    pucker += _towards_midline(n, (49, 53, 55, 59, 61, 63, 65, 67), 5.0)
    pucker += _shift((50, 51, 52), dz=2.0) + _shift((56, 57, 58), dz=2.0)
    fields["mouthPucker"] = pucker

    # Whole-mouth shifts towards the subject's left (+x).
    fields["mouthLeft"] = _shift(lips, dx=7.0)
    fields["mouthRight"] = _mirror(fields["mouthLeft"])

    # Left-side mouth corner actions: 54 (outer) and 64 (inner corner) fully, their neighbours partly.
    left_corner, left_weights = (54, 64, 53, 55, 63, 65), (1.0, 1.0, 0.45, 0.45, 0.4, 0.4)
    fields["mouthSmileLeft"] = _shift(left_corner, dx=6.0, dy=7.0, dz=-3.0, weights=left_weights) + \
        _shift((13, 14), dy=2.0, dx=1.0)
    fields["mouthFrownLeft"] = _shift(left_corner, dx=1.5, dy=-6.0, weights=left_weights)
    fields["mouthDimpleLeft"] = _shift(left_corner, dx=3.0, dz=-3.0, weights=left_weights)
    fields["mouthStretchLeft"] = _shift(left_corner, dx=7.0, dy=-2.0, dz=-2.0, weights=left_weights)
    # Press: the left half of the lips squeezed together and thinned (outer contour towards the inner).
    fields["mouthPressLeft"] = _shift((53, 52, 63, 62), dy=-2.5, weights=(1.0, 0.7, 0.5, 0.25)) + \
        _shift((55, 56, 65, 66), dy=2.5, weights=(1.0, 0.7, 0.5, 0.25))
    fields["mouthLowerDownLeft"] = _shift((55, 56, 57, 65, 66), dy=-6.0, weights=(0.8, 1.0, 0.5, 1.0, 0.5))
    fields["mouthUpperUpLeft"] = _shift((52, 53, 51, 63, 62), dy=5.0, weights=(1.0, 0.8, 0.5, 1.0, 0.5))

    # Lip rolls (lip turned in over the teeth), shrugs (lip pushed up by the chin / raised).
    fields["mouthRollLower"] = _shift((55, 56, 57, 58, 59), dy=3.5, dz=-4.0) + _shift((65, 66, 67), dz=-3.0)
    fields["mouthRollUpper"] = _shift((49, 50, 51, 52, 53), dy=-3.0, dz=-4.0) + _shift((61, 62, 63), dz=-3.0)
    fields["mouthShrugLower"] = _shift(LOWER_LIP, dy=4.0, dz=2.0) + _shift(range(6, 11), dy=3.0, dz=1.0)
    fields["mouthShrugUpper"] = _shift(UPPER_LIP, dy=3.0, dz=1.0)

    # Brows: inner raise (both sides), outer raise and lowering per side.
    fields["browInnerUp"] = _shift((21, 22, 20, 23, 19, 24), dy=8.0, weights=(1, 1, 0.6, 0.6, 0.25, 0.25))
    fields["browOuterUpLeft"] = _shift((26, 25, 24), dy=7.0, weights=(1.0, 0.75, 0.4))
    fields["browDownLeft"] = _shift(LEFT_BROW, dy=-5.0, weights=(1.0, 0.9, 0.8, 0.7, 0.6)) + \
        _towards_midline(n, LEFT_BROW, 2.5, (1.0, 0.8, 0.5, 0.3, 0.1))

    # Eyelids of the left eye: 43, 44 upper lid; 46, 47 lower lid (below 44 and 43 respectively).
    blink = np.zeros((N_POINTS, 3))
    for upper, lower in ((43, 47), (44, 46)):
        meet = 0.85 * n[lower] + 0.15 * n[upper]   # the lids meet a little above the lower lid
        blink[upper] = meet - n[upper]
        blink[lower] = meet - n[lower]
    fields["eyeBlinkLeft"] = blink
    fields["eyeWideLeft"] = _shift((43, 44), dy=3.0) + _shift((46, 47), dy=-0.5)
    fields["eyeSquintLeft"] = _shift((46, 47), dy=2.0) + _shift((43, 44), dy=-1.0)
    fields["cheekSquintLeft"] = _shift((46, 47, 45), dy=1.5, weights=(1.0, 1.0, 0.6)) + \
        _shift((13, 14, 15), dy=2.5, weights=(0.6, 1.0, 0.6))
    fields["noseSneerLeft"] = _shift((34, 35), dy=3.0, dx=1.0) + _shift((22, 23), dy=-2.0) + _shift((53,), dy=1.0)
    fields["cheekPuff"] = _towards_midline(n, range(2, 15), -5.0, np.sin(np.linspace(0.35, np.pi - 0.35, 13))) + \
        _shift(LIP_CORNERS, dz=1.5) + _towards_midline(n, LIP_CORNERS, -1.0)

    for name in list(fields):
        if name.endswith("Left") and not name.endswith(("mouthLeft", "jawLeft")):
            right = name[: -len("Left")] + "Right"
            fields.setdefault(right, _mirror(fields[name]))

    basis = np.zeros((len(ARKIT52), N_POINTS, 3))
    for k, name in enumerate(ARKIT52):
        if name in fields:
            basis[k] = fields[name]
    return n, basis


@dataclass(frozen=True)
class FaceModel:
    """A neutral face and its blendshape displacement fields ([52, 68, 3], `ARKIT52` order), in mm."""

    neutral: np.ndarray
    basis: np.ndarray

    @classmethod
    def from_proportions(cls, p: FaceProportions = FaceProportions()) -> "FaceModel":
        neutral, basis = blendshape_basis(p)
        return cls(neutral.astype(np.float32), basis.astype(np.float32))

    def landmarks(self, values) -> np.ndarray:
        """Landmarks `[T, 68, 3]` float32 for blendshape weights `[T, 52]` (or `[52]` for one frame)."""
        weights = np.asarray(values, dtype=np.float32)
        single = weights.ndim == 1
        weights = np.atleast_2d(weights)
        if weights.ndim != 2 or weights.shape[1] != len(ARKIT52):
            raise ValueError(f"blendshape weights must be [frames, {len(ARKIT52)}] in the arkit52 order, "
                             f"got shape {np.shape(values)}")
        if not np.all(np.isfinite(weights)):
            raise ValueError("blendshape weights hold NaN or infinite values; fill or drop those frames first")
        weights = np.clip(weights, 0.0, 1.0)
        flat = self.basis.reshape(len(ARKIT52), -1)
        points = (self.neutral.reshape(1, -1) + weights @ flat).reshape(-1, N_POINTS, 3).astype(np.float32)
        return points[0] if single else points


DEFAULT_FACE = FaceModel.from_proportions()
NEUTRAL_IBUG68: np.ndarray = DEFAULT_FACE.neutral
NEUTRAL_IBUG68.setflags(write=False)
DEFAULT_FACE.basis.setflags(write=False)


def arkit_to_ibug68(values, *, face: FaceModel = DEFAULT_FACE) -> np.ndarray:
    """iBUG 68 landmarks `[T, 68, 3]` (float32, mm) for ARKit weights `[T, 52]`, clipped to 0..1 first."""
    return face.landmarks(values)


def head_rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rotation matrix for a head pose in degrees: R = Rz(rz) · Ry(ry) · Rx(rx), right-handed about the
    head frame's axes (x right, y up, z to the camera). Positive rx tips the nose down (a nod), positive
    ry turns the nose to the viewer's right (the subject's left), positive rz tilts the top of the head to
    the viewer's left."""
    a, b, c = np.radians([rx, ry, rz])
    rot_x = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rot_y = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rot_z = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x


# The head turns about the top of the neck (the atlanto-occipital joint), below and behind the eyes.
HEAD_PIVOT = np.array([0.0, -75.0, -95.0])


def apply_head_pose(points, head_pose) -> np.ndarray:
    """Landmarks `[T, N, 3]` moved by head pose `[T, 6]` (rx, ry, rz degrees; tx, ty, tz mm): rotated about
    `HEAD_PIVOT`, then translated. Returns float32."""
    pts = np.asarray(points, dtype=np.float64)
    pose = np.asarray(head_pose, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[2] != 3 or pose.shape != (pts.shape[0], 6):
        raise ValueError(f"need points [T, N, 3] and head pose [T, 6], got {pts.shape} and {pose.shape}")
    out = np.empty_like(pts)
    for t in range(pts.shape[0]):
        rot = head_rotation(*pose[t, :3])
        out[t] = (pts[t] - HEAD_PIVOT) @ rot.T + HEAD_PIVOT + pose[t, 3:]
    return out.astype(np.float32)


__all__ = ["FaceProportions", "FaceModel", "DEFAULT_FACE", "NEUTRAL_IBUG68", "MIRROR_IBUG68", "N_POINTS",
           "neutral_face", "blendshape_basis", "arkit_to_ibug68", "head_rotation", "apply_head_pose", "HEAD_PIVOT"]


# --- landmarks → blendshapes ---------------------------------------------------------------------------

# Points that expressions hardly move (ends of the jaw at the ears, nose bridge and base, eye corners):
# tracked faces are aligned on these before their expression is read.
STABLE_POINTS = (0, 16, 27, 28, 29, 30, 33, 36, 39, 42, 45)


def align_to(points: np.ndarray, target: np.ndarray, idx=STABLE_POINTS) -> np.ndarray:
    """`points` [T, 68, 3] moved by the similarity transform (rotation, uniform scale, translation) that
    best maps each frame's stable points onto `target`'s (Umeyama's least-squares method)."""
    points = np.asarray(points, np.float64)
    src = points[:, idx]
    dst = np.asarray(target, np.float64)[list(idx)]
    mu_s, mu_d = src.mean(axis=1, keepdims=True), dst.mean(axis=0, keepdims=True)
    s0, d0 = src - mu_s, dst - mu_d
    out = np.empty_like(points)
    for t in range(len(points)):
        u, sing, vt = np.linalg.svd(d0.T @ s0[t])
        sign = np.sign(np.linalg.det(u @ vt)) or 1.0
        fix = np.diag([1.0, 1.0, sign])
        rotation = u @ fix @ vt
        variance = (s0[t] ** 2).sum()
        scale = (sing * np.diag(fix)).sum() / variance if variance > 0 else 1.0
        out[t] = scale * (points[t] - mu_s[t]) @ rotation.T + mu_d
    return out


def ibug68_to_arkit(points, *, face: FaceModel = DEFAULT_FACE, reference=None) -> np.ndarray:
    """ARKit weights `[T, 52]` in 0..1 whose face model best reproduces tracked landmarks `[T, 68, 3]`.

    Each frame is aligned to the model's neutral face on the stable points (so head motion and the
    tracked person's size drop out); the expression is the frame's displacement from `reference` (the
    tracked face at rest; by default the clip's frame nearest the per-point median, which suits clips
    that spend most of their time near neutral); the weights are the bounded least-squares fit (0 ≤ w ≤ 1) of the
    model's displacement fields to it. Channels that move no landmark (gaze, tongue) stay 0.
    """
    from scipy.optimize import lsq_linear

    points = np.asarray(points, np.float64)
    if points.ndim != 3 or points.shape[1:] != (N_POINTS, 3):
        raise ValueError(f"landmarks must be [frames, 68, 3], got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("landmarks hold NaN or infinite values; interpolate or drop those frames first")
    neutral = face.neutral.astype(np.float64)
    aligned = align_to(points, neutral)
    if reference is None:  # the clip's most typical frame: the one nearest the per-point median
        median = np.median(aligned, axis=0)
        rest = aligned[np.argmin(((aligned - median) ** 2).sum(axis=(1, 2)))]
    else:
        rest = align_to(np.asarray(reference)[None], neutral)[0]
    displacement = (aligned - rest).reshape(len(points), -1)
    basis = face.basis.reshape(len(ARKIT52), -1).astype(np.float64)
    active = np.flatnonzero(np.abs(basis).sum(axis=1) > 0)
    design = basis[active].T  # [204, k]
    weights = np.zeros((len(points), len(ARKIT52)), np.float32)
    for t in range(len(points)):
        fit = lsq_linear(design, displacement[t], bounds=(0.0, 1.0), method="bvls")
        weights[t, active] = fit.x
    return weights
