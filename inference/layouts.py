"""The named channel layouts a motion clip can have, and the face regions each one declares.

A layout fixes what the columns of a clip's `values` mean. Fixed layouts (`arkit52`, `openface_au`,
`landmarks:ibug68`, `landmarks:mediapipe468`) have their channel names here; open layouts (`pca`,
`motors:<robot>`) take their channel names from the clip itself. Regions follow DESIGN.md: upper (brows,
eyelids), middle (cheeks, nose), lower (jaw, lips); the head is the clip's separate `head_pose`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

REGIONS = ("upper", "middle", "lower")
HEAD_POSE_CHANNELS = ("rx", "ry", "rz", "tx", "ty", "tz")  # degrees: pitch/nod, yaw/turn, roll/tilt; mm

ARKIT52 = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight", "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose",
    "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)

# OpenFace 2 action units with an intensity output (AUxx_r, 0..5).
OPENFACE_AUS = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14", "AU15",
                "AU17", "AU20", "AU23", "AU25", "AU26", "AU45")

# iBUG 68-point scheme, 0-based point indices. "Right" is the subject's right.
IBUG68_JAW = tuple(range(0, 17))
IBUG68_RIGHT_BROW = tuple(range(17, 22))
IBUG68_LEFT_BROW = tuple(range(22, 27))
IBUG68_NOSE = tuple(range(27, 36))
IBUG68_RIGHT_EYE = tuple(range(36, 42))
IBUG68_LEFT_EYE = tuple(range(42, 48))
IBUG68_OUTER_LIP = tuple(range(48, 60))
IBUG68_INNER_LIP = tuple(range(60, 68))
IBUG68_BROWS = IBUG68_RIGHT_BROW + IBUG68_LEFT_BROW
IBUG68_EYES = IBUG68_RIGHT_EYE + IBUG68_LEFT_EYE
IBUG68_LIPS = IBUG68_OUTER_LIP + IBUG68_INNER_LIP
IBUG68_LIPS_AND_JAW = IBUG68_JAW + IBUG68_OUTER_LIP + IBUG68_INNER_LIP
IBUG68_UPPER_FACE = IBUG68_BROWS + IBUG68_EYES
IBUG68_GROUPS = {
    "jaw": IBUG68_JAW, "right_brow": IBUG68_RIGHT_BROW, "left_brow": IBUG68_LEFT_BROW, "nose": IBUG68_NOSE,
    "right_eye": IBUG68_RIGHT_EYE, "left_eye": IBUG68_LEFT_EYE, "outer_lip": IBUG68_OUTER_LIP,
    "inner_lip": IBUG68_INNER_LIP, "lips_and_jaw": IBUG68_LIPS_AND_JAW, "upper_face": IBUG68_UPPER_FACE,
}

# MediaPipe Face Mesh (468 points) index groups, from mediapipe's face_mesh_connections.
MP468_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409, 78,
              95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415)
MP468_CHIN = (152, 148, 176, 149, 150, 136, 172, 58, 132, 377, 400, 378, 379, 365, 397, 288, 361)
MP468_LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
MP468_RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
MP468_LEFT_BROW = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
MP468_RIGHT_BROW = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)


@dataclass(frozen=True)
class Layout:
    """What a clip's columns mean: channel names (None for open layouts), regions and value range."""

    name: str
    channels: tuple[str, ...] | None
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)  # region → channel indices
    value_range: tuple[float, float] | None = None
    units: str = ""
    points: int = 0  # landmark layouts: number of points (channels are x, y, z per point)


def _point_channels(indices) -> tuple[int, ...]:
    return tuple(3 * i + axis for i in sorted(set(indices)) for axis in range(3))


def _landmark_layout(name: str, n_points: int, upper, middle, lower) -> Layout:
    channels = tuple(f"p{i}_{axis}" for i in range(n_points) for axis in "xyz")
    if middle is None:
        middle = set(range(n_points)) - set(upper) - set(lower)
    return Layout(name, channels, {"upper": _point_channels(upper), "middle": _point_channels(middle),
                                   "lower": _point_channels(lower)}, units="mm", points=n_points)


def _named_regions(channels, rules: dict[str, tuple[str, ...]]) -> dict[str, tuple[int, ...]]:
    regions = {}
    for region, prefixes in rules.items():
        regions[region] = tuple(i for i, c in enumerate(channels) if c.startswith(prefixes))
    return regions


_FIXED: dict[str, Layout] = {
    "arkit52": Layout(
        "arkit52", ARKIT52,
        _named_regions(ARKIT52, {"upper": ("brow", "eye"), "middle": ("cheek", "nose"),
                                 "lower": ("jaw", "mouth", "tongue")}),
        value_range=(0.0, 1.0), units="blendshape weight 0..1",
    ),
    "openface_au": Layout(
        "openface_au", OPENFACE_AUS,
        {"upper": tuple(OPENFACE_AUS.index(a) for a in ("AU01", "AU02", "AU04", "AU05", "AU07", "AU45")),
         "middle": tuple(OPENFACE_AUS.index(a) for a in ("AU06", "AU09")),
         "lower": tuple(OPENFACE_AUS.index(a) for a in ("AU10", "AU12", "AU14", "AU15", "AU17", "AU20",
                                                         "AU23", "AU25", "AU26"))},
        value_range=(0.0, 5.0), units="AU intensity 0..5",
    ),
    "landmarks:ibug68": _landmark_layout(
        "landmarks:ibug68", 68, IBUG68_BROWS + IBUG68_RIGHT_EYE + IBUG68_LEFT_EYE, IBUG68_NOSE,
        IBUG68_JAW + IBUG68_OUTER_LIP + IBUG68_INNER_LIP),
    "landmarks:mediapipe468": _landmark_layout(
        "landmarks:mediapipe468", 468, MP468_LEFT_BROW + MP468_RIGHT_BROW + MP468_LEFT_EYE + MP468_RIGHT_EYE,
        None, MP468_LIPS + MP468_CHIN),
}

_MOTORS = re.compile(r"^motors:[a-z0-9][a-z0-9_-]{0,40}$")


def layout(name: str, channels: tuple[str, ...] | list[str] | None = None) -> Layout:
    """The layout called `name`. Open layouts (`pca`, `motors:<robot>`) need the clip's channel names;
    a motor layout's regions come from channel name prefixes (`upper.`, `middle.`, `lower.`, `head.`)."""
    if name in _FIXED:
        return _FIXED[name]
    if name == "pca" or _MOTORS.match(name):
        if not channels:
            raise ValueError(f"layout {name!r} needs the clip's channel names")
        channels = tuple(str(c) for c in channels)
        regions = {}
        if name != "pca":
            regions = {r: idx for r, idx in _named_regions(channels, {r: (r + ".",) for r in REGIONS}).items() if idx}
        return Layout(name, channels, regions, value_range=(0.0, 1.0) if name != "pca" else None,
                      units="normalised motor command 0..1" if name != "pca" else "PCA component")
    raise ValueError(
        f"unknown motion layout {name!r}; known layouts: {', '.join(sorted(_FIXED))}, pca, motors:<robot>"
    )


def known_layouts() -> list[str]:
    return sorted(_FIXED) + ["pca", "motors:<robot>"]
