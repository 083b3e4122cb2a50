"""Tests for render.offscreen: settings, the platform choice, renderer reuse, determinism and failed frames.

The rigs here are a few primitives built in this file (a ball on a block), so the renderer is tested on its
own; the avatar is drawn in tests/render/test_avatar.py. Frames are small (64–128 px) to keep this fast.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import trimesh

from inference.motion import MotionClip
from render import offscreen
from render.offscreen import RenderError, Renderer, RenderSettings, get_renderer, render_clip
from render.rig import Part, Rig

SMALL = dict(width=96, height=96, supersample=1)


def ball(radius=40.0, centre=(0.0, 0.0, 0.0)):
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    return (mesh.vertices + np.asarray(centre)).astype(np.float32), mesh.faces.astype(np.int32)


class BallRig(Rig):
    """A ball whose height follows the clip's first channel (mm), on a static block; for renderer tests."""

    name = "ball"
    consumes = "pca"

    def __init__(self, offset=(0.0, 0.0, 0.0)):
        self.ball = ball()
        block = trimesh.creation.box(extents=(120.0, 30.0, 60.0))
        self.block = (block.vertices.astype(np.float32) + np.float32([0, -70, 0]), block.faces.astype(np.int32))
        self.offset = np.asarray(offset, np.float32)
        self.prepared = 0

    def prepare(self, clip):
        self.prepared += 1
        return clip

    def parts(self, clip, frame):
        v, f = self.ball
        lift = np.float32([0.0, clip.values[frame, 0], 0.0])
        return [Part("ball", v + lift + self.offset, f, color=(0.8, 0.3, 0.2, 1.0)),
                Part("block", *self.block, color=(0.2, 0.4, 0.8, 1.0), static=True)]

    def look_at(self):
        return np.zeros(3, np.float32), 200.0


def clip_of(heights):
    values = np.asarray(heights, np.float32)[:, None]
    return MotionClip(fps=25, layout="pca", values=values, channels=("height",), basis=_basis())


def _basis():
    from inference.motion import PCABasis

    return PCABasis("arkit52", ("jawOpen",), np.zeros(1, np.float32), np.ones((1, 1), np.float32),
                    np.ones(1, np.float32))


# --- settings --------------------------------------------------------------------------------------------


def test_settings_round_trip_through_a_dict():
    settings = RenderSettings(width=640, height=360, background=(10, 20, 30), framing="head_and_shoulders",
                              lighting="flat", fov_degrees=25.0, supersample=1)
    data = settings.to_dict()
    assert data["background"] == [10, 20, 30]
    assert RenderSettings.from_dict(data) == settings


@pytest.mark.parametrize("bad, message", [
    (dict(width=511), "even"),
    (dict(height=99), "even"),
    (dict(width=8), "between 16 and 4096"),
    (dict(width=512.0), "whole number"),
    (dict(framing="full_body"), "unknown framing"),
    (dict(lighting="noir"), "unknown lighting"),
    (dict(fov_degrees=170), "fov_degrees"),
    (dict(background=(300, 0, 0)), "background"),
    (dict(background="white"), "background"),
    (dict(supersample=8), "supersample"),
])
def test_bad_settings_are_refused_with_the_reason(bad, message):
    with pytest.raises(ValueError, match=message):
        RenderSettings(**bad)


def test_unknown_setting_keys_are_refused():
    with pytest.raises(ValueError, match="unknown render setting.*resolution"):
        RenderSettings.from_dict({"resolution": 512})


# --- platform --------------------------------------------------------------------------------------------


def test_the_platform_comes_from_the_environment_when_set(monkeypatch):
    monkeypatch.setattr(offscreen, "_platform", None)
    monkeypatch.setenv("PYOPENGL_PLATFORM", "osmesa")
    assert offscreen.choose_platform() == "osmesa"
    monkeypatch.setattr(offscreen, "_platform", None)
    monkeypatch.setenv("PYOPENGL_PLATFORM", "glx")
    with pytest.raises(RenderError, match="osmesa' or 'egl'"):
        offscreen.choose_platform()


