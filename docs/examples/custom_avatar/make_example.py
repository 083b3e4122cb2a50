"""Writes `head.glb`, the tiny example mesh that `avatar.yaml` in this folder turns into a custom avatar.

A low-poly stylised head, procedurally generated with numpy and written as glTF 2.0 (GLB) with json and
struct alone, so nothing is downloaded and the file can be written again at any time:

    python docs/examples/custom_avatar/make_example.py

It is one mesh ("Head") of three primitives, each with its own material, and three morph targets whose
names are in `mesh.extras.targetNames`, as Blender's glTF exporter writes shape keys:

- skin: an ellipsoid narrowed towards the chin, with a nose; `JawOpen` drops the chin about a hinge;
- eyes: two eyeballs, white with a dark iris in their vertex colours (COLOR_0); `Blink_L` / `Blink_R`
  flatten the subject's left / right eye (at +x / −x) to a closed slit;
- mouth: a dark lens on the lips' line; `JawOpen` opens it.

glTF conventions: metres, +y up, the face looks along +z, so +x is the subject's left (the viewer's right).
"""
from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TARGET_NAMES = ["JawOpen", "Blink_L", "Blink_R"]
HEAD_RADII = np.array([0.075, 0.105, 0.092])     # metres: half width, half height, half depth
NOSE_DIRECTION = np.array([0.0, -0.22, 1.0])
EYE_X, EYE_Y = 0.031, 0.016                       # the subject's left eye is at +x
EYE_RADIUS = 0.0135
MOUTH_Y = -0.05
MOUTH_RADII = np.array([0.021, 0.003, 0.006])
JAW_HINGE = np.array([0.0, -0.015, -0.01])
JAW_DEGREES = 16.0


def _srgb_to_linear(rgb) -> list[float]:
    c = np.asarray(rgb, float) / 255.0
    return [round(float(x), 4) for x in np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)]


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def sphere(rings: int, segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-sphere points (one vertex per pole, no seam duplicates; segment 0 faces +z) and triangles
    wound counter-clockwise seen from outside."""
    points = [(0.0, 1.0, 0.0)]
    for i in range(1, rings):
        theta = math.pi * i / rings
        for j in range(segments):
            phi = 2.0 * math.pi * j / segments
            points.append((math.sin(theta) * math.sin(phi), math.cos(theta), math.sin(theta) * math.cos(phi)))
    points.append((0.0, -1.0, 0.0))
    bottom = len(points) - 1

    def ring(i: int, j: int) -> int:
        return 1 + (i - 1) * segments + j % segments

    faces = []
    for j in range(segments):
        faces.append((0, ring(1, j), ring(1, j + 1)))
        faces.append((bottom, ring(rings - 1, j + 1), ring(rings - 1, j)))
    for i in range(1, rings - 1):
        for j in range(segments):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            faces += [(a, c, b), (b, c, d)]
    return np.array(points), np.array(faces)


def _rotation_x(degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    return np.array([[1.0, 0.0, 0.0], [0.0, math.cos(a), -math.sin(a)], [0.0, math.sin(a), math.cos(a)]])


def _shape(unit: np.ndarray) -> np.ndarray:
    """The head's surface point for each unit direction [N, 3] from its centre."""
    v = unit * HEAD_RADII
    # narrower towards the chin, a little flatter at the back
    v[:, 0] *= 1.0 - 0.22 * _smoothstep(-0.1, -1.0, unit[:, 1])
    v[:, 2] *= 1.0 - 0.12 * _smoothstep(0.0, -1.0, unit[:, 2])
    # the nose: a bump pushed out along +z round the direction just below eye level
    towards_nose = unit @ (NOSE_DIRECTION / np.linalg.norm(NOSE_DIRECTION))
    v[:, 2] += 0.02 * np.exp(-((1.0 - towards_nose) / 0.03) ** 2)
    return v


def surface_z(x: float, y: float) -> float:
    """Depth (z) of the front of the face at (x, y): bisection on the sideways part of the direction."""
    unit_y = float(np.clip(y / HEAD_RADII[1], -0.999, 0.999))
    ring = math.sqrt(1.0 - unit_y ** 2)

    def point(sideways: float) -> np.ndarray:  # sideways in -1..1 goes round the front half of the ring
        unit = np.array([[sideways * ring, unit_y, ring * math.sqrt(max(0.0, 1.0 - sideways ** 2))]])
        return _shape(unit)[0]

    lo, hi = -1.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if point(mid)[0] < x else (lo, mid)
    return float(point(lo)[2])


def skin() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    unit, faces = sphere(rings=20, segments=28)
    v = _shape(unit)
    # JawOpen: the lower front of the face turns about the hinge, chin down and back
    below_mouth = _smoothstep(MOUTH_Y + 0.003, MOUTH_Y - 0.012, v[:, 1])
    in_front = _smoothstep(-0.03, 0.03, v[:, 2])
    weight = below_mouth * in_front
    turned = (v - JAW_HINGE) @ _rotation_x(JAW_DEGREES).T + JAW_HINGE
    jaw = (turned - v) * weight[:, None]
    zero = np.zeros_like(v)
    return v, faces, {"JawOpen": jaw, "Blink_L": zero, "Blink_R": zero}


def eyes() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    unit, faces = sphere(rings=10, segments=16)
    unit = unit @ _rotation_x(90.0).T  # poles along z: the iris is a clean cap round the front pole
    vertices, all_faces, colours, blinks = [], [], [], {}
    iris = _smoothstep(0.80, 0.83, unit[:, 2])
    pupil = _smoothstep(0.95, 0.96, unit[:, 2])
    sclera, iris_rgb, pupil_rgb = (np.array(_srgb_to_linear(c)) for c in ((236, 232, 226), (86, 60, 40), (12, 10, 10)))
    rgb = sclera * (1 - iris[:, None]) + iris_rgb * iris[:, None]
    rgb = rgb * (1 - pupil[:, None]) + pupil_rgb * pupil[:, None]
    centres = [np.array([x, EYE_Y, surface_z(x, EYE_Y) - 0.55 * EYE_RADIUS]) for x in (EYE_X, -EYE_X)]
    for k, centre in enumerate(centres):
        vertices.append(unit * EYE_RADIUS + centre)
        all_faces.append(faces + k * len(unit))
        colours.append(np.hstack([rgb, np.ones((len(unit), 1))]))
    v = np.vstack(vertices)
    n = len(unit)
    for name, k in (("Blink_L", 0), ("Blink_R", 1)):
        delta = np.zeros_like(v)
        eye = slice(k * n, (k + 1) * n)
        # flatten the eyeball to a slit just below its middle: a closed lid line
        delta[eye, 1] = (EYE_Y - 0.002 - v[eye, 1]) * 0.9
        blinks[name] = delta
    return v, np.vstack(all_faces), np.vstack(colours), {"JawOpen": np.zeros_like(v), **blinks}


def mouth() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A flat lens on the lips' line that follows the curve of the face; JawOpen opens it downwards."""
    unit, faces = sphere(rings=8, segments=20)
    v = unit * MOUTH_RADII
    v[:, 1] += MOUTH_Y
    v[:, 2] += np.array([surface_z(x, MOUTH_Y) for x in v[:, 0]]) - 0.6 * MOUTH_RADII[2]
    opened = v.copy()
    below = unit[:, 1] < 0
    opened[:, 1] = MOUTH_Y - 0.006 + (v[:, 1] - MOUTH_Y) * 4.5
    opened[below, 2] -= 0.004 * -unit[below, 1]
    zero = np.zeros_like(v)
    return v, faces, {"JawOpen": opened - v, "Blink_L": zero, "Blink_R": zero}


class _Blob:
    """The binary buffer and the accessors and buffer views that describe it."""

    def __init__(self):
        self.data = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def add(self, array: np.ndarray, component: int, kind: str, target: int | None = None,
            bounds: bool = False) -> int:
        while len(self.data) % 4:
            self.data.append(0)
        raw = np.ascontiguousarray(array).tobytes()
        view = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(raw)}
        if target is not None:
            view["target"] = target
        self.views.append(view)
        self.data += raw
        accessor = {"bufferView": len(self.views) - 1, "componentType": component, "count": int(len(array)),
                    "type": kind}
        if bounds:
            accessor["min"] = [round(float(x), 7) for x in array.min(axis=0)]
            accessor["max"] = [round(float(x), 7) for x in array.max(axis=0)]
        self.accessors.append(accessor)
        return len(self.accessors) - 1


