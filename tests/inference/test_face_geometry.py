"""The linear iBUG-68 face model: a plausible, symmetric neutral face, and blendshapes that do what they say."""
from __future__ import annotations

import numpy as np
import pytest

from inference.face_geometry import (
    DEFAULT_FACE, MIRROR_IBUG68, NEUTRAL_IBUG68, FaceModel, FaceProportions, apply_head_pose, arkit_to_ibug68,
)
from inference.layouts import ARKIT52
from inference.metrics import polygon_area
from inference.motion import MotionClip, retarget

RIGHT_EYE, LEFT_EYE, INNER_LIP = list(range(36, 42)), list(range(42, 48)), list(range(60, 68))
CHIN, LEFT_CORNER, RIGHT_CORNER = 8, 54, 48


def weights(**named) -> np.ndarray:
    w = np.zeros((1, len(ARKIT52)), np.float32)
    for name, value in named.items():
        w[0, ARKIT52.index(name)] = value
    return w


def face(**named) -> np.ndarray:
    return arkit_to_ibug68(weights(**named))[0]


def area(points, idx) -> float:
    return polygon_area(points[idx, :2])


def mirrored(points: np.ndarray) -> np.ndarray:
    return points[MIRROR_IBUG68] * np.array([-1.0, 1.0, 1.0], np.float32)


def test_neutral_face_is_symmetric_with_adult_proportions():
    n = NEUTRAL_IBUG68
    assert n.shape == (68, 3) and n.dtype == np.float32
    np.testing.assert_allclose(mirrored(n), n, atol=1e-5)
    assert sorted(MIRROR_IBUG68.tolist()) == list(range(68))
    assert n[16, 0] - n[0, 0] == pytest.approx(140, abs=1)                        # jaw width
    eye_centres = n[RIGHT_EYE].mean(axis=0), n[LEFT_EYE].mean(axis=0)
    assert eye_centres[1][0] - eye_centres[0][0] == pytest.approx(62, abs=1)      # eye spacing
    assert n[LEFT_CORNER, 0] - n[RIGHT_CORNER, 0] == pytest.approx(50, abs=1)    # mouth width
    # Top to bottom: brows above eyes above nose tip above mouth above chin; nose tip is frontmost.
    assert n[19, 1] > n[37, 1] > n[30, 1] > n[51, 1] > n[57, 1] > n[CHIN, 1]
    assert n[30, 2] == n[:, 2].max()
    # The lips are closed but not crossed at rest.
    assert 0 < area(n, INNER_LIP) < 30


def test_neutral_is_zero_weights_and_output_is_float32_frames():
    points = arkit_to_ibug68(np.zeros((5, 52)))
    assert points.shape == (5, 68, 3) and points.dtype == np.float32
    np.testing.assert_array_equal(points[3], NEUTRAL_IBUG68)


def test_weights_are_clipped_to_0_1_and_the_map_is_deterministic():
    np.testing.assert_array_equal(face(jawOpen=3.0), face(jawOpen=1.0))
    np.testing.assert_array_equal(face(jawOpen=-2.0), NEUTRAL_IBUG68)
    w = np.random.default_rng(0).uniform(0, 1, (4, 52))
    np.testing.assert_array_equal(arkit_to_ibug68(w), arkit_to_ibug68(w.copy()))


def test_jaw_open_opens_the_lips_and_lowers_the_chin():
    openings = [face(jawOpen=w) for w in (0.0, 0.25, 0.5, 0.75, 1.0)]
    lip_areas = [area(p, INNER_LIP) for p in openings]
    chin_heights = [p[CHIN, 1] for p in openings]
    assert np.all(np.diff(lip_areas) > 0) and lip_areas[-1] > 400       # mm², a wide-open mouth
    assert np.all(np.diff(chin_heights) < 0)
    assert 20 < chin_heights[0] - chin_heights[-1] < 40                   # the chin drops 2–4 cm
    # The jaw rotates about the hinge: the points by the ears hardly move, the chin moves most.
    moved = np.linalg.norm(openings[-1] - openings[0], axis=1)
    assert moved[0] < 1 and moved[16] < 1 and moved[CHIN] > 20


def test_mouth_close_seals_lips_that_the_jaw_has_opened():
    opened, sealed = face(jawOpen=1.0), face(jawOpen=1.0, mouthClose=1.0)
    assert area(sealed, INNER_LIP) < 0.1 * area(opened, INNER_LIP)
    assert sealed[CHIN, 1] == pytest.approx(opened[CHIN, 1])


@pytest.mark.parametrize("side, eye, other", [("Left", LEFT_EYE, RIGHT_EYE), ("Right", RIGHT_EYE, LEFT_EYE)])
def test_blink_closes_one_eye(side, eye, other):
    open_area = area(NEUTRAL_IBUG68, eye)
    assert open_area > 100
    assert area(face(**{f"eyeBlink{side}": 0.5}), eye) == pytest.approx(open_area / 2, rel=0.05)
    closed = face(**{f"eyeBlink{side}": 1.0})
    assert area(closed, eye) < 0.02 * open_area
    assert area(closed, other) == pytest.approx(open_area)
    assert area(face(**{f"eyeWide{side}": 1.0}), eye) > open_area