PROBE_ONCE = r"""
import os, sys
os.environ.pop("PYOPENGL_PLATFORM", None)
import render.offscreen as o
calls = []
def fake_probe(timeout_s=30.0):
    calls.append(1)
    return False, "no EGL in this test"
o.probe_egl = fake_probe
first = o.choose_platform()
second = o.choose_platform()
assert "pyrender" not in sys.modules, "pyrender must not be imported to choose the platform"
print(first, second, len(calls), os.environ["PYOPENGL_PLATFORM"])
"""


def test_the_platform_is_probed_once_and_exported_for_child_processes():
    env = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}
    done = subprocess.run([sys.executable, "-c", PROBE_ONCE], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["osmesa", "osmesa", "1", "osmesa"]


# --- frames ----------------------------------------------------------------------------------------------


COPLANAR_PARTS = r"""
import hashlib
import numpy as np
from render.offscreen import Renderer, RenderSettings
from render.rig import Part

# Six overlapping squares in one plane under one transform: where they overlap their depth is equal, so the
# pixels there are the colour of whichever square is drawn first.
square = np.array([[-30, -30, 0], [30, -30, 0], [30, 30, 0], [-30, 30, 0]], np.float32)
faces = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
parts = [Part(f"square-{i}", square + np.float32([4 * i, 3 * i, 0]), faces,
              (0.15 * i + 0.1, 0.9 - 0.12 * i, 0.5, 1.0), static=True) for i in range(6)]
frame = Renderer(RenderSettings(width=64, height=64, supersample=1)).render(parts, look_at=(np.zeros(3), 100.0))
print(hashlib.sha256(frame.tobytes()).hexdigest())
"""


def test_the_same_parts_give_the_same_pixels_in_every_process():
    """Parts under one transform tie on pyrender's draw-order key (distance to the camera); where their
    surfaces meet at equal depth the first drawn wins, so the order must not depend on the process (memory
    addresses, hash seeds): a clip rebuilt by another render worker must come out bit for bit the same."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    digests = set()
    for seed in range(4):
        done = subprocess.run([sys.executable, "-c", COPLANAR_PARTS], capture_output=True, text=True, cwd=root,
                              env={**os.environ, "PYTHONHASHSEED": str(seed)}, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        digests.add(done.stdout.split()[-1])
    assert len(digests) == 1, digests


def test_a_frame_has_the_size_and_background_asked_for():
    settings = RenderSettings(width=128, height=64, background=(10, 200, 30), supersample=1)
    frame = Renderer(settings).render(BallRig().parts(clip_of([0.0]), 0), look_at=BallRig().look_at())
    assert frame.shape == (64, 128, 3) and frame.dtype == np.uint8
    assert tuple(frame[0, 0]) == (10, 200, 30)  # a corner, where nothing is drawn
    assert tuple(frame[32, 64]) != (10, 200, 30)  # the ball, in the middle


def test_identical_parts_give_byte_identical_frames():
    rig = BallRig()
    clip = clip_of([0.0, 5.0])
    renderer = Renderer(RenderSettings(width=96, height=96, supersample=2))
    first = renderer.render(rig.parts(clip, 0), look_at=rig.look_at())
    renderer.render(rig.parts(clip, 1), look_at=rig.look_at())  # something else in between
    again = renderer.render(rig.parts(clip, 0), look_at=rig.look_at())
    other = Renderer(RenderSettings(width=96, height=96, supersample=2)).render(rig.parts(clip, 0),
                                                                                look_at=rig.look_at())
    assert first.tobytes() == again.tobytes() == other.tobytes()


def test_a_moving_part_moves_in_the_frame():
    rig = BallRig()
    renderer = Renderer(RenderSettings(**SMALL))
    low = renderer.render(rig.parts(clip_of([0.0, 30.0]), 0), look_at=rig.look_at())
    high = renderer.render(rig.parts(clip_of([0.0, 30.0]), 1), look_at=rig.look_at())

    def top_row(frame):  # first row from the top where the red ball shows
        red = (frame[:, :, 0] > 120) & (frame[:, :, 2] < 100)
        return int(np.argmax(red.any(axis=1)))

    # 30 mm up in a 200 mm tall frame of 96 px is about 14 px, less a little perspective
    assert 8 <= top_row(low) - top_row(high) <= 18


def test_the_renderer_is_made_once_for_many_frames_and_clips(monkeypatch):
    import pyrender

    made = []
    original = pyrender.OffscreenRenderer

    def counting(*args, **kwargs):
        made.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(pyrender, "OffscreenRenderer", counting)
    settings = RenderSettings(width=80, height=80, supersample=1, background=(1, 2, 3))  # not used elsewhere
    rig = BallRig()
    frames = list(render_clip(rig, clip_of(np.linspace(0, 20, 12)), settings))
    frames += list(render_clip(rig, clip_of(np.linspace(20, 0, 8)), settings))
    assert len(frames) == 20 and len(made) == 1
    assert get_renderer(settings) is get_renderer(settings)
    assert rig.prepared == 2


def test_static_parts_are_uploaded_once_and_moving_parts_refill_their_buffer_every_frame(monkeypatch):
    import OpenGL.GL
    import pyrender

    meshes, refills = [], []
    original_mesh = pyrender.Mesh.__init__
    original_refill = OpenGL.GL.glBufferSubData

    def counting(self, primitives, *args, **kwargs):
        meshes.append(primitives[0].positions.shape[0])
        original_mesh(self, primitives, *args, **kwargs)

    def refill(target, offset, size, data):
        refills.append(np.asarray(data).reshape(-1, 6)[:, :3].copy())  # position + normal per vertex
        return original_refill(target, offset, size, data)

    monkeypatch.setattr(pyrender.Mesh, "__init__", counting)
    monkeypatch.setattr(OpenGL.GL, "glBufferSubData", refill)
    rig = BallRig()
    renderer = Renderer(RenderSettings(**SMALL))
    clip = clip_of(np.linspace(0, 10, 5))
    frames = [renderer.render(rig.parts(clip, i), look_at=rig.look_at()) for i in range(5)]
    n_ball, n_block = len(rig.ball[0]), len(rig.block[0])
    assert n_ball != n_block
    assert meshes.count(n_ball) == 1 and meshes.count(n_block) == 1 and len(meshes) == 2
    # frames 1..4 refill the ball's buffer with that frame's vertices, and the pixels follow
    assert len(refills) == 4
    for i, uploaded in enumerate(refills, start=1):
        np.testing.assert_allclose(uploaded, rig.parts(clip, i)[0].vertices, atol=1e-4)
    assert not np.array_equal(frames[0], frames[4])
    again = Renderer(RenderSettings(**SMALL))
    np.testing.assert_array_equal(again.render(rig.parts(clip, 4), look_at=rig.look_at()), frames[4])


def test_a_moving_part_with_other_faces_gets_a_new_mesh(monkeypatch):
    import pyrender

    meshes = []
    original = pyrender.Mesh.__init__

    def counting(self, primitives, *args, **kwargs):
        meshes.append(len(primitives[0].indices))
        original(self, primitives, *args, **kwargs)

    monkeypatch.setattr(pyrender.Mesh, "__init__", counting)
    vertices, faces = ball()
    renderer = Renderer(RenderSettings(**SMALL))
    renderer.render([Part("ball", vertices, faces)], look_at=(np.zeros(3), 120.0))
    renderer.render([Part("ball", vertices + 1.0, faces[:-20])], look_at=(np.zeros(3), 120.0))
    assert meshes == [len(faces), len(faces) - 20]


def test_vertex_normals_are_the_area_weighted_sum_bit_for_bit():
    """Against the plain formula: np.cross per face, added into its corners face by face (np.add.at),
    divided by np.linalg.norm; a vertex on no face keeps a zero normal."""
    rng = np.random.default_rng(11)
    vertices, faces = ball()
    vertices = (vertices + rng.normal(0, 2.0, vertices.shape)).astype(np.float32)
    vertices = np.vstack([vertices, np.float32([[500, 500, 500]])])  # used by no face
    for shuffled in (faces, faces[rng.permutation(len(faces))]):
        v = vertices.astype(np.float64)
        face_n = np.cross(v[shuffled[:, 1]] - v[shuffled[:, 0]], v[shuffled[:, 2]] - v[shuffled[:, 0]])
        summed = np.zeros_like(v)
        np.add.at(summed, shuffled.ravel(), np.repeat(face_n, 3, axis=0))  # face by face, corner by corner
        length = np.linalg.norm(summed, axis=1, keepdims=True)
        expected = (summed / np.where(length > 0, length, 1.0)).astype(np.float32)

        got = offscreen.vertex_normals(vertices, shuffled.astype(np.uint32))
        assert got.dtype == np.float32 and got.shape == vertices.shape
        assert got.tobytes() == expected.tobytes()
        assert np.all(got[-1] == 0)
        # outward on a sphere
        assert np.all(np.einsum("ij,ij->i", got[:-1], vertices[:-1]) > 0)


def test_vertex_cache_order_keeps_every_triangle_and_its_winding():
    rng = np.random.default_rng(7)
    _vertices, faces = ball()
    shuffled = faces[rng.permutation(len(faces))]
    ordered = offscreen.vertex_cache_order(shuffled)

    lowest = ordered.min(axis=1)
    assert np.all(np.diff(lowest) >= 0)
    # the same rows (corners in the same order, so the same facing), each exactly once
    assert sorted(map(tuple, ordered.tolist())) == sorted(map(tuple, shuffled.tolist()))
    # stable: triangles sharing a lowest vertex keep their given order
    for vertex in (0, 5, 40):
        given = [tuple(row) for row in shuffled.tolist() if min(row) == vertex]
        assert [tuple(row) for row in ordered.tolist() if min(row) == vertex] == given


def test_triangles_are_uploaded_in_vertex_cache_order_and_draw_the_same_pixels(monkeypatch):
    """The index buffer is reordered for the vertex cache; drawing in the order given instead gives the
    same bytes (a shuffled sphere over a box, moving and static, supersampled)."""
    rng = np.random.default_rng(3)
    vertices, faces = ball()
    faces = faces[rng.permutation(len(faces))]
    box = trimesh.creation.box(extents=(120.0, 30.0, 60.0))
    box_faces = box.faces[rng.permutation(len(box.faces))].astype(np.int32)

    def parts(shift):
        return [Part("ball", vertices + np.float32([shift, 0, 0]), faces, color=(0.8, 0.3, 0.2, 1.0)),
                Part("box", box.vertices.astype(np.float32) + np.float32([0, -50, -20]), box_faces,
                     color=(0.2, 0.4, 0.8, 1.0), static=True)]

    settings = RenderSettings(width=96, height=96, supersample=2)
    look = (np.zeros(3), 200.0)
    renderer = Renderer(settings)
    ordered = [renderer.render(parts(shift), look_at=look) for shift in (0.0, 7.5)]
    uploaded = renderer._dynamic["ball"].primitive.indices
    np.testing.assert_array_equal(uploaded, offscreen.vertex_cache_order(faces))

    monkeypatch.setattr(offscreen, "vertex_cache_order", lambda f: np.ascontiguousarray(f))
    plain = Renderer(settings)
    as_given = [plain.render(parts(shift), look_at=look) for shift in (0.0, 7.5)]
    np.testing.assert_array_equal(plain._dynamic["ball"].primitive.indices, faces)
    for a, b in zip(ordered, as_given):
        assert a.tobytes() == b.tobytes()


def test_lights_evaluated_on_the_gpu_match_the_numpy_model():
    """A flat square facing the camera, lit per vertex by the shader: each corner's pixel colour is the
    model's colour at that corner (shade_vertices, the tested reference), within rounding."""
    from render.offscreen import _LIGHTS, shade_vertices

    half = 40.0
    vertices = np.array([[-half, -half, 0], [half, -half, 0], [half, half, 0], [-half, half, 0]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    base = (0.7, 0.45, 0.3, 1.0)
    settings = RenderSettings(width=96, height=96, supersample=1, background=(0, 0, 0))
    renderer = Renderer(settings)
    frame = renderer.render([Part("square", vertices, faces, base, roughness=0.5)], look_at=(np.zeros(3), 100.0))
    camera = renderer._scene.get_pose(renderer._camera_node)[:3, 3]
    lights = [(np.asarray(d, float) / np.linalg.norm(d), np.asarray(c, float) * i)
              for d, i, c in _LIGHTS["studio"]["lights"]]
    expected = shade_vertices(vertices.astype(float), np.tile([0.0, 0.0, 1.0], (4, 1)), np.array(base[:3]),
                              metallic=0.0, roughness=0.5, camera=camera, lights=lights,
                              ambient=_LIGHTS["studio"]["ambient"]) * 255
    rows, cols = np.nonzero(frame.any(axis=2))
    top, bottom, left, right = rows.min() + 1, rows.max() - 1, cols.min() + 1, cols.max() - 1  # 1 px inside
    assert 0 < top and bottom < 95 and 0 < left and right < 95  # the whole square is in view
    corners = {0: (bottom, left), 1: (bottom, right), 2: (top, right), 3: (top, left)}  # image rows run down
    for vertex, (row, col) in corners.items():
        np.testing.assert_allclose(frame[row, col], expected[vertex], atol=3.0)
    assert np.ptp(expected, axis=0).max() > 3.0  # the corners differ, so the check can tell them apart


def test_render_clip_streams_one_frame_per_clip_frame_and_checks_the_clip_first():
    rig = BallRig()
    frames = render_clip(rig, clip_of([0.0, 1.0, 2.0]), RenderSettings(**SMALL))
    assert rig.prepared == 1  # prepared before the first frame is asked for
    assert not isinstance(frames, list)
    assert len([f for f in frames]) == 3

    class Refusing(BallRig):
        def prepare(self, clip):
            from render.rig import RigError

            raise RigError("cannot take this clip")

    from render.rig import RigError

    with pytest.raises(RigError, match="cannot take"):
        render_clip(Refusing(), clip_of([0.0]), RenderSettings(**SMALL))


# --- failed frames ---------------------------------------------------------------------------------------


def test_a_rig_out_of_view_is_an_error_not_an_empty_frame():
    rig = BallRig(offset=(0.0, 5000.0, 0.0))
    parts = [p for p in rig.parts(clip_of([0.0]), 0) if p.name == "ball"]
    with pytest.raises(RenderError, match="out of view"):
        Renderer(RenderSettings(**SMALL)).render(parts, look_at=rig.look_at())


def test_a_part_with_nan_vertices_is_an_error():
    rig = BallRig()
    parts = rig.parts(clip_of([0.0]), 0)
    parts[0].vertices = parts[0].vertices.copy()
    parts[0].vertices[7, 1] = np.nan
    with pytest.raises(RenderError, match="'ball' has 1 vertices with NaN"):
        Renderer(RenderSettings(**SMALL)).render(parts, look_at=rig.look_at())


@pytest.mark.parametrize("breakage, message", [
    (lambda p: setattr(p, "faces", p.faces + 10_000), "outside"),
    (lambda p: setattr(p, "vertices", p.vertices[:, :2]), r"\[N, 3\]"),
    (lambda p: setattr(p, "transform", np.eye(3)), "4×4"),
    (lambda p: setattr(p, "color", np.ones((3, 4), np.float32)), "per-vertex colours"),
])
def test_malformed_parts_are_errors(breakage, message):
    rig = BallRig()
    parts = rig.parts(clip_of([0.0]), 0)
    breakage(parts[0])
    with pytest.raises(RenderError, match=message):
        Renderer(RenderSettings(**SMALL)).render(parts, look_at=rig.look_at())


def test_a_failing_opengl_call_is_wrapped_with_the_reason(monkeypatch):
    renderer = Renderer(RenderSettings(**SMALL))
    rig = BallRig()

    def broken(*args, **kwargs):
        raise RuntimeError("GL_OUT_OF_MEMORY")

    monkeypatch.setattr(renderer, "_draw", broken)  # whatever GL call fails inside the draw
    with pytest.raises(RenderError, match="OpenGL failed.*GL_OUT_OF_MEMORY"):
        renderer.render(rig.parts(clip_of([0.0]), 0), look_at=rig.look_at())


def test_no_parts_and_a_bad_look_at_are_errors():
    renderer = Renderer(RenderSettings(**SMALL))
    with pytest.raises(RenderError, match="no parts"):
        renderer.render([], look_at=(np.zeros(3), 100.0))
    with pytest.raises(RenderError, match="look_at"):
        renderer.render(BallRig().parts(clip_of([0.0]), 0), look_at=(np.zeros(3), -1.0))


def test_vertex_shading_follows_pyrenders_model_on_a_hand_worked_case():
    """Light, camera and normal all along +z, roughness 1, dielectric: nl = nv = nh = vh = 1, so Fresnel is
    f0 = 0.04, Smith's G = 1 (k = 0.5), GGX's D = 1/π, diffuse = (1 − 0.04)·(0.96·base)/π and specular =
    0.04·(1/π)/(4 + 0.001); plus ambient·base; then the 1/2.2 output gamma."""
    from render.offscreen import shade_vertices

    base = np.array([0.5, 0.25, 0.1])
    radiance = np.array([2.0, 2.0, 2.0])
    out = shade_vertices(np.zeros((1, 3)), np.array([[0.0, 0.0, 1.0]]), base, metallic=0.0, roughness=1.0,
                         camera=np.array([0.0, 0.0, 100.0]), lights=[(np.array([0.0, 0.0, 1.0]), radiance)],
                         ambient=0.2)
    diffuse = 0.96 * (0.96 * base) / np.pi
    specular = 0.04 * (1 / np.pi) / 4.001
    expected = np.clip(0.2 * base + radiance * (diffuse + specular), 0, 1) ** (1 / 2.2)
    np.testing.assert_allclose(out[0], expected, rtol=1e-9)
    # A light behind the surface contributes (almost) nothing; metal reflects its own colour.
    behind = shade_vertices(np.zeros((1, 3)), np.array([[0.0, 0.0, 1.0]]), base, metallic=0.0, roughness=1.0,
                            camera=np.array([0.0, 0.0, 100.0]), lights=[(np.array([0.0, 0.0, -1.0]), radiance)],
                            ambient=0.2)
    assert np.all(behind[0] < (0.2 * base + 0.01) ** (1 / 2.2))


def test_vertex_and_pixel_shading_draw_the_same_face_within_a_few_levels():
    from render.avatar import Avatar

    rig = Avatar()
    parts = rig.pose_parts(np.zeros(52, np.float32))
    frames = {}
    for shading in ("vertex", "pixel"):
        renderer = Renderer(RenderSettings(width=128, height=128, supersample=1, shading=shading))
        try:
            frames[shading] = renderer.render(parts, look_at=rig.look_at()).astype(int)
        finally:
            renderer.close()
    difference = np.abs(frames["vertex"] - frames["pixel"])
    assert difference.mean() < 6 and np.percentile(difference, 95) < 30


@pytest.mark.parametrize("width, height", [(64, 64), (66, 50)])  # 66 × 3 bytes: rows not a multiple of 4
def test_a_supersampled_frame_halved_by_the_gl_is_the_2x2_mean_within_rounding(width, height):
    """Supersample 2 on OSMesa: the GL's linear 2:1 blit gives each pixel the mean of its 2×2 block of the
    drawn frame, as averaging the full-size read on the CPU does (±1 level of rounding), the right way up
    (a ball above and left of the centre stays there)."""
    vertices, faces = ball(radius=25.0, centre=(-20.0, 18.0, 0.0))
    renderer = Renderer(RenderSettings(width=width, height=height, supersample=2))
    frame = renderer.render([Part("ball", vertices, faces, (0.8, 0.3, 0.2, 1.0))], look_at=(np.zeros(3), 100.0))
    platform = renderer._offscreen._platform
    if platform.supports_framebuffers():
        pytest.skip("the halving blit is the OSMesa path; EGL reads through pyrender's own framebuffers")
    platform.make_current()
    try:
        full = np.asarray(renderer._offscreen._renderer.read_color_buf())[:, :, :3].astype(np.uint16)
    finally:
        platform.make_uncurrent()
    assert full.shape == (2 * height, 2 * width, 3)
    mean = (full[0::2, 0::2] + full[0::2, 1::2] + full[1::2, 0::2] + full[1::2, 1::2] + 2) // 4
    difference = np.abs(frame.astype(int) - mean.astype(int))
    assert difference.max() <= 1
    assert (np.ptp(frame.reshape(-1, 3), axis=0) > 50).all()  # a real picture, not a flat one
    ys, xs = np.nonzero(np.any(frame != np.asarray(renderer.settings.background, np.uint8), axis=2))
    assert ys.mean() < height / 2 - 2 and xs.mean() < width / 2 - 2  # row 0 is the top of the picture
