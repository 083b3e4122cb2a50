"""A researcher's own avatar: a mesh with morph targets (glTF/GLB, or an OBJ plus one OBJ per shape) and a
map from `arkit52` channels to its morph targets, declared in a small YAML file:

    mesh: head.glb            # .glb / .gltf, or head.obj (neutral) with shapes: {JawOpen: jaw_open.obj, ...}
    units: m                  # m | cm | mm: the mesh's length unit (the platform works in mm); default m
    up: y                     # the file's up axis: x | y | z | -x | -y | -z; default y
    front: z                  # the axis the face looks along; default z (glTF's convention)
    color: [0.8, 0.6, 0.5]    # linear RGB 0..1 for primitives without vertex colours or a material colour
    morphs:                   # arkit52 channel → morph target (glTF) or shape (OBJ); a weight may scale it
      jawOpen: JawOpen
      eyeBlinkLeft: {target: Blink_L, weight: 1.0}
      mouthSmileLeft: [Smile_L, {target: Cheek_L, weight: 0.5}]   # several targets
    neck_pivot: [0, -0.08, -0.05]                 # file units and axes; default: see below
    look_at: {centre: [0, 0.02, 0], height: 0.3}  # framing in file units; default: the mesh's bounds

Relative paths are relative to the YAML file. `CustomAvatar.from_yaml(path)` builds the rig; every
mistake is a RigError naming the file and the key (a channel that is not an ARKit52 name, with the closest
one; a morph name the mesh lacks, with the names it has; a missing file; an unknown key...).

Posing a frame (`parts`): each primitive's vertices are base + Σ weight × delta over the mapped channels
(clip weights clipped to 0..1, times the map's weight), in millimetres and the platform's axes (x to the
viewer's right, y up, z towards the camera); the whole mesh then turns and moves by the clip's head pose
about `neck_pivot` with the convention of render/avatar.py (`head_transform`). One Part per primitive;
primitives no mapped morph moves are static. The default neck pivot is the centre of the mesh's bounds in
x and z, a fifth of its height above its bottom. Clips are taken as the built-in Avatar takes them: arkit52
as is, other layouts through `inference.motion.retarget`.

glTF/GLB is read here with numpy (trimesh, which pyrender brings, does not read morph targets): every mesh
instanced in the default scene, with its node transforms (a skinned mesh is drawn in its bind pose, the
skin ignored), all primitives (triangles, strips, fans), their morph targets' POSITION deltas (sparse
accessors too), target names from `mesh.extras.targetNames` (else `target0`, `target1`, ...), an embedded
GLB buffer, an external .bin or a data: URI. Colour per primitive: COLOR_0 (× the material's
baseColorFactor), else the baseColorFactor of an untextured material, else `color`; textures are ignored
(a textured material takes `color`), as are animations, cameras and lights. Draco/meshopt-compressed files
are refused. OBJ is read with trimesh (`process=False`, order kept); shapes must repeat the neutral mesh's
vertices and faces; colours come from OBJ vertex colours or `color` (.mtl files are ignored).

Vertices that a file duplicates only for a texture seam (same position, same morph deltas, same colour)
are merged, so the renderer's smooth normals show no seam.
"""
from __future__ import annotations

import base64
import difflib
import json
import math
import struct
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from inference.layouts import ARKIT52
from inference.motion import MotionClip
from render.avatar import HEAD_PIVOT
from render.avatar import head_transform as avatar_head_transform
from render.rig import Part, Rig, RigError, arkit52_performance

YAML_KEYS = ("mesh", "shapes", "units", "up", "front", "color", "morphs", "neck_pivot", "look_at")
MESH_SUFFIXES = (".glb", ".gltf", ".obj")
UNIT_MM = {"m": 1000.0, "cm": 10.0, "mm": 1.0}
AXES = {"x": (0, 1.0), "y": (1, 1.0), "z": (2, 1.0), "-x": (0, -1.0), "-y": (1, -1.0), "-z": (2, -1.0)}
DEFAULT_COLOR = (0.76, 0.42, 0.30)  # linear RGB of a light skin tone (sRGB 226, 174, 146, as the avatar's)
MESH_SIZE_MM = (40.0, 4000.0)       # a head is about 250 mm; outside this the units are surely wrong
LOOK_AT_MARGIN = 1.2                # framed height over the mesh's own height, by default


# --- the mesh as read from a file (file units and axes) --------------------------------------------------


@dataclass
class MeshPrimitive:
    """One primitive (a mesh with one material) as read from a file, in the file's units and axes, with
    its node transform applied. `targets` maps morph names to per-vertex position deltas; `color` is a
    linear RGBA [4] or [N, 4], or None where the file gives none."""

    name: str
    vertices: np.ndarray                   # [N, 3] float64
    faces: np.ndarray                      # [M, 3] int64
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    color: np.ndarray | None = None
    metallic: float | None = None
    roughness: float | None = None


def _fail(source: Path | str, key: str | None, message: str) -> RigError:
    where = f"{source}: {key}: " if key else f"{source}: "
    return RigError(where + message)