def _primitive(blob: _Blob, v, faces, targets, material: int, colours=None) -> dict:
    float_, ushort, array_buffer, element_buffer = 5126, 5123, 34962, 34963
    attributes = {"POSITION": blob.add(v.astype("<f4"), float_, "VEC3", array_buffer, bounds=True)}
    if colours is not None:
        attributes["COLOR_0"] = blob.add(colours.astype("<f4"), float_, "VEC4", array_buffer)
    primitive = {"attributes": attributes, "material": material, "mode": 4,
                 "indices": blob.add(faces.reshape(-1).astype("<u2"), ushort, "SCALAR", element_buffer)}
    primitive["targets"] = [{"POSITION": blob.add(targets[name].astype("<f4"), float_, "VEC3", array_buffer,
                                                  bounds=True)} for name in TARGET_NAMES]
    return primitive


def _material(name: str, rgb, roughness: float) -> dict:
    return {"name": name, "pbrMetallicRoughness": {"baseColorFactor": [*rgb, 1.0], "metallicFactor": 0.0,
                                                   "roughnessFactor": roughness}}


def build_glb() -> bytes:
    blob = _Blob()
    skin_v, skin_f, skin_t = skin()
    eye_v, eye_f, eye_c, eye_t = eyes()
    mouth_v, mouth_f, mouth_t = mouth()
    primitives = [
        _primitive(blob, skin_v, skin_f, skin_t, material=0),
        _primitive(blob, eye_v, eye_f, eye_t, material=1, colours=eye_c),
        _primitive(blob, mouth_v, mouth_f, mouth_t, material=2),
    ]
    while len(blob.data) % 4:
        blob.data.append(0)
    document = {
        "asset": {"version": "2.0", "generator": "docs/examples/custom_avatar/make_example.py"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"name": "Head", "mesh": 0}],
        "meshes": [{"name": "Head", "primitives": primitives, "weights": [0.0] * len(TARGET_NAMES),
                    "extras": {"targetNames": TARGET_NAMES}}],
        "materials": [_material("Skin", _srgb_to_linear((224, 172, 144)), 0.6),
                      _material("Eye", [1.0, 1.0, 1.0], 0.3),
                      _material("Mouth", _srgb_to_linear((96, 28, 34)), 0.5)],
        "accessors": blob.accessors,
        "bufferViews": blob.views,
        "buffers": [{"byteLength": len(blob.data)}],
    }
    text = json.dumps(document, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<I4s", len(text), b"JSON") + text + struct.pack("<I4s", len(blob.data), b"BIN\0")
    chunks += bytes(blob.data)
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


def write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


if __name__ == "__main__":
    target = HERE / "head.glb"
    data = build_glb()
    write_atomically(target, data)
    print(f"wrote {target} ({len(data)} bytes)")
