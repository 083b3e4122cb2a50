"""Tests for render.avatar: the deformations move the right vertices the right way, the head turns about the
neck as inference/face_geometry.py says, clips are taken or refused with the reason, and rendered frames
show what the face does (an open mouth is dark inside, a blink hides the whites of the eyes, a turned head
moves the face across the frame).

Vertices are picked by where they lie on the rest mesh (the front-most point of the lower lip, the end of
the mouth slit...), never by index, and expected movements come from the geometry (a rotation about the
project's head pivot, a left-right mirror), not from the code's own output. The avatar is built once for
the module (a few seconds); frames are 256 × 256 without supersampling, to stay quick.
"""

import math

import numpy as np
import pytest

from inference.face_geometry import HEAD_PIVOT as FACE_GEOMETRY_PIVOT
from inference.face_geometry import apply_head_pose
from inference.layouts import ARKIT52, OPENFACE_AUS
from inference.motion import MotionClip, MotionError, fit_pca, retarget, to_pca
from render.avatar import EYE_CENTRES, HEAD_PIVOT, MOUTH_Y, Avatar, displacement_fields
from render.offscreen import RenderError, Renderer, RenderSettings, render_clip
from render.rig import Part, RigError

SETTINGS = RenderSettings(width=256, height=256, supersample=1)
MIRROR = np.array([-1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def avatar():
    return Avatar()


@pytest.fixture(scope="module")
def renderer():
    return Renderer(SETTINGS)


def weights(**channels):
    w = np.zeros(len(ARKIT52), np.float32)
    for name, value in channels.items():
        w[ARKIT52.index(name)] = value
    return w


def arkit_clip(frames, head_pose=None, fps=25.0):
    values = np.stack([weights(**f) for f in frames])
    return MotionClip(fps=fps, layout="arkit52", values=values, head_pose=head_pose)


# --- picking vertices on the rest face ----------------------------------------------------------------


def rest(avatar):
    return avatar.skin_vertices(weights())


def lip_fronts(v):
    """Indices of the front-most points of the upper and of the lower lip on the midline."""
    mid = np.abs(v[:, 0]) < 3.0
    upper = np.flatnonzero(mid & (v[:, 1] > MOUTH_Y + 1.5) & (v[:, 1] < MOUTH_Y + 10.0))
    lower = np.flatnonzero(mid & (v[:, 1] < MOUTH_Y - 1.5) & (v[:, 1] > MOUTH_Y - 12.0))
    return upper[np.argmax(v[upper, 2])], lower[np.argmax(v[lower, 2])]


def mouth_corners(avatar, v):
    """The two ends of the mouth slit (the subject's right, then left): the outermost points of the lips'
    inner faces, which face up or down and lie within a millimetre or so of the line between the lips."""
    from render.offscreen import vertex_normals

    normals = vertex_normals(v, avatar.model.skin[1])
    walls = (np.abs(v[:, 1] - MOUTH_Y) < 1.5) & (np.abs(normals[:, 1]) > 0.7) & (v[:, 2] > 0.0)
    line = np.flatnonzero(walls)
    return line[np.argmin(v[line, 0])], line[np.argmax(v[line, 0])]


# --- deformations --------------------------------------------------------------------------------------


def test_jaw_open_lowers_the_chin_and_the_lower_lip_and_parts_the_lips(avatar):
    before = rest(avatar)
    after = avatar.skin_vertices(weights(jawOpen=1.0))
    front = (np.abs(before[:, 0]) < 4.0) & (before[:, 2] > -10.0)
    chin = np.flatnonzero(front)[np.argmin(before[front, 1])]
    upper, lower = lip_fronts(before)
    # a 15–25° turn about a hinge some 130 mm from the chin moves the chin 35–55 mm
    assert 25.0 < before[chin, 1] - after[chin, 1] < 70.0
    assert after[lower, 1] < before[lower, 1] - 20.0
    assert abs(after[upper, 1] - before[upper, 1]) < 3.0  # the upper lip stays with the skull
    gap_before = before[upper, 1] - before[lower, 1]
    gap_after = after[upper, 1] - after[lower, 1]
    assert gap_after > gap_before + 20.0


def test_far_away_vertices_stay_still_for_every_channel(avatar):
    before = rest(avatar)
    far = ((np.abs(before[:, 0]) > 67.0) & (before[:, 1] > -40.0)) | (before[:, 2] < -125.0)  # ears, nape
    assert far.sum() > 50
    for name in ARKIT52:
        moved = np.abs(avatar.skin_vertices(weights(**{name: 1.0}))[far] - before[far]).max()
        assert moved < 1e-4, f"{name} moves the ears or the back of the neck by {moved:.3f} mm"


def test_brow_channels_raise_and_lower_the_right_parts_of_the_brows(avatar):
    rest_brows = avatar.brow_vertices(weights())
    x = rest_brows[:, 0]
    inner, outer_left, left, right = np.abs(x) < 20.0, x > 44.0, x > 0, x < 0

    def rise(**channels):
        return avatar.brow_vertices(weights(**channels))[:, 1] - rest_brows[:, 1]

    up = rise(browInnerUp=1.0)
    assert up[inner].mean() > 4.0 and up[np.abs(x) > 44.0].mean() < 0.5 * up[inner].mean()
    outer = rise(browOuterUpLeft=1.0)
    assert outer[outer_left].mean() > 3.0 and outer[inner & left].mean() < 0.5 * outer[outer_left].mean()
    assert np.abs(outer[right]).max() < 1e-4
    down = rise(browDownLeft=1.0)
    assert down[left].mean() < -2.0 and np.abs(down[right]).max() < 1e-4


def lid_edges(lids, eye):
    """(lowest point of the upper lid, highest point of the lower lid) in front of the pupil of one eye."""
    n = len(lids) // 4
    upper, lower = (lids[0:n], lids[n:2 * n]) if eye == 0 else (lids[2 * n:3 * n], lids[3 * n:])
    cx, _, cz = EYE_CENTRES[eye]

    def in_front(v):
        return v[(np.abs(v[:, 0] - cx) < 2.5) & (v[:, 2] > cz + 9.0)]

    return in_front(upper)[:, 1].min(), in_front(lower)[:, 1].max()


def test_a_blink_brings_each_upper_lid_down_onto_its_lower_lid(avatar):
    open_eyes = avatar.lid_vertices(weights())
    for eye in (0, 1):
        top, bottom = lid_edges(open_eyes, eye)
        assert top - bottom > 6.0  # an open eye is a few millimetres high
    left_blink = avatar.lid_vertices(weights(eyeBlinkLeft=1.0))
    top, bottom = lid_edges(left_blink, 1)
    assert top <= bottom + 0.3  # closed: the upper lid reaches (overlaps) the lower one
    top, bottom = lid_edges(left_blink, 0)
    assert top - bottom > 6.0  # the right eye stays open
    half = lid_edges(avatar.lid_vertices(weights(eyeBlinkRight=0.5)), 0)
    assert 1.0 < half[0] - half[1] < top - bottom


def test_a_smile_raises_and_widens_the_mouth_corners(avatar):
    before = rest(avatar)
    after = avatar.skin_vertices(weights(mouthSmileLeft=1.0, mouthSmileRight=1.0))
    right, left = mouth_corners(avatar, before)
    assert after[left, 1] - before[left, 1] > 3.0 and after[right, 1] - before[right, 1] > 3.0
    assert after[left, 0] - before[left, 0] > 2.0 and before[right, 0] - after[right, 0] > 2.0


def test_stretch_widens_and_pucker_narrows_the_mouth_and_pushes_the_lips_forward(avatar):
    before = rest(avatar)
    right, left = mouth_corners(avatar, before)
    stretched = avatar.skin_vertices(weights(mouthStretchLeft=1.0, mouthStretchRight=1.0))
    assert stretched[left, 0] - stretched[right, 0] > before[left, 0] - before[right, 0] + 6.0
    puckered = avatar.skin_vertices(weights(mouthPucker=1.0))
    assert puckered[left, 0] - puckered[right, 0] < before[left, 0] - before[right, 0] - 8.0
    for lip in lip_fronts(before):
        assert puckered[lip, 2] - before[lip, 2] > 4.0


def test_the_displacement_fields_of_left_and_right_channels_are_mirror_images():
    rng = np.random.default_rng(7)
    points = rng.uniform([-70, -120, -40], [70, 40, 40], size=(4000, 3))
    fields = displacement_fields(points)
    mirrored = displacement_fields(points * MIRROR)
    pairs = [name[:-4] for name in ARKIT52 if name.endswith("Left") and name[:-4] + "Right" in ARKIT52]
    assert len(pairs) >= 12
    for stem in pairs:
        if stem + "Left" not in fields:
            continue
        np.testing.assert_allclose(fields[stem + "Left"], mirrored[stem + "Right"] * MIRROR, atol=1e-9,
                                   err_msg=stem)
    for name in ("browInnerUp", "mouthPucker", "mouthFunnel", "cheekPuff", "jawForward"):
        np.testing.assert_allclose(fields[name], mirrored[name] * MIRROR, atol=1e-9, err_msg=name)


def test_the_skin_moves_by_the_displacement_fields_at_its_rest_positions(avatar):
    """So the mirror symmetry of the fields (above) carries over to the mesh; the jaw is a rotation instead."""
    before = rest(avatar)
    fields = displacement_fields(before.astype(np.float64))
    for name in ("mouthSmileLeft", "mouthSmileRight", "browOuterUpLeft", "cheekSquintRight", "mouthPucker",
                 "noseSneerLeft", "mouthUpperUpRight", "browInnerUp"):
        moved = avatar.skin_vertices(weights(**{name: 0.5})) - before
        np.testing.assert_allclose(moved, 0.5 * fields[name], atol=1e-3, err_msg=name)
        assert np.abs(fields[name]).max() > 2.5, f"{name} hardly moves the face at full weight"


# --- the neck joint ------------------------------------------------------------------------------------


def part(parts, name):
    return next(p for p in parts if p.name == name)


def placed(part_, points):
    return points @ part_.transform[:3, :3].T + part_.transform[:3, 3]


def test_the_head_turns_about_the_projects_neck_pivot(avatar):
    assert np.allclose(HEAD_PIVOT, FACE_GEOMETRY_PIVOT)
    before = rest(avatar)
    tip = before[np.argmax(before[:, 2])]
    parts = avatar.pose_parts(weights(), np.array([0.0, 30.0, 0.0, 0.0, 0.0, 0.0]))
    turned = placed(part(parts, "face"), tip[None, :])[0]
    # a turn of 30° about the vertical through the pivot: x' = x cos + (z − z_pivot) sin
    expected_x = tip[0] * math.cos(math.radians(30)) + (tip[2] - FACE_GEOMETRY_PIVOT[2]) * math.sin(math.radians(30))
    assert turned[0] > 50.0  # towards the subject's left (+x), by some 60 mm for a nose 130 mm from the pivot
    assert turned[0] == pytest.approx(expected_x, abs=1e-3)
    convention = apply_head_pose(tip[None, None, :], np.array([[0.0, 30.0, 0.0, 0.0, 0.0, 0.0]]))[0, 0]
    np.testing.assert_allclose(turned, convention, atol=1e-3)
    for pose in ([12.0, -7.0, 5.0, 0, 0, 0], [-20.0, 15.0, -10.0, 3, -4, 8]):
        moved = placed(part(avatar.pose_parts(weights(), np.array(pose)), "face"), before[:50])
        np.testing.assert_allclose(moved, apply_head_pose(before[None, :50], np.array([pose]))[0], atol=1e-3)


def test_translation_moves_the_head_and_leaves_the_body(avatar):
    pose = np.array([0.0, 0.0, 0.0, 10.0, -5.0, 20.0])
    parts = avatar.pose_parts(weights(), pose)
    for name in ("face", "hair", "eye_whites", "mouth"):
        np.testing.assert_allclose(part(parts, name).transform[:3, 3], [10.0, -5.0, 20.0], atol=1e-5)
        np.testing.assert_allclose(part(parts, name).transform[:3, :3], np.eye(3), atol=1e-6)
    np.testing.assert_allclose(part(parts, "body").transform, np.eye(4))


# --- clips ---------------------------------------------------------------------------------------------


def test_prepare_takes_an_arkit_clip_as_it_is_and_gives_it_a_still_head(avatar):
    clip = arkit_clip([{"jawOpen": 0.3}, {"jawOpen": 0.6}, {"eyeBlinkLeft": 1.0}])
    prepared = avatar.prepare(clip)
    assert prepared.layout == "arkit52" and prepared.n_frames == 3
    np.testing.assert_array_equal(prepared.values, clip.values)
    np.testing.assert_array_equal(prepared.head_pose, np.zeros((3, 6)))
    assert len(avatar.parts(prepared, 2)) == len(avatar.parts(prepared, 0))


def test_openface_clips_are_retargeted(avatar):
    values = np.zeros((2, len(OPENFACE_AUS)), np.float32)
    values[1, OPENFACE_AUS.index("AU26")] = 5.0  # jaw drop at full intensity
    values[1, OPENFACE_AUS.index("AU45")] = 5.0  # blink
    prepared = avatar.prepare(MotionClip(fps=30, layout="openface_au", values=values))
    assert prepared.layout == "arkit52" and prepared.n_frames == 2
    assert prepared.values[1, ARKIT52.index("jawOpen")] == pytest.approx(1.0)
    assert prepared.values[1, ARKIT52.index("eyeBlinkLeft")] == pytest.approx(1.0)
    assert np.all(prepared.values[0] == 0.0)


def test_pca_clips_of_arkit_weights_are_retargeted(avatar):
    rng = np.random.default_rng(3)
    clips = [arkit_clip([{"jawOpen": a, "mouthSmileLeft": b} for a, b in rng.uniform(0, 1, (40, 2))])]
    basis = fit_pca(clips, k=4)
    prepared = avatar.prepare(to_pca(clips[0], basis))
    assert prepared.layout == "arkit52"
    np.testing.assert_allclose(prepared.values, np.clip(clips[0].values, 0, 1), atol=1e-4)


def test_landmark_clips_play_when_a_mapping_to_arkit_exists_and_are_refused_otherwise(avatar):
    landmarks = retarget(arkit_clip([{"jawOpen": 0.5}, {}]), "landmarks:ibug68")
    try:
        retarget(landmarks, "arkit52")
    except MotionError:
        with pytest.raises(RigError, match="landmarks:ibug68"):
            avatar.prepare(landmarks)
    else:
        prepared = avatar.prepare(landmarks)  # how well the mapping works is tested in tests/inference
        assert prepared.layout == "arkit52" and prepared.n_frames == 2
        assert len(avatar.parts(prepared, 1)) == len(avatar.parts(prepared, 0))


def test_a_layout_without_a_mapping_is_refused_with_the_reason(avatar):
    motors = MotionClip(fps=25, layout="motors:sim-face", values=np.zeros((3, 2)), channels=("jaw", "brow"))
    with pytest.raises(RigError, match=r"motors:sim-face.*no retargeting|no retargeting.*motors:sim-face"):
        avatar.prepare(motors)


def test_nan_and_unknown_layouts_never_reach_the_avatar():
    values = np.zeros((3, len(ARKIT52)), np.float32)
    values[1, 4] = np.nan
    with pytest.raises(MotionError, match="NaN"):
        MotionClip(fps=25, layout="arkit52", values=values)
    with pytest.raises(MotionError, match="layout"):
        MotionClip(fps=25, layout="blendshapes-v2", values=np.zeros((3, 4)))


def test_values_in_the_wrong_units_and_bad_frames_are_refused(avatar):
    au_like = np.full((2, len(ARKIT52)), 4.0, np.float32)  # AU intensities labelled as blendshape weights
    with pytest.raises(RigError, match="0..1"):
        avatar.prepare(MotionClip(fps=25, layout="arkit52", values=au_like))
    pose = np.zeros((2, 6), np.float32)
    pose[1, 1] = 170.0
    with pytest.raises(RigError, match="degrees"):
        avatar.prepare(arkit_clip([{}, {}], head_pose=pose))
    prepared = avatar.prepare(arkit_clip([{}, {}]))
    with pytest.raises(RigError, match="outside"):
        avatar.parts(prepared, 2)
    with pytest.raises(RigError, match="prepare"):
        avatar.parts(MotionClip(fps=25, layout="openface_au", values=np.zeros((2, len(OPENFACE_AUS)))), 0)


# --- rendered frames -----------------------------------------------------------------------------------


def project(avatar, points):
    """Pixel (column, row) of model-space points for SETTINGS with the avatar's framing: a pinhole camera on
    the +z axis of the look-at point, far enough back for the framed height to fill the frame."""
    target, height = avatar.look_at()
    half = math.tan(math.radians(SETTINGS.fov_degrees) / 2)
    distance = (height / 2) / half
    focal = (SETTINGS.height / 2) / half
    rel = np.atleast_2d(points) - target
    depth = distance - rel[:, 2]
    return np.stack([SETTINGS.width / 2 + focal * rel[:, 0] / depth,
                     SETTINGS.height / 2 - focal * rel[:, 1] / depth], axis=1)


def window(avatar, frame, centre, half_mm):
    (col, row), = project(avatar, np.asarray(centre, float))
    half = half_mm * SETTINGS.height / avatar.look_at()[1]
    return frame[int(row - half):int(row + half), int(col - half):int(col + half)].astype(int)


def draw(avatar, renderer, pose=None, **channels):
    return renderer.render(avatar.pose_parts(weights(**channels), pose), look_at=avatar.look_at())


def test_an_open_jaw_shows_the_dark_inside_of_the_mouth(avatar, renderer):
    def dark_pixels(frame):
        region = window(avatar, frame, (0.0, MOUTH_Y - 10.0, 20.0), 32.0)
        return int((region.max(axis=2) < 60).sum())

    closed = dark_pixels(draw(avatar, renderer))
    opened = dark_pixels(draw(avatar, renderer, jawOpen=1.0))
    half = dark_pixels(draw(avatar, renderer, jawOpen=0.5))
    # wide open, the mouth is some 35 × 25 mm: hundreds of pixels at 0.85 px/mm; closed, a thin line
    assert opened > 250 and opened > 5 * max(closed, 1)
    assert closed < half < opened


def test_a_blink_hides_the_whites_of_the_eyes(avatar, renderer):
    def white_pixels(frame):
        total = 0
        for centre in EYE_CENTRES:
            region = window(avatar, frame, centre + np.array([0.0, 0.0, 13.0]), 16.0)
            total += int(((region.min(axis=2) > 150) & (region.max(axis=2) - region.min(axis=2) < 45)).sum())
        return total

    neutral = white_pixels(draw(avatar, renderer))
    closed = white_pixels(draw(avatar, renderer, eyeBlinkLeft=1.0, eyeBlinkRight=1.0))
    assert neutral > 50
    assert closed <= 0.05 * neutral


def test_turning_the_head_moves_the_face_across_the_frame(avatar, renderer):
    background = np.array(SETTINGS.background)
    pose = np.array([0.0, 30.0, 0.0, 0.0, 0.0, 0.0])

    def head_only(pose_):
        parts = [p for p in avatar.pose_parts(weights(), pose_) if p.name != "body"]
        return renderer.render(parts, look_at=avatar.look_at())

    def silhouette_column(frame):
        cols = np.nonzero(np.any(frame != background, axis=2))[1]
        return cols.mean()

    def pupil_column(frame):
        band = slice(*sorted(project(avatar, np.array([[0, 14.0, 0], [0, -14.0, 0]]))[:, 1].astype(int)))
        cols = np.nonzero(frame[band].max(axis=2) < 45)[1]
        return cols.mean()

    still, turned = head_only(np.zeros(6)), head_only(pose)
    assert silhouette_column(turned) > silhouette_column(still) + 3.0  # the face swings to the viewer's right
    eyes = EYE_CENTRES + np.array([0.0, 0.0, 12.0])
    predicted = (project(avatar, apply_head_pose(eyes[None], pose[None])[0])[:, 0]
                 - project(avatar, eyes)[:, 0]).mean()
    measured = pupil_column(turned) - pupil_column(still)
    assert predicted > 20.0
    assert measured == pytest.approx(predicted, rel=0.35)


def test_identical_clips_give_byte_identical_frames(avatar):
    clip = arkit_clip([{"jawOpen": 0.4, "mouthSmileLeft": 0.3}, {"eyeBlinkRight": 0.7, "browInnerUp": 0.5}],
                      head_pose=np.array([[0, 5, 0, 0, 0, 0], [3, -4, 2, 1, 0, 0]], np.float32))
    first = [f.tobytes() for f in render_clip(avatar, clip, SETTINGS)]
    second = [f.tobytes() for f in render_clip(avatar, clip, SETTINGS)]
    assert first == second and first[0] != first[1]


def test_one_renderer_draws_a_whole_avatar_clip(avatar, monkeypatch):
    import pyrender

    made = []
    original = pyrender.OffscreenRenderer
    monkeypatch.setattr(pyrender, "OffscreenRenderer", lambda *a, **k: made.append(a) or original(*a, **k))
    settings = RenderSettings(width=128, height=128, supersample=1, background=(200, 200, 201))
    clip = arkit_clip([{"jawOpen": t / 10} for t in range(8)])
    frames = list(render_clip(avatar, clip, settings))
    assert len(frames) == 8 and len(made) == 1
    assert all(f.shape == (128, 128, 3) for f in frames)


def test_an_avatar_moved_out_of_view_is_an_error(avatar, renderer):
    away = np.eye(4, dtype=np.float32)
    away[1, 3] = 5000.0
    parts = [Part(p.name, p.vertices, p.faces, p.color, away @ p.transform, p.metallic, p.roughness, p.static)
             for p in avatar.pose_parts(weights())]
    with pytest.raises(RenderError, match="out of view"):
        renderer.render(parts, look_at=avatar.look_at())