def _closest(name: str, choices) -> str:
    """' (did you mean X?)' for the choice most like `name`, ignoring case, or ''."""
    lowered = {c.lower(): c for c in choices}
    if name.lower() in lowered:
        return f" (did you mean {lowered[name.lower()]!r}?)"
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[match[0]]!r}?)" if match else ""


def _check_finite(array: np.ndarray, source: Path, what: str) -> None:
    if not np.all(np.isfinite(array)):
        bad = int((~np.isfinite(array.reshape(len(array), -1))).any(axis=1).sum())
        raise _fail(source, None, f"{what} has {bad} {'vertex' if bad == 1 else 'vertices'} with NaN or infinite "
                                  f"values; fix or re-export the mesh")


# --- glTF ------------------------------------------------------------------------------------------------

_COMPONENTS = {5120: "<i1", 5121: "<u1", 5122: "<i2", 5123: "<u2", 5125: "<u4", 5126: "<f4"}
_WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
_GLB_MAGIC, _JSON_CHUNK, _BIN_CHUNK = b"glTF", b"JSON", b"BIN\0"
_COMPRESSIONS = {"KHR_draco_mesh_compression": "Draco", "EXT_meshopt_compression": "meshopt",
                 "KHR_meshopt_compression": "meshopt"}


class _Gltf:
    """A glTF 2.0 document and its buffers, with checked access to accessors."""

    def __init__(self, path: Path):
        self.path = path
        raw = path.read_bytes()
        binary_chunk: bytes | None = None
        if raw[:4] == _GLB_MAGIC:
            document_bytes, binary_chunk = self._split_glb(raw)
        else:
            document_bytes = raw
        try:
            self.doc = json.loads(document_bytes.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self.error(f"not a glTF file: its JSON does not parse ({exc})") from None
        if not isinstance(self.doc, dict):
            raise self.error("not a glTF file: the JSON is not an object")
        version = str(self.doc.get("asset", {}).get("version", ""))
        if not version.startswith("2."):
            raise self.error(f"glTF {version or 'without an asset.version'} is not supported; export glTF 2.0")
        for extension in self.doc.get("extensionsRequired", []):
            if extension in _COMPRESSIONS:
                raise self.error(f"the file is {_COMPRESSIONS[extension]}-compressed ({extension}), which this "
                                 f"reader does not decode; export it without mesh compression")
        self._binary_chunk = binary_chunk
        self._buffers: dict[int, bytes] = {}

    def error(self, message: str) -> RigError:
        return _fail(self.path, None, message)

    def _split_glb(self, raw: bytes) -> tuple[bytes, bytes | None]:
        if len(raw) < 20:
            raise self.error("truncated GLB: shorter than its header")
        _magic, version, length = struct.unpack_from("<4sII", raw, 0)
        if version != 2:
            raise self.error(f"GLB version {version} is not supported; export glTF 2.0")
        if length > len(raw):
            raise self.error(f"truncated GLB: the header says {length} bytes, the file has {len(raw)}")
        chunks: list[tuple[bytes, bytes]] = []
        offset = 12
        while offset + 8 <= length:
            size, kind = struct.unpack_from("<I4s", raw, offset)
            if offset + 8 + size > length:
                raise self.error(f"truncated GLB: a {kind!r} chunk runs past the end of the file")
            chunks.append((kind, raw[offset + 8: offset + 8 + size]))
            offset += 8 + size
        if not chunks or chunks[0][0] != _JSON_CHUNK:
            raise self.error("malformed GLB: the first chunk must be JSON")
        binary = next((data for kind, data in chunks[1:] if kind == _BIN_CHUNK), None)
        return chunks[0][1], binary

    def item(self, kind: str, index: Any, what: str) -> dict:
        items = self.doc.get(kind, [])
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(items):
            raise self.error(f"{what} refers to {kind}[{index!r}], but the file has {len(items)} {kind}")
        return items[index]

    def buffer(self, index: int) -> bytes:
        if index in self._buffers:
            return self._buffers[index]
        spec = self.item("buffers", index, "a buffer view")
        uri = spec.get("uri")
        if uri is None:
            if index != 0 or self._binary_chunk is None:
                raise self.error(f"buffers[{index}] has no uri and there is no embedded GLB binary chunk")
            data = self._binary_chunk
        elif uri.startswith("data:"):
            header, _, payload = uri.partition(",")
            if not header.endswith(";base64"):
                raise self.error(f"buffers[{index}]: only base64 data: URIs are supported")
            try:
                data = base64.b64decode(payload, validate=True)
            except ValueError:
                raise self.error(f"buffers[{index}]: the data: URI is not valid base64") from None
        elif "://" in uri:
            raise self.error(f"buffers[{index}] points to {uri}; nothing is downloaded: save the buffer next to "
                             f"the .gltf or export a .glb")
        else:
            file = self.path.parent / urllib.parse.unquote(uri)
            if not file.is_file():
                raise self.error(f"buffers[{index}] is {uri!r}, but {file} does not exist; keep the .bin next to "
                                 f"the .gltf")
            data = file.read_bytes()
        length = spec.get("byteLength", 0)
        if len(data) < length:
            raise self.error(f"buffers[{index}] should hold {length} bytes but has {len(data)}")
        self._buffers[index] = data
        return data

    def _view_array(self, view_index: Any, offset: int, dtype: np.dtype, width: int, count: int,
                    what: str) -> np.ndarray:
        view = self.item("bufferViews", view_index, what)
        data = self.buffer(view.get("buffer", 0))
        element = dtype.itemsize * width
        stride = view.get("byteStride") or element
        start = view.get("byteOffset", 0) + offset
        end = view.get("byteOffset", 0) + view.get("byteLength", 0)
        needed = start + (stride * (count - 1) + element if count else 0)
        if stride < element or needed > end or end > len(data):
            raise self.error(f"{what} reaches past the end of its buffer view or buffer (a truncated or "
                             f"malformed file)")
        if not count:
            return np.zeros((0, width), dtype)
        return np.ndarray((count, width), dtype, buffer=data, offset=start, strides=(stride, dtype.itemsize)).copy()

    def accessor(self, index: Any, what: str) -> np.ndarray:
        """Accessor `index` as [count, width]: floats for float or normalised data, else integers."""
        spec = self.item("accessors", index, what)
        what = f"{what} (accessors[{index}])"
        if spec.get("componentType") not in _COMPONENTS or spec.get("type") not in _WIDTHS:
            raise self.error(f"{what} has componentType {spec.get('componentType')!r} and type {spec.get('type')!r}; "
                             f"expected a scalar or vector of a glTF component type")
        dtype, width, count = np.dtype(_COMPONENTS[spec["componentType"]]), _WIDTHS[spec["type"]], spec.get("count", 0)
        if "bufferView" in spec:
            values = self._view_array(spec["bufferView"], spec.get("byteOffset", 0), dtype, width, count, what)
        else:
            values = np.zeros((count, width), dtype)
        sparse = spec.get("sparse")
        if sparse:
            n = sparse.get("count", 0)
            idx_spec, val_spec = sparse.get("indices", {}), sparse.get("values", {})
            if idx_spec.get("componentType") not in (5121, 5123, 5125):
                raise self.error(f"{what}: sparse indices must be unsigned integers")
            where = self._view_array(idx_spec.get("bufferView"), idx_spec.get("byteOffset", 0),
                                     np.dtype(_COMPONENTS[idx_spec["componentType"]]), 1, n, what)[:, 0]
            if n and where.max() >= count:
                raise self.error(f"{what}: a sparse index is past the accessor's {count} elements")
            values[where.astype(np.int64)] = self._view_array(val_spec.get("bufferView"), val_spec.get("byteOffset", 0),
                                                              dtype, width, n, what)
        if dtype.kind == "f":
            return values.astype(np.float64)
        if spec.get("normalized"):
            top = float(np.iinfo(dtype).max)
            return np.maximum(values.astype(np.float64) / top, -1.0)
        return values.astype(np.int64)

    # -- the scene ---------------------------------------------------------------------------------------

    def mesh_instances(self) -> list[tuple[int, np.ndarray, bool]]:
        """(mesh index, 4×4 world matrix, skinned) for every mesh the default scene draws; every mesh
        with an identity matrix when the file has no nodes."""
        nodes = self.doc.get("nodes", [])
        scenes = self.doc.get("scenes", [])
        if not nodes:
            return [(m, np.eye(4), False) for m in range(len(self.doc.get("meshes", [])))]
        if scenes:
            roots = self.item("scenes", self.doc.get("scene", 0), "the default scene").get("nodes", [])
        else:  # no scene: every node that is nobody's child is a root
            children = {c for node in nodes for c in node.get("children", [])}
            roots = [i for i in range(len(nodes)) if i not in children]
        found: list[tuple[int, np.ndarray, bool]] = []
        stack = [(root, np.eye(4), 0) for root in reversed(roots)]
        while stack:
            index, parent, depth = stack.pop()
            if depth > 256:
                raise self.error("the node hierarchy is deeper than 256 levels (a cycle?)")
            node = self.item("nodes", index, "the scene")
            world = parent @ _node_matrix(node)
            if "mesh" in node:
                found.append((node["mesh"], world, "skin" in node))
            stack.extend((child, world, depth + 1) for child in reversed(node.get("children", [])))
        return found


def _node_matrix(node: dict) -> np.ndarray:
    if "matrix" in node:
        return np.asarray(node["matrix"], float).reshape(4, 4).T  # glTF stores matrices column by column
    x, y, z, w = node.get("rotation", (0.0, 0.0, 0.0, 1.0))
    rotation = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
    out = np.eye(4)
    out[:3, :3] = rotation * np.asarray(node.get("scale", (1.0, 1.0, 1.0)), float)[None, :]
    out[:3, 3] = node.get("translation", (0.0, 0.0, 0.0))
    return out


def _triangles(indices: np.ndarray, mode: int) -> np.ndarray:
    if mode == 4:
        if len(indices) % 3:
            raise ValueError(f"{len(indices)} triangle indices is not a multiple of 3")
        return indices.reshape(-1, 3)
    if mode == 5:  # strip: every other triangle is wound the other way
        tri = np.stack([indices[:-2], indices[1:-1], indices[2:]], axis=1)
        tri[1::2] = tri[1::2, [1, 0, 2]]
        return tri
    if mode == 6:  # fan
        return np.stack([np.full(len(indices) - 2, indices[0]), indices[1:-1], indices[2:]], axis=1)
    names = {0: "points", 1: "lines", 2: "line loops", 3: "line strips"}
    raise ValueError(f"it draws {names.get(mode, f'mode {mode}')}; a face must be made of triangles")


def read_gltf(path: str | Path) -> list[MeshPrimitive]:
    """Every primitive the default scene of a .glb/.gltf draws, with its morph targets; see the module
    docstring for what is read and what is ignored. Raises RigError naming the file and the problem."""
    path = Path(path)
    try:
        return _read_gltf(path)
    except RigError:
        raise
    except OSError as exc:
        raise _fail(path, None, f"could not read the file ({exc.strerror or exc})") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, struct.error) as exc:
        # fields of the wrong type or shape somewhere in the JSON
        raise _fail(path, None, f"malformed glTF ({type(exc).__name__}: {exc}); re-export the file") from None


