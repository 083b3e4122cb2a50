"""Tests for render.custom_avatar: a researcher's mesh (glTF/GLB, or OBJ plus shape OBJs) and a YAML map from
arkit52 channels to its morph targets.

Meshes are written here by a small glTF writer of the test's own (numpy + json + struct) and by plain OBJ
text, so every expected vertex comes from the data written — base + weight × delta, converted to mm and
the platform's axes by hand — never from the code under test. The committed example
(docs/examples/custom_avatar) is checked against the script that generates it. Frames are 96 × 96 without
supersampling.
"""
from __future__ import annotations

import base64
import importlib.util
import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

from inference.layouts import ARKIT52, OPENFACE_AUS
from inference.motion import MotionClip
from render.custom_avatar import CustomAvatar, read_gltf
from render.offscreen import Renderer, RenderSettings, render_clip
from render.rig import RigError

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "custom_avatar"


def weights(**channels) -> np.ndarray:
    w = np.zeros(len(ARKIT52), np.float32)
    for name, value in channels.items():
        w[ARKIT52.index(name)] = value
    return w


def by_name(parts):
    return {p.name: p for p in parts}


# --- a tiny glTF writer ----------------------------------------------------------------------------------


def gltf_bytes(primitives, target_names, *, how="glb", bin_name="mesh.bin", nodes=None, sparse=False):
    """A glTF 2.0 file of one mesh. `primitives`: dicts of vertices [N, 3], faces [M, 3], targets (one
    [N, 3] delta per name), optional colour (an RGBA baseColorFactor) and vertex colours [N, 4].
    `how`: "glb" (embedded), "bin" (a .gltf and an external .bin, returned as a pair) or "data" (a .gltf
    with a base64 data: URI). `sparse` stores the targets as sparse accessors of their moved vertices."""
    blob, views, accessors = bytearray(), [], []

    def view(raw: bytes) -> int:
        blob.extend(b"\0" * (-len(blob) % 4))
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(raw)})
        blob.extend(raw)
        return len(views) - 1

    def accessor(array, component, kind, **extra) -> int:
        array = np.asarray(array)
        accessors.append({"bufferView": view(array.tobytes()), "componentType": component, "count": len(array),
                          "type": kind, **extra})
        return len(accessors) - 1

    def vec3(array) -> int:
        array = np.asarray(array, "<f4")
        return accessor(array, 5126, "VEC3", min=array.min(axis=0).tolist(), max=array.max(axis=0).tolist())

    mesh_primitives, materials = [], []
    for prim in primitives:
        attributes = {"POSITION": vec3(prim["vertices"])}
        if prim.get("vertex_colours") is not None:
            attributes["COLOR_0"] = accessor(np.asarray(prim["vertex_colours"], "<f4"), 5126, "VEC4")
        entry = {"attributes": attributes,
                 "indices": accessor(np.asarray(prim["faces"], "<u4").reshape(-1), 5125, "SCALAR")}
        targets = []
        for delta in prim["targets"]:
            delta = np.asarray(delta, "<f4")
            moved = np.flatnonzero(np.any(delta != 0, axis=1)).astype("<u4")
            if sparse and len(moved):
                targets.append({"POSITION": len(accessors)})
                accessors.append({"componentType": 5126, "count": len(delta), "type": "VEC3",
                                  "min": delta.min(axis=0).tolist(), "max": delta.max(axis=0).tolist(),
                                  "sparse": {"count": len(moved),
                                             "indices": {"bufferView": view(moved.tobytes()), "componentType": 5125},
                                             "values": {"bufferView": view(delta[moved].tobytes())}}})
            else:
                targets.append({"POSITION": vec3(delta)})
        if targets:
            entry["targets"] = targets
        if prim.get("colour") is not None:
            materials.append({"pbrMetallicRoughness": {"baseColorFactor": list(prim["colour"]), "metallicFactor": 0.0,
                                                       "roughnessFactor": 0.5}})
            entry["material"] = len(materials) - 1
        mesh_primitives.append(entry)
    blob.extend(b"\0" * (-len(blob) % 4))
    mesh = {"name": "Face", "primitives": mesh_primitives}
    if target_names is not None:
        mesh["extras"] = {"targetNames": list(target_names)}
    doc = {"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}],
           "nodes": nodes or [{"mesh": 0}], "meshes": [mesh], "accessors": accessors, "bufferViews": views,
           "buffers": [{"byteLength": len(blob)}]}
    if materials:
        doc["materials"] = materials
    if how == "bin":
        doc["buffers"][0]["uri"] = bin_name
        return json.dumps(doc).encode(), bytes(blob)
    if how == "data":
        doc["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(bytes(blob)).decode()
        return json.dumps(doc).encode()
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    body = struct.pack("<I4s", len(text), b"JSON") + text + struct.pack("<I4s", len(blob), b"BIN\0") + bytes(blob)
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


def box(size=0.2, centre=(0.0, 0.0, 0.0)):
    """A closed box (8 vertices, 12 triangles) in metres."""
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float) * size / 2
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return corners + np.asarray(centre), faces