def test_smile_raises_and_widens_the_mouth_corners():
    n, smile = NEUTRAL_IBUG68, face(mouthSmileLeft=1.0, mouthSmileRight=1.0)
    assert smile[LEFT_CORNER, 1] > n[LEFT_CORNER, 1] + 3 and smile[RIGHT_CORNER, 1] > n[RIGHT_CORNER, 1] + 3
    assert smile[LEFT_CORNER, 0] - smile[RIGHT_CORNER, 0] > n[LEFT_CORNER, 0] - n[RIGHT_CORNER, 0] + 6
    left_only = face(mouthSmileLeft=1.0)        # ARKit "Left" is the subject's left: positive x
    assert left_only[LEFT_CORNER, 1] > n[LEFT_CORNER, 1] and left_only[RIGHT_CORNER, 1] == n[RIGHT_CORNER, 1]
    frown = face(mouthFrownLeft=1.0, mouthFrownRight=1.0)
    assert frown[LEFT_CORNER, 1] < n[LEFT_CORNER, 1] - 3


def test_pucker_and_funnel_push_the_lips_forward_and_narrow_the_mouth():
    n = NEUTRAL_IBUG68
    for shape in ("mouthPucker", "mouthFunnel"):
        p = face(**{shape: 1.0})
        assert p[51, 2] > n[51, 2] + 5 and p[57, 2] > n[57, 2] + 5
        assert p[LEFT_CORNER, 0] - p[RIGHT_CORNER, 0] < n[LEFT_CORNER, 0] - n[RIGHT_CORNER, 0] - 10
    assert area(face(mouthFunnel=1.0), INNER_LIP) > 5 * area(n, INNER_LIP)


def test_brows_rise_and_fall():
    n = NEUTRAL_IBUG68
    assert face(browInnerUp=1.0)[[21, 22], 1].min() > n[[21, 22], 1].max() + 5
    assert face(browOuterUpLeft=1.0)[26, 1] > n[26, 1] + 5 and face(browOuterUpLeft=1.0)[17, 1] == n[17, 1]
    assert face(browDownRight=1.0)[[17, 18, 19, 20, 21], 1].max() < n[[17, 18, 19, 20, 21], 1].max()


def test_left_and_right_blendshapes_mirror_each_other():
    for left in [name for name in ARKIT52 if name.endswith("Left")]:
        right = left[: -len("Left")] + "Right"
        np.testing.assert_allclose(mirrored(face(**{left: 0.8})), face(**{right: 0.8}), atol=1e-4, err_msg=left)
    for centred in ("jawOpen", "mouthPucker", "mouthFunnel", "browInnerUp", "cheekPuff", "mouthClose"):
        p = face(**{centred: 1.0})
        np.testing.assert_allclose(mirrored(p), p, atol=1e-4, err_msg=centred)


def test_every_visible_blendshape_moves_some_landmark():
    invisible = {name for name in ARKIT52 if name.startswith("eyeLook")} | {"tongueOut"}
    magnitude = np.abs(DEFAULT_FACE.basis).max(axis=(1, 2))
    for k, name in enumerate(ARKIT52):
        assert (magnitude[k] > 1.0) == (name not in invisible), name


def test_other_proportions_and_bad_input():
    wide = FaceModel.from_proportions(FaceProportions(mouth_width=60.0))
    n = wide.neutral
    assert n[LEFT_CORNER, 0] - n[RIGHT_CORNER, 0] == pytest.approx(60)
    with pytest.raises(ValueError, match="52"):
        arkit_to_ibug68(np.zeros((3, 17)))
    with pytest.raises(ValueError, match="NaN"):
        arkit_to_ibug68(np.full((1, 52), np.nan))


def test_retarget_arkit_clip_to_landmarks():
    values = np.zeros((10, 52), np.float32)
    values[:, ARKIT52.index("jawOpen")] = np.linspace(0, 1, 10)
    clip = MotionClip(fps=25, layout="arkit52", values=values, head_pose=np.zeros((10, 6)))
    points = retarget(clip, "landmarks:ibug68")
    assert points.layout == "landmarks:ibug68" and points.values.shape == (10, 204)
    np.testing.assert_allclose(points.landmarks()[0], NEUTRAL_IBUG68)
    assert points.landmarks()[-1, CHIN, 1] < NEUTRAL_IBUG68[CHIN, 1] - 20


def test_head_pose_rotates_about_the_neck():
    points = np.repeat(NEUTRAL_IBUG68[None], 3, axis=0)
    pose = np.array([[0, 0, 0, 0, 0, 0], [10, 0, 0, 0, 0, 0], [0, 15, 0, 0, 0, 5]], np.float32)
    moved = apply_head_pose(points, pose)
    np.testing.assert_allclose(moved[0], NEUTRAL_IBUG68, atol=1e-4)
    assert moved[1, 30, 1] < NEUTRAL_IBUG68[30, 1] - 3            # positive rx: a nod, nose down
    assert moved[2, 30, 0] > NEUTRAL_IBUG68[30, 0] + 10           # positive ry: nose to the subject's left
    # Rigid motion: distances between points are kept.
    np.testing.assert_allclose(np.linalg.norm(moved[2, 36] - moved[2, 45]),
                               np.linalg.norm(NEUTRAL_IBUG68[36] - NEUTRAL_IBUG68[45]), rtol=1e-5)