def _read_gltf(path: Path) -> list[MeshPrimitive]:
    gltf = _Gltf(path)
    primitives: list[MeshPrimitive] = []
    labels: dict[str, int] = {}
    for mesh_index, world, skinned in gltf.mesh_instances():
        mesh = gltf.item("meshes", mesh_index, "a node")
        label = str(mesh.get("name") or f"mesh{mesh_index}")
        labels[label] = labels.get(label, 0) + 1
        if labels[label] > 1:
            label = f"{label}#{labels[label]}"
        prims = mesh.get("primitives", [])
        n_targets = len(prims[0].get("targets", [])) if prims else 0
        names = (mesh.get("extras") or {}).get("targetNames")
        if not names and prims:  # some exporters put them on the first primitive
            names = (prims[0].get("extras") or {}).get("targetNames")
        names = [str(n) for n in names] if names else [f"target{k}" for k in range(n_targets)]
        if len(names) != n_targets:
            raise gltf.error(f"mesh {label!r} names {len(names)} morph targets (extras.targetNames) but has "
                             f"{n_targets}")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise gltf.error(f"mesh {label!r} has several morph targets named {', '.join(twice)}; rename them so "
                             f"each name is unique")
        matrix = np.eye(4) if skinned else world  # a skinned mesh's node transform does not apply (glTF spec)
        linear, shift = matrix[:3, :3], matrix[:3, 3]
        for p_index, prim in enumerate(prims):
            what = f"mesh {label!r} primitive {p_index}"
            attributes = prim.get("attributes", {})
            if "POSITION" not in attributes:
                raise gltf.error(f"{what} has no POSITION attribute")
            vertices = gltf.accessor(attributes["POSITION"], f"{what} POSITION")
            if vertices.shape[1] != 3 or not len(vertices):
                raise gltf.error(f"{what}: POSITION must be a non-empty list of 3-D points")
            _check_finite(vertices, path, what)
            if "indices" in prim:
                indices = gltf.accessor(prim["indices"], f"{what} indices").reshape(-1)
                if indices.dtype.kind != "i":
                    raise gltf.error(f"{what}: indices must be unsigned integers, not floats")
            else:
                indices = np.arange(len(vertices))
            try:
                faces = _triangles(indices, prim.get("mode", 4))
            except ValueError as exc:
                raise gltf.error(f"{what}: {exc}") from None
            if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
                raise gltf.error(f"{what}: its indices refer to vertices beyond its {len(vertices)}")
            targets_spec = prim.get("targets", [])
            if len(targets_spec) != n_targets:
                raise gltf.error(f"{what} has {len(targets_spec)} morph targets, the mesh's first primitive "
                                 f"{n_targets}; every primitive of a mesh must have the same targets")
            targets = {}
            for name, target in zip(names, targets_spec):
                if "POSITION" not in target:
                    continue  # a target that only changes normals does not move this primitive
                delta = gltf.accessor(target["POSITION"], f"{what} morph target {name!r}")
                if delta.shape != vertices.shape:
                    raise gltf.error(f"{what}: morph target {name!r} has {len(delta)} vertices but the base mesh has "
                                     f"{len(vertices)}; re-export the shape keys from the same mesh")
                _check_finite(delta, path, f"{what} morph target {name!r}")
                targets[name] = delta @ linear.T
            color, metallic, roughness = _gltf_material(gltf, prim, len(vertices), what)
            if np.linalg.det(linear) < 0:  # a mirroring node turns the triangles inside out
                faces = faces[:, [0, 2, 1]]
            primitives.append(MeshPrimitive(f"{label}/{p_index}", vertices @ linear.T + shift, faces, targets,
                                            color, metallic, roughness))
    if not primitives:
        raise gltf.error("the file's default scene draws no mesh")
    return primitives