def two_part_face():
    """Two primitives (a head box and a small 'eye' box in front) and two targets: Open moves the head's
    lower front corners down, Wink moves the eye's top corners down and the head's top front corners up."""
    head_v, head_f = box(0.2)
    eye_v, eye_f = box(0.03, centre=(0.05, 0.03, 0.12))
    open_head = np.zeros_like(head_v)
    open_head[(head_v[:, 1] < 0) & (head_v[:, 2] > 0)] = [0.0, -0.03, 0.01]
    wink_head = np.zeros_like(head_v)
    wink_head[(head_v[:, 1] > 0) & (head_v[:, 2] > 0)] = [0.0, 0.004, 0.0]
    wink_eye = np.zeros_like(eye_v)
    wink_eye[eye_v[:, 1] > 0.03] = [0.0, -0.025, 0.0]
    return [
        {"vertices": head_v, "faces": head_f, "targets": [open_head, wink_head], "colour": (0.7, 0.5, 0.4, 1.0)},
        {"vertices": eye_v, "faces": eye_f, "targets": [np.zeros_like(eye_v), wink_eye],
         "vertex_colours": np.tile([0.1, 0.1, 0.2, 1.0], (len(eye_v), 1))},
    ]


def write_avatar(folder: Path, config: dict, mesh_bytes: bytes | None = None, mesh_name="face.glb") -> Path:
    if mesh_bytes is not None:
        (folder / mesh_name).write_bytes(mesh_bytes)
    path = folder / "avatar.yaml"
    path.write_text(yaml.safe_dump({"mesh": mesh_name, **config}))
    return path


