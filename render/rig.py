"""What a rig is, for the renderer: something that takes a motion clip and, for each frame, gives the
posed parts (meshes) to draw. The avatar (render/avatar.py), a researcher's own mesh (render/custom_avatar.py)
and the simulated robot (render/robot.py) are rigs; render/offscreen.py draws any of them the same way.

A rig never needs torch: a clip in a layout the rig cannot take directly is converted before it arrives
(`inference.motion.retarget` for the avatar, the robot inverse model for a robot — see studies/tasks.py).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from inference.motion import MotionClip, MotionError, retarget


class RigError(ValueError):
    """A clip a rig cannot animate (wrong layout, out of range), or a rig that cannot be built; the message
    says what and how to fix it."""


@dataclass
class Part:
    """One mesh of a rig as posed in one frame.

    `vertices` are in the rig's model space (millimetres; x right, y up, z towards the camera), already
    deformed for this frame; `faces` index them and never change between frames of one rig, nor does
    `name`. `transform` (4×4) places the part (e.g. the head on its neck). `static` parts have the same
    vertices in every frame, so the renderer may upload them once. Colours are linear RGBA in 0..1, one for
    the part or one per vertex ([N, 4]).
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    color: tuple[float, float, float, float] | np.ndarray = (0.8, 0.8, 0.8, 1.0)
    transform: np.ndarray = field(default_factory=lambda: np.eye(4, dtype=np.float32))
    metallic: float = 0.0
    roughness: float = 0.6
    static: bool = False
    smooth: bool = True


class Rig(ABC):
    """A face that can be animated by a motion clip in the layout named by `consumes`."""

    name: str = "rig"
    consumes: str = "arkit52"

    @abstractmethod
    def prepare(self, clip: MotionClip) -> MotionClip:
        """The clip this rig will play: in its own layout and with what the rig physically does to it (a
        robot's range, speed limit and latency). Raises RigError when it cannot take the clip."""

    @abstractmethod
    def parts(self, clip: MotionClip, frame: int) -> list[Part]:
        """The posed parts of frame `frame` of a clip returned by `prepare`."""

    def look_at(self) -> tuple[np.ndarray, float]:
        """Where the camera should aim (model-space point, mm) and the height of the framed area (mm)."""
        return np.array([0.0, 0.0, 0.0], np.float32), 300.0


def arkit52_performance(clip: MotionClip, *, rig: str, who: str = "the avatar") -> MotionClip:
    """What a blendshape rig plays: the clip retargeted to arkit52 (RigError when no mapping exists), with
    weights in 0..1 and a head pose (zeros when the clip has none), after a check that the numbers are in
    the units the layout promises (weights far outside 0..1 or head rotations beyond ±90° are other units)."""
    if not isinstance(clip, MotionClip):
        raise RigError(f"{who} plays MotionClip objects, got {type(clip).__name__}")
    if clip.layout != "arkit52":
        try:
            clip = retarget(clip, "arkit52")
        except MotionError as exc:
            raise RigError(f"{who} plays arkit52 blendshape clips and cannot take a {clip.layout!r} clip: "
                           f"{exc}. Convert it to arkit52 (or openface_au) first") from None
    low, high = float(clip.values.min(initial=0.0)), float(clip.values.max(initial=0.0))
    if low < -0.5 or high > 1.5:
        raise RigError(f"arkit52 weights must lie in 0..1, this clip spans {low:.2f}..{high:.2f}; it is probably "
                       f"in other units (OpenFace AU intensities are 0..5: use the openface_au layout)")
    values = np.clip(clip.values, 0.0, 1.0).astype(np.float32)
    pose = clip.head_pose
    if pose is None:
        pose = np.zeros((clip.n_frames, 6), np.float32)
    elif np.abs(pose[:, :3]).max(initial=0.0) > 90.0 or np.abs(pose[:, 3:]).max(initial=0.0) > 300.0:
        raise RigError("head pose rotations must stay within ±90° and translations within ±300 mm; "
                       "check the units (degrees and millimetres)")
    return clip.with_values(values, head_pose=pose, rig=rig)