def _gltf_material(gltf: _Gltf, prim: dict, n_vertices: int,
                   what: str) -> tuple[np.ndarray | None, float | None, float | None]:
    """(linear RGBA [4] or [N, 4] or None, metallic, roughness) of a primitive."""
    factor, metallic, roughness, textured = None, None, None, False
    if "material" in prim:
        pbr = gltf.item("materials", prim["material"], what).get("pbrMetallicRoughness", {})
        textured = "baseColorTexture" in pbr
        if "baseColorFactor" in pbr:
            factor = np.asarray(pbr["baseColorFactor"], float)
        metallic = float(pbr.get("metallicFactor", 1.0))   # the glTF defaults
        roughness = float(pbr.get("roughnessFactor", 1.0))
    if "COLOR_0" in prim.get("attributes", {}):
        colours = gltf.accessor(prim["attributes"]["COLOR_0"], f"{what} COLOR_0")
        if len(colours) != n_vertices or colours.shape[1] not in (3, 4):
            raise gltf.error(f"{what}: COLOR_0 must give an RGB or RGBA colour for each of its {n_vertices} vertices")
        if colours.shape[1] == 3:
            colours = np.hstack([colours, np.ones((n_vertices, 1))])
        _check_finite(colours, gltf.path, f"{what} COLOR_0")
        return np.clip(colours * (1.0 if factor is None else factor), 0.0, 1.0), metallic, roughness
    if factor is not None and not textured:
        return np.clip(factor, 0.0, 1.0), metallic, roughness
    return None, metallic, roughness