def obj_text(vertices, faces) -> str:
    lines = [f"v {x:.9g} {y:.9g} {z:.9g}" for x, y, z in vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def renderer():
    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    return Renderer(RenderSettings(width=96, height=96, supersample=1))


# --- the example ------------------------------------------------------------------------------------------


def load_example_script():
    spec = importlib.util.spec_from_file_location("make_custom_avatar_example", EXAMPLE / "make_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_glb_loads_with_its_three_primitives_and_morphs():
    avatar = CustomAvatar.from_yaml(EXAMPLE / "avatar.yaml")
    assert avatar.mapped_channels == ("eyeBlinkLeft", "eyeBlinkRight", "jawOpen")
    script = load_example_script()
    skin_v, _faces, skin_targets = script.skin()
    parts = by_name(avatar.pose_parts(weights(jawOpen=0.6)))
    assert list(parts) == ["Head/0", "Head/1", "Head/2"]
    # glTF is metres, y up, looking along +z: the platform's axes, in mm
    expected = (skin_v + 0.6 * skin_targets["JawOpen"]) * 1000.0
    assert np.allclose(parts["Head/0"].vertices, expected, atol=1e-3)
    assert not parts["Head/0"].static and not parts["Head/1"].static  # blinks move the eyes
    # the committed file is what the script writes now (up to the float rounding of its maths)
    committed = read_gltf(EXAMPLE / "head.glb")
    eye_v, _eye_f, eye_colours, eye_targets = script.eyes()
    mouth_v, _mouth_f, mouth_targets = script.mouth()
    for prim, v, targets in zip(committed, (skin_v, eye_v, mouth_v), (skin_targets, eye_targets, mouth_targets)):
        assert np.allclose(prim.vertices, v, atol=1e-6)
        assert set(prim.targets) == set(script.TARGET_NAMES)
        assert all(np.allclose(prim.targets[name], targets[name], atol=1e-6) for name in script.TARGET_NAMES)
    assert np.allclose(committed[1].color, eye_colours, atol=1e-6)


def test_the_example_renders_and_opening_the_jaw_changes_the_frame(renderer):
    avatar = CustomAvatar.from_yaml(EXAMPLE / "avatar.yaml")
    background = np.array(renderer.settings.background, np.uint8)
    neutral = renderer.render(avatar.pose_parts(weights()), look_at=avatar.look_at())
    assert (neutral != background).any(axis=2).mean() > 0.2  # the head fills a good part of the frame
    opened = renderer.render(avatar.pose_parts(weights(jawOpen=1.0)), look_at=avatar.look_at())
    changed = np.abs(opened.astype(int) - neutral.astype(int)).max(axis=2) > 30
    rows = np.flatnonzero(changed.any(axis=1))
    assert changed.sum() > 20
    assert rows.min() > 96 // 2  # the mouth and chin, in the lower half
    blink = renderer.render(avatar.pose_parts(weights(eyeBlinkLeft=1.0)), look_at=avatar.look_at())
    columns = np.flatnonzero((np.abs(blink.astype(int) - neutral.astype(int)).max(axis=2) > 30).any(axis=0))
    assert columns.min() > 96 // 2  # the subject's left eye is on the viewer's right


def test_a_clip_plays_through_render_clip(renderer):
    avatar = CustomAvatar.from_yaml(EXAMPLE / "avatar.yaml")
    values = np.stack([weights(), weights(jawOpen=1.0)])
    clip = MotionClip(fps=25, layout="arkit52", values=values)
    frames = list(render_clip(avatar, clip, renderer.settings))
    assert len(frames) == 2 and frames[0].shape == (96, 96, 3)
    assert not np.array_equal(frames[0], frames[1])


# --- morphs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["glb", "bin", "data", "sparse"])
def test_weights_move_exactly_the_deltas_vertices_by_weight_times_delta(tmp_path, how):
    prims = two_part_face()
    data = gltf_bytes(prims, ["Open", "Wink"], how="bin" if how == "bin" else "data" if how == "data" else "glb",
                      sparse=how == "sparse")
    name = "face.gltf" if how in ("bin", "data") else "face.glb"
    if how == "bin":
        (tmp_path / "mesh.bin").write_bytes(data[1])
        data = data[0]
    path = write_avatar(tmp_path, {"units": "m", "morphs": {
        "jawOpen": "Open",
        "eyeBlinkLeft": {"target": "Wink", "weight": 0.5},
        "eyeSquintLeft": [{"target": "Wink", "weight": 0.25}, "Open"],
    }}, data, name)
    avatar = CustomAvatar.from_yaml(path)
    (head_open, head_wink), (_, eye_wink) = prims[0]["targets"], prims[1]["targets"]

    posed = by_name(avatar.pose_parts(weights(jawOpen=0.4, eyeBlinkLeft=2.0, eyeSquintLeft=0.2)))
    open_w = 0.4 + 0.2             # jawOpen, and eyeSquintLeft through its second entry
    wink_w = 1.0 * 0.5 + 0.2 * 0.25  # eyeBlinkLeft clipped to 1, times its map weight; eyeSquintLeft × 0.25
    head = (prims[0]["vertices"] + open_w * head_open + wink_w * head_wink) * 1000.0
    eye = (prims[1]["vertices"] + wink_w * eye_wink) * 1000.0
    assert np.allclose(posed["Face/0"].vertices, head, atol=1e-3)
    assert np.allclose(posed["Face/1"].vertices, eye, atol=1e-3)
    rest = by_name(avatar.pose_parts(weights()))
    moved = np.any(np.abs(posed["Face/1"].vertices - rest["Face/1"].vertices) > 1e-6, axis=1)
    assert np.array_equal(moved, np.any(eye_wink != 0, axis=1))  # exactly the delta's vertices
    assert np.allclose(rest["Face/0"].vertices, prims[0]["vertices"] * 1000.0)
    # colours: the material's baseColorFactor, and COLOR_0 per vertex
    assert np.allclose(rest["Face/0"].color, (0.7, 0.5, 0.4, 1.0))
    assert np.asarray(rest["Face/1"].color).shape == (8, 4)
    assert np.allclose(np.asarray(rest["Face/1"].color)[:, :3], (0.1, 0.1, 0.2))


def test_a_primitive_that_no_mapped_morph_moves_is_static_and_keeps_its_arrays(tmp_path):
    prims = two_part_face()
    path = write_avatar(tmp_path, {"morphs": {"jawOpen": "Open"}}, gltf_bytes(prims, ["Open", "Wink"]))
    avatar = CustomAvatar.from_yaml(path)
    first, second = (by_name(avatar.pose_parts(weights(jawOpen=w))) for w in (0.0, 1.0))
    assert first["Face/1"].static and first["Face/1"].vertices is second["Face/1"].vertices
    assert not first["Face/0"].static


def test_vertices_split_only_for_a_seam_are_merged(tmp_path):
    head_v, head_f = box(0.2)
    seam_v = np.vstack([head_v, head_v[:1]])           # vertex 8 repeats vertex 0 (as a UV seam would)
    seam_f = head_f.copy()
    seam_f[0, 0] = 8
    delta = np.zeros_like(seam_v)
    delta[[0, 8]] = [0.0, -0.01, 0.0]
    path = write_avatar(tmp_path, {"morphs": {"jawOpen": "Open"}},
                        gltf_bytes([{"vertices": seam_v, "faces": seam_f, "targets": [delta]}], ["Open"]))
    part = CustomAvatar.from_yaml(path).pose_parts(weights(jawOpen=1.0))[0]
    assert len(part.vertices) == 8 and np.array_equal(part.faces, head_f)
    assert np.allclose(part.vertices, (head_v + delta[:8]) * 1000.0)


def test_node_transforms_are_applied(tmp_path):
    v, f = box(20.0)  # centimetres, inside a node that scales by 0.01 and moves up 0.1
    delta = np.zeros_like(v)
    delta[0] = [0.0, -5.0, 0.0]
    nodes = [{"children": [1], "translation": [0.0, 0.1, 0.0]}, {"mesh": 0, "scale": [0.01, 0.01, 0.01]}]
    path = write_avatar(tmp_path, {"morphs": {"jawOpen": "Open"}},
                        gltf_bytes([{"vertices": v, "faces": f, "targets": [delta]}], ["Open"], nodes=nodes))
    part = CustomAvatar.from_yaml(path).pose_parts(weights(jawOpen=1.0))[0]
    assert np.allclose(part.vertices, ((v + delta) * 0.01 + [0.0, 0.1, 0.0]) * 1000.0)


# --- OBJ, units and axes -------------------------------------------------------------------------------------


def test_an_obj_in_metres_with_z_up_ends_up_in_mm_with_y_up(tmp_path):
    v, f = box(0.2)
    v = v * [0.8, 1.0, 1.2]  # 0.16 wide (x), 0.2 deep (y), 0.24 tall (z): z is up
    jaw = v.copy()
    chin = (v[:, 2] < 0) & (v[:, 1] < 0)  # the face looks along -y
    jaw[chin] += [0.0, 0.0, -0.03]
    (tmp_path / "neutral.obj").write_text(obj_text(v, f))
    (tmp_path / "jaw.obj").write_text(obj_text(jaw, f))
    path = write_avatar(tmp_path, {"units": "m", "up": "z", "front": "-y", "shapes": {"JawOpen": "jaw.obj"},
                                   "morphs": {"jawOpen": "JawOpen"}}, mesh_name="neutral.obj")
    avatar = CustomAvatar.from_yaml(path)

    def platform(p):  # file (x, y, z) → platform (x, z, -y), metres → mm
        return np.column_stack([p[:, 0], p[:, 2], -p[:, 1]]) * 1000.0

    rest = avatar.pose_parts(weights())[0]
    assert np.allclose(rest.vertices, platform(v), atol=1e-3)
    extent = rest.vertices.max(axis=0) - rest.vertices.min(axis=0)
    assert np.allclose(extent, [160.0, 240.0, 200.0], atol=1e-3)  # tallest along y now
    half = avatar.pose_parts(weights(jawOpen=0.5))[0]
    assert np.allclose(half.vertices, platform(v + 0.5 * (jaw - v)), atol=1e-3)
    moved = half.vertices - rest.vertices
    assert np.allclose(moved[chin], [0.0, -15.0, 0.0], atol=1e-3)  # the chin drops 15 mm in platform y
    # default framing: the bounds' centre, a little more than the mesh's height
    centre, height = avatar.look_at()
    assert np.allclose(centre, 0.0, atol=1e-3) and 240.0 < height < 400.0


@pytest.mark.parametrize("units,scale", [("cm", 10.0), ("mm", 1.0)])
def test_units_scale_the_mesh_and_the_yaml_lengths(tmp_path, units, scale):
    v, f = box(250.0 / scale)
    (tmp_path / "head.obj").write_text(obj_text(v, f))
    path = write_avatar(tmp_path, {"units": units, "neck_pivot": [0.0, -100.0 / scale, 0.0],
                                   "look_at": {"centre": [0.0, 10.0 / scale, 0.0], "height": 300.0 / scale}},
                        mesh_name="head.obj")
    avatar = CustomAvatar.from_yaml(path)
    assert np.allclose(avatar.pose_parts(weights())[0].vertices, v * scale, atol=1e-3)
    assert np.allclose(avatar.neck_pivot, [0.0, -100.0, 0.0])
    centre, height = avatar.look_at()
    assert np.allclose(centre, [0.0, 10.0, 0.0]) and math.isclose(height, 300.0)


# --- head pose ----------------------------------------------------------------------------------------------


def test_the_head_pose_turns_the_mesh_about_the_neck_pivot(tmp_path):
    v, f = box(0.2)
    path = write_avatar(tmp_path, {"neck_pivot": [0.0, -0.1, -0.05]}, gltf_bytes([{"vertices": v, "faces": f,
                                                                                    "targets": []}], None))
    avatar = CustomAvatar.from_yaml(path)
    pivot = np.array([0.0, -100.0, -50.0])
    assert np.allclose(avatar.neck_pivot, pivot)

    def place(pose, point):
        transform = avatar.pose_parts(weights(), np.asarray(pose, float))[0].transform
        return transform[:3, :3] @ point + transform[:3, 3]

    nose = pivot + [0.0, 0.0, 100.0]
    a = math.radians(20.0)
    # positive rx nods the nose down: about the pivot, the point in front of it goes down and back
    assert np.allclose(place([20, 0, 0, 0, 0, 0], nose), pivot + [0.0, -100 * math.sin(a), 100 * math.cos(a)],
                       atol=1e-3)
    # positive ry turns the nose to the subject's left (+x)
    assert np.allclose(place([0, 20, 0, 0, 0, 0], nose), pivot + [100 * math.sin(a), 0.0, 100 * math.cos(a)],
                       atol=1e-3)
    assert np.allclose(place([10, -30, 5, 0, 0, 0], pivot), pivot, atol=1e-3)  # the pivot stays put
    assert np.allclose(place([0, 0, 0, 5, -7, 9], nose), nose + [5, -7, 9], atol=1e-3)


def test_the_default_pivot_lies_below_the_middle_of_the_mesh(tmp_path):
    v, f = box(0.2, centre=(0.01, 0.02, 0.03))
    path = write_avatar(tmp_path, {}, gltf_bytes([{"vertices": v, "faces": f, "targets": []}], None))
    pivot = CustomAvatar.from_yaml(path).neck_pivot
    assert np.allclose(pivot[[0, 2]], [10.0, 30.0]) and -80.0 < pivot[1] < 20.0


# --- clips --------------------------------------------------------------------------------------------------


def test_clips_are_taken_like_the_avatar_takes_them(tmp_path):
    avatar = CustomAvatar.from_yaml(EXAMPLE / "avatar.yaml")
    au = np.zeros((3, len(OPENFACE_AUS)), np.float32)
    au[:, OPENFACE_AUS.index("AU26")] = 5.0  # jaw drop
    prepared = avatar.prepare(MotionClip(fps=25, layout="openface_au", values=au))
    assert prepared.layout == "arkit52" and prepared.head_pose.shape == (3, 6)
    assert prepared.values[0, ARKIT52.index("jawOpen")] > 0.3
    motors = MotionClip(fps=25, layout="motors:sim-face", values=np.zeros((3, 2)), channels=("jaw", "brow"))
    with pytest.raises(RigError, match="no retargeting"):
        avatar.prepare(motors)
    with pytest.raises(RigError, match="0..1"):
        avatar.prepare(MotionClip(fps=25, layout="arkit52", values=np.full((2, len(ARKIT52)), 4.0)))
    with pytest.raises(RigError, match="outside"):
        avatar.parts(prepared, 3)
    with pytest.raises(RigError, match="prepare"):
        avatar.parts(MotionClip(fps=25, layout="arkit52", values=np.zeros((2, len(ARKIT52)))), 0)


# --- refused input ------------------------------------------------------------------------------------------


def _face_glb(**kwargs) -> bytes:
    return gltf_bytes(two_part_face(), ["Open", "Wink"], **kwargs)


def _bad_vertex_count() -> bytes:
    prims = two_part_face()
    prims[0]["targets"][0] = prims[0]["targets"][0][:5]
    return gltf_bytes(prims, ["Open", "Wink"])


def _nan_vertex() -> bytes:
    prims = two_part_face()
    prims[1]["vertices"] = prims[1]["vertices"].copy()
    prims[1]["vertices"][3, 1] = np.nan
    return gltf_bytes(prims, ["Open", "Wink"])


BAD = {
    "missing mesh": ({"morphs": {"jawOpen": "Open"}}, None, "face.glb", r"mesh: .*face\.glb does not exist"),
    "unknown key": ({"morph": {"jawOpen": "Open"}}, _face_glb, "face.glb",
                    r"morph: unknown key \(did you mean 'morphs'\?\)"),
    "not arkit": ({"morphs": {"jawopen": "Open"}}, _face_glb, "face.glb",
                  r"morphs\.jawopen: 'jawopen' is not an ARKit52 channel \(did you mean 'jawOpen'\?\)"),
    "not arkit, close": ({"morphs": {"eyeBlinkLeftt": "Wink"}}, _face_glb, "face.glb", r"did you mean 'eyeBlinkLeft'"),
    "morph not in mesh": ({"morphs": {"jawOpen": "Opn"}}, _face_glb, "face.glb",
                          r"morphs\.jawOpen: face\.glb has no morph target 'Opn' \(did you mean 'Open'\?\); "
                          r"it has: Open, Wink"),
    "vertex count": ({"morphs": {"jawOpen": "Open"}}, _bad_vertex_count, "face.glb",
                     r"face\.glb: .*morph target 'Open' has 5 vertices but the base mesh has 8"),
    "nan": ({}, _nan_vertex, "face.glb", r"face\.glb: mesh 'Face' primitive 1 has 1 vertex with NaN"),
    "file type": ({}, lambda: b"Kaydara FBX Binary", "face.fbx", r"mesh: unsupported file type '\.fbx'"),
    "not a gltf": ({}, lambda: b"\x00\x01binary junk", "face.glb", r"face\.glb: not a glTF file"),
    "truncated glb": ({}, lambda: _face_glb()[:200], "face.glb", r"face\.glb: truncated GLB"),
    "units": ({"units": "mm"}, _face_glb, "face.glb",
              r"units: with units: mm the mesh is 0\.2\d* mm across, not head-sized; is it in m\? \(set units: m\)"),
    "axes": ({"up": "z", "front": "-z"}, _face_glb, "face.glb", r"front: -z lies along the up axis z"),
    "bad axis": ({"up": "upwards"}, _face_glb, "face.glb", r"up: must be one of x, y, z"),
    "shapes with glb": ({"shapes": {"A": "a.obj"}}, _face_glb, "face.glb", r"shapes: is for OBJ meshes"),
    "weight": ({"morphs": {"jawOpen": {"target": "Open", "weight": "lots"}}}, _face_glb, "face.glb",
               r"morphs\.jawOpen\.weight: must be a finite number"),
    "morph entry key": ({"morphs": {"jawOpen": {"target": "Open", "wieght": 1}}}, _face_glb, "face.glb",
                        r"morphs\.jawOpen\.wieght: unknown key \(did you mean 'weight'\?\)"),
    "colour": ({"color": [200, 150, 120]}, _face_glb, "face.glb", r"color: components must lie in 0\.\.1"),
    "pivot far away": ({"neck_pivot": [0, -80, -50]}, _face_glb, "face.glb", r"neck_pivot: lies .* mm from the mesh"),
    "look_at": ({"look_at": {"center": [0, 0, 0], "height": 0.3}}, _face_glb, "face.glb",
                r"look_at\.center: unknown key \(did you mean 'centre'\?\)"),
    "external bin missing": ({}, lambda: _face_glb(how="bin")[0], "face.gltf", r"mesh\.bin does not exist"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_naming_the_file_and_the_problem(tmp_path, case):
    config, make, name, message = BAD[case]
    path = write_avatar(tmp_path, config, make() if make else None, name)
    with pytest.raises(RigError, match=message) as caught:
        CustomAvatar.from_yaml(path)
    assert str(tmp_path) in str(caught.value)  # the YAML file or the mesh file, by path


def test_obj_shapes_must_repeat_the_neutral_mesh(tmp_path):
    v, f = box(0.2)
    (tmp_path / "neutral.obj").write_text(obj_text(v, f))
    (tmp_path / "fewer.obj").write_text(obj_text(v[:7], f[f.max(axis=1) < 7]))
    (tmp_path / "rewired.obj").write_text(obj_text(v, f[:, [1, 0, 2]]))
    (tmp_path / "nan.obj").write_text(obj_text(v, f).replace("v -0.1 -0.1 -0.1", "v nan -0.1 -0.1", 1))

    def attempt(shapes, morphs=None):
        path = write_avatar(tmp_path, {"shapes": shapes, "morphs": morphs or {}}, mesh_name="neutral.obj")
        return CustomAvatar.from_yaml(path)

    with pytest.raises(RigError, match=r"fewer\.obj: shape 'A' has 7 vertices but the neutral mesh neutral\.obj has 8"):
        attempt({"A": "fewer.obj"})
    with pytest.raises(RigError, match=r"rewired\.obj: shape 'B' joins its vertices into different faces"):
        attempt({"B": "rewired.obj"})
    with pytest.raises(RigError, match=r"nan\.obj: .*NaN"):
        attempt({"C": "nan.obj"})
    with pytest.raises(RigError, match=r"shapes\.D: .*missing\.obj does not exist"):
        attempt({"D": "missing.obj"})
    with pytest.raises(RigError, match=r"neutral\.obj has no shape 'Smile'; it has: none"):
        attempt({}, {"mouthSmileLeft": "Smile"})


def test_invalid_yaml_is_refused_with_its_line(tmp_path):
    path = tmp_path / "avatar.yaml"
    path.write_text("mesh: face.glb\nmorphs:\n  jawOpen: [Open\n")
    with pytest.raises(RigError, match=r"avatar\.yaml: not valid YAML at line \d+"):
        CustomAvatar.from_yaml(path)
    with pytest.raises(RigError, match="does not exist"):
        CustomAvatar.from_yaml(tmp_path / "nothing.yaml")