# --- OBJ -------------------------------------------------------------------------------------------------


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    import trimesh  # noqa: PLC0415  (pyrender's dependency; only OBJ avatars need it)

    try:
        mesh = trimesh.load(str(path), file_type="obj", force="mesh", process=False, maintain_order=True,
                            skip_materials=True)
    except Exception as exc:  # trimesh's parsers raise assorted types
        raise _fail(path, None, f"could not read the OBJ ({type(exc).__name__}: {exc})") from None
    vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), float)
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), np.int64)
    if not len(vertices) or not len(faces):
        raise _fail(path, None, "the OBJ holds no faces; a mesh needs 'v' and 'f' lines")
    _check_finite(vertices, path, "the OBJ")
    colours = None
    if getattr(mesh.visual, "kind", None) == "vertex":
        srgb = np.asarray(mesh.visual.vertex_colors, float) / 255.0
        rgb = np.where(srgb[:, :3] <= 0.04045, srgb[:, :3] / 12.92, ((srgb[:, :3] + 0.055) / 1.055) ** 2.4)
        colours = np.hstack([rgb, srgb[:, 3:4]])
    return vertices, faces, colours


def read_obj_with_shapes(path: str | Path, shapes: dict[str, str | Path]) -> list[MeshPrimitive]:
    """A neutral OBJ and its shapes (name → OBJ with the same vertices in the same order, moved) as one
    primitive whose targets are the shapes' offsets from the neutral mesh."""
    path = Path(path)
    vertices, faces, colours = _read_obj(path)
    targets = {}
    for name, shape_path in shapes.items():
        shape_path = Path(shape_path)
        moved, shape_faces, _ = _read_obj(shape_path)
        if len(moved) != len(vertices):
            raise _fail(shape_path, None, f"shape {name!r} has {len(moved)} vertices but the neutral mesh "
                                          f"{path.name} has {len(vertices)}; export every shape from the same mesh")
        if shape_faces.shape != faces.shape or not np.array_equal(shape_faces, faces):
            raise _fail(shape_path, None, f"shape {name!r} joins its vertices into different faces than the neutral "
                                          f"mesh {path.name} (another topology or vertex order); export every "
                                          f"shape from the same mesh, keeping the vertex order")
        targets[name] = moved - vertices
    return [MeshPrimitive(path.stem, vertices, faces, targets, colours)]


# --- the YAML file ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MorphLink:
    """One morph target that an arkit52 channel drives, at `weight` × the channel's value."""

    target: str
    weight: float = 1.0


@dataclass(frozen=True)
class CustomAvatarSpec:
    """A custom avatar's YAML, checked; paths resolved, lengths still in file units and axes."""

    mesh: Path
    shapes: dict[str, Path]
    units: str
    up: str
    front: str
    color: tuple[float, float, float, float]
    morphs: dict[str, tuple[MorphLink, ...]]
    neck_pivot: np.ndarray | None
    look_at: tuple[np.ndarray, float] | None
    source: str

    @classmethod
    def from_dict(cls, data: Any, *, base_dir: str | Path = ".", source: str = "custom avatar") -> "CustomAvatarSpec":
        """Check a parsed YAML mapping; `source` names it in errors, `base_dir` anchors relative paths."""
        base_dir = Path(base_dir)
        if not isinstance(data, dict):
            raise _fail(source, None, f"must be a mapping of keys ({', '.join(YAML_KEYS)}), got "
                                      f"{type(data).__name__}")
        for key in data:
            if key not in YAML_KEYS:
                raise _fail(source, str(key), f"unknown key{_closest(str(key), YAML_KEYS)}; the keys are "
                                              f"{', '.join(YAML_KEYS)}")
        if "mesh" not in data:
            raise _fail(source, "mesh", "missing: name the mesh file (.glb, .gltf or .obj)")
        mesh = _existing_file(data["mesh"], base_dir, source, "mesh")
        if mesh.suffix.lower() not in MESH_SUFFIXES:
            raise _fail(source, "mesh", f"unsupported file type {mesh.suffix or '(none)'!r} ({mesh.name}); use "
                                        f"glTF 2.0 (.glb or .gltf, e.g. Blender: File → Export → glTF 2.0 with shape "
                                        f"keys) or a neutral .obj with one .obj per shape")
        shapes: dict[str, Path] = {}
        if data.get("shapes") is not None:
            if mesh.suffix.lower() != ".obj":
                raise _fail(source, "shapes", f"is for OBJ meshes; {mesh.name} carries its own morph targets, "
                                              f"so remove shapes")
            if not isinstance(data["shapes"], dict):
                raise _fail(source, "shapes", "must map shape names to OBJ files, e.g. {JawOpen: jaw_open.obj}")
            for name, file in data["shapes"].items():
                shapes[str(name)] = _existing_file(file, base_dir, source, f"shapes.{name}")
                if shapes[str(name)].suffix.lower() != ".obj":
                    raise _fail(source, f"shapes.{name}", f"unsupported file type {shapes[str(name)].suffix!r}; "
                                                          f"shapes are .obj files")
        units = _choice(data.get("units", "m"), UNIT_MM, source, "units")
        up = _choice(_axis_name(data.get("up", "y")), AXES, source, "up")
        front = _choice(_axis_name(data.get("front", "z")), AXES, source, "front")
        if AXES[up][0] == AXES[front][0]:
            raise _fail(source, "front", f"{front} lies along the up axis {up}; front must be another axis "
                                         f"(for a z-up file the face usually looks along -y)")
        color = _numbers(data.get("color", DEFAULT_COLOR), source, "color", lengths=(3, 4))
        if not all(0.0 <= c <= 1.0 for c in color):
            raise _fail(source, "color", f"components must lie in 0..1 (linear RGB), got {list(color)}")
        morphs = _morph_map(data.get("morphs"), source)
        pivot = data.get("neck_pivot")
        neck_pivot = None if pivot is None else np.array(_numbers(pivot, source, "neck_pivot", lengths=(3,)))
        look_at = _look_at(data.get("look_at"), source)
        return cls(mesh, shapes, units, up, front, (*color[:3], color[3] if len(color) == 4 else 1.0), morphs,
                   neck_pivot, look_at, source)


def _existing_file(value: Any, base_dir: Path, source: str, key: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, key, f"must be a file name, got {value!r}")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise _fail(source, key, f"{path} does not exist (relative paths are relative to the YAML file)")
    return path


def _axis_name(value: Any) -> Any:
    return value.strip().lower().lstrip("+") if isinstance(value, str) else value


def _choice(value: Any, choices, source: str, key: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise _fail(source, key, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _numbers(value: Any, source: str, key: str, lengths: tuple[int, ...]) -> tuple[float, ...]:
    wanted = " or ".join(str(n) for n in lengths)
    if not isinstance(value, (list, tuple)) or len(value) not in lengths \
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise _fail(source, key, f"must be a list of {wanted} numbers, got {value!r}")
    if not all(math.isfinite(v) for v in value):
        raise _fail(source, key, f"must be finite numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _morph_map(value: Any, source: str) -> dict[str, tuple[MorphLink, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(source, "morphs", "must map arkit52 channels to morph target names, e.g. {jawOpen: JawOpen}")
    morphs = {}
    for channel, links in value.items():
        key = f"morphs.{channel}"
        if channel not in ARKIT52:
            raise _fail(source, key, f"{channel!r} is not an ARKit52 channel{_closest(str(channel), ARKIT52)}; the "
                                     f"channels are the 52 ARKit blendshape names (jawOpen, eyeBlinkLeft, ...)")
        entries = links if isinstance(links, list) else [links]
        if not entries:
            raise _fail(source, key, "an empty list maps the channel to nothing; remove the line instead")
        parsed = []
        for entry in entries:
            if isinstance(entry, str) and entry:
                parsed.append(MorphLink(entry))
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("target"), str) or not entry["target"]:
                raise _fail(source, key, f"must be a morph target name or {{target: NAME, weight: NUMBER}} (or a list "
                                         f"of those), got {entry!r}")
            unknown = sorted(set(entry) - {"target", "weight"})
            if unknown:
                raise _fail(source, f"{key}.{unknown[0]}", f"unknown key{_closest(unknown[0], ('target', 'weight'))};"
                                                           f" a morph entry has target and weight")
            weight = entry.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise _fail(source, f"{key}.weight", f"must be a finite number, got {weight!r}")
            parsed.append(MorphLink(entry["target"], float(weight)))
        morphs[channel] = tuple(parsed)
    return morphs


def _look_at(value: Any, source: str) -> tuple[np.ndarray, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail(source, "look_at", "must be {centre: [x, y, z], height: NUMBER} in file units")
    for key in value:
        if key not in ("centre", "height"):
            raise _fail(source, f"look_at.{key}", f"unknown key{_closest(str(key), ('centre', 'height'))}; look_at "
                                                  f"has centre and height")
    if "centre" not in value or "height" not in value:
        raise _fail(source, "look_at", "needs both centre ([x, y, z]) and height, in file units")
    centre = np.array(_numbers(value["centre"], source, "look_at.centre", lengths=(3,)))
    height = _numbers([value["height"]], source, "look_at.height", lengths=(1,))[0]
    if height <= 0:
        raise _fail(source, "look_at.height", f"must be positive, got {height}")
    return centre, height


def axes_rotation(up: str, front: str) -> np.ndarray:
    """3×3 taking file coordinates to the platform's (x right, y up, z towards the camera): its rows are
    the platform's axes written in file coordinates, right = up × front."""
    def unit(name: str) -> np.ndarray:
        index, sign = AXES[name]
        out = np.zeros(3)
        out[index] = sign
        return out

    up_v, front_v = unit(up), unit(front)
    return np.stack([np.cross(up_v, front_v), up_v, front_v])


# --- the rig ---------------------------------------------------------------------------------------------


@dataclass
class _PosedPrimitive:
    """A primitive ready to pose: platform mm, the deltas of the targets the map uses, and the matrix from
    the 52 clip weights to those targets' weights."""

    name: str
    vertices: np.ndarray          # [N, 3] float32
    faces: np.ndarray             # [M, 3] int32
    color: tuple | np.ndarray
    metallic: float
    roughness: float
    deltas: np.ndarray            # [K, N, 3] float32
    mixing: np.ndarray            # [K, 52] float32
    target_names: tuple[str, ...]

    @property
    def static(self) -> bool:
        return len(self.deltas) == 0


def _merge_seams(vertices: np.ndarray, faces: np.ndarray, deltas: np.ndarray, color: Any):
    """Merge vertices that agree in position, every delta and colour (split only for texture seams);
    the kept vertices stay in their first occurrence's order."""
    columns = [vertices, *deltas]
    if isinstance(color, np.ndarray) and color.ndim == 2:
        columns.append(color)
    key = np.ascontiguousarray(np.hstack(columns))
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    if len(first) == len(vertices):
        return vertices, faces, deltas, color
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    keep = first[order]
    faces = rank[inverse.reshape(-1)][faces]
    color = color[keep] if isinstance(color, np.ndarray) and color.ndim == 2 else color
    return vertices[keep], faces, deltas[:, keep], color


class CustomAvatar(Rig):
    """A mesh with morph targets from the researcher, driven by arkit52 clips; see the module docstring."""

    name = "custom_avatar"
    consumes = "arkit52"

    def __init__(self, spec: CustomAvatarSpec):
        self.spec = spec
        if spec.mesh.suffix.lower() == ".obj":
            raw = read_obj_with_shapes(spec.mesh, spec.shapes)
        else:
            raw = read_gltf(spec.mesh)
        available = sorted({name for prim in raw for name in prim.targets})
        for channel, links in spec.morphs.items():
            for link in links:
                if link.target not in available:
                    kind = "shape" if spec.shapes or spec.mesh.suffix.lower() == ".obj" else "morph target"
                    listed = ", ".join(available) if available else "none"
                    raise _fail(spec.source, f"morphs.{channel}",
                                f"{spec.mesh.name} has no {kind} {link.target!r}{_closest(link.target, available)}; "
                                f"it has: {listed}")
        to_mm = axes_rotation(spec.up, spec.front).T * UNIT_MM[spec.units]
        self.primitives = [self._prepare_primitive(prim, to_mm) for prim in raw]
        rest = np.vstack([p.vertices for p in self.primitives]).astype(np.float64)
        low, high = rest.min(axis=0), rest.max(axis=0)
        size = float((high - low).max())
        if not MESH_SIZE_MM[0] <= size <= MESH_SIZE_MM[1]:
            factor = 250.0 / max(size, 1e-9) * UNIT_MM[spec.units]
            guess = min(UNIT_MM, key=lambda unit: abs(math.log(UNIT_MM[unit] / factor)))
            raise _fail(spec.source, "units", f"with units: {spec.units} the mesh is {size:.3g} mm across, not "
                                              f"head-sized; is it in {guess}? (set units: {guess})")
        self._bounds = (low, high)
        if spec.neck_pivot is None:
            pivot = np.array([(low[0] + high[0]) / 2, low[1] + 0.2 * (high[1] - low[1]), (low[2] + high[2]) / 2])
        else:
            pivot = spec.neck_pivot @ to_mm
            self._check_near(pivot, "neck_pivot")
        self.neck_pivot = pivot
        if spec.look_at is None:
            centre = (low + high) / 2
            height = LOOK_AT_MARGIN * float(max(high[1] - low[1], high[0] - low[0]))
        else:
            centre = spec.look_at[0] @ to_mm
            height = spec.look_at[1] * UNIT_MM[spec.units]
            self._check_near(centre, "look_at.centre")
        self._look_at = (centre.astype(np.float32), float(height))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "CustomAvatar":
        """Build the avatar a YAML file declares (relative paths in it are relative to the file)."""
        path = Path(path)
        if not path.is_file():
            raise RigError(f"custom avatar file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise _fail(path, None, f"not valid YAML{where}: {problem}") from None
        except UnicodeDecodeError:
            raise _fail(path, None, "not a text file (UTF-8 YAML expected)") from None
        return cls(CustomAvatarSpec.from_dict(data, base_dir=path.parent, source=str(path)))

    def _prepare_primitive(self, prim: MeshPrimitive, to_mm: np.ndarray) -> _PosedPrimitive:
        spec = self.spec
        used: dict[str, np.ndarray] = {}  # target → row of the mixing matrix
        for channel, links in spec.morphs.items():
            for link in links:
                delta = prim.targets.get(link.target)
                if delta is None or not np.any(delta):
                    continue  # this primitive does not move with that target
                row = used.setdefault(link.target, np.zeros(len(ARKIT52)))
                row[ARKIT52.index(channel)] += link.weight
        names = tuple(used)
        vertices = prim.vertices @ to_mm
        deltas = np.stack([prim.targets[n] @ to_mm for n in names]) if names else np.zeros((0, *vertices.shape))
        color: tuple | np.ndarray
        if prim.color is None:
            color = spec.color
        elif prim.color.ndim == 1:
            color = tuple(float(c) for c in prim.color)
        else:
            color = prim.color
        vertices, faces, deltas, color = _merge_seams(vertices, prim.faces, deltas, color)
        if isinstance(color, np.ndarray):
            color = np.ascontiguousarray(color, np.float32)
        return _PosedPrimitive(
            name=prim.name, vertices=np.ascontiguousarray(vertices, np.float32),
            faces=np.ascontiguousarray(faces, np.int32), color=color,
            metallic=0.0 if prim.metallic is None else float(np.clip(prim.metallic, 0.0, 1.0)),
            roughness=0.6 if prim.roughness is None else float(np.clip(prim.roughness, 0.0, 1.0)),
            deltas=np.ascontiguousarray(deltas, np.float32),
            mixing=np.array([used[n] for n in names], np.float32).reshape(len(names), len(ARKIT52)),
            target_names=names)

    def _check_near(self, point: np.ndarray, key: str) -> None:
        low, high = self._bounds
        reach = float(np.linalg.norm(high - low))
        if np.linalg.norm(point - (low + high) / 2) > 2.0 * reach:
            raise _fail(self.spec.source, key, f"lies {np.linalg.norm(point - (low + high) / 2):.0f} mm from the "
                                               f"mesh's centre, far outside it; give it in the mesh's units "
                                               f"({self.spec.units}) and axes")

    # -- clips -------------------------------------------------------------------------------------------

    @property
    def mapped_channels(self) -> tuple[str, ...]:
        """The arkit52 channels that move this avatar (in ARKit52 order); the others are ignored."""
        return tuple(c for c in ARKIT52 if c in self.spec.morphs)

    def prepare(self, clip: MotionClip) -> MotionClip:
        return arkit52_performance(clip, rig=self.name, who=f"{self.spec.source}: a custom avatar")

    # -- posing ------------------------------------------------------------------------------------------

    def head_transform(self, pose: np.ndarray) -> np.ndarray:
        """4×4 for a head pose (rx, ry, rz degrees; tx, ty, tz mm): the avatar's convention
        (render/avatar.py `head_transform`), turning about this mesh's `neck_pivot` instead of its own."""
        shift = np.eye(4)
        shift[:3, 3] = self.neck_pivot - HEAD_PIVOT
        back = np.eye(4)
        back[:3, 3] = HEAD_PIVOT - self.neck_pivot
        return shift @ avatar_head_transform(pose) @ back

    def parts(self, clip: MotionClip, frame: int) -> list[Part]:
        if clip.layout != "arkit52" or clip.head_pose is None:
            raise RigError("parts() needs the clip returned by CustomAvatar.prepare (arkit52 with a head pose)")
        if not 0 <= frame < clip.n_frames:
            raise RigError(f"frame {frame} is outside the clip's {clip.n_frames} frames")
        return self.pose_parts(clip.values[frame], clip.head_pose[frame])

    def pose_parts(self, weights: np.ndarray, pose: np.ndarray | None = None) -> list[Part]:
        """The posed parts for one frame's 52 arkit weights and head pose (zeros when None)."""
        w = np.clip(np.asarray(weights, np.float32), 0.0, 1.0)
        if w.shape != (len(ARKIT52),):
            raise RigError(f"need {len(ARKIT52)} arkit52 weights, got shape {w.shape}")
        head = self.head_transform(np.zeros(6) if pose is None else pose).astype(np.float32)
        parts = []
        for prim in self.primitives:
            vertices = prim.vertices
            if not prim.static:
                target_weights = prim.mixing @ w
                active = np.flatnonzero(np.abs(target_weights) > 1e-6)
                if len(active):
                    vertices = vertices + np.tensordot(target_weights[active], prim.deltas[active], axes=1)
            parts.append(Part(prim.name, vertices, prim.faces, prim.color, head, metallic=prim.metallic,
                              roughness=prim.roughness, static=prim.static))
        return parts

    def look_at(self) -> tuple[np.ndarray, float]:
        return self._look_at[0].copy(), self._look_at[1]


__all__ = ["CustomAvatar", "CustomAvatarSpec", "MorphLink", "MeshPrimitive", "read_gltf", "read_obj_with_shapes",
           "axes_rotation", "YAML_KEYS"]
