"""The offscreen renderer: any rig's posed parts (render/rig.py) → RGB frames, with pyrender over OSMesa or EGL.

One OpenGL context, one pyrender scene and one camera/light set are made per process and settings
(`get_renderer`) and reused for every frame of every clip: making a context costs far more than drawing a
frame. Parts marked `static` are uploaded once and only re-posed (the pose is a shader uniform); moving
parts are rebuilt each frame. With vertex shading (the default) the lights are evaluated per vertex on the
GPU side (render/shaders/lit_vertex.vert: pyrender's own metallic-roughness model, `shade_vertices` is the
same model in numpy and the tested reference) and interpolated across each triangle, which a CPU rasteriser
draws several times faster than pyrender's per-pixel shader ("pixel" shading).

The platform is chosen once (`choose_platform`): `PYOPENGL_PLATFORM` when set, else EGL when a short probe
in a subprocess renders a triangle on a hardware device, else OSMesa. EGL on a software rasteriser
(llvmpipe) works too, but OSMesa draws the same pixels faster on a CPU, so a software EGL counts as "not
worth it". The choice is written back to `PYOPENGL_PLATFORM`, so child processes inherit it without
probing again. pyrender and PyOpenGL are imported only after that, inside functions.

Frames are deterministic (same parts and settings → the same bytes on one machine and platform). A frame
that cannot be drawn raises `RenderError`; so does a frame in which the rig covers no pixel at all (it fell
out of view) — a black or empty image is never passed on as a stimulus.
"""
from __future__ import annotations

import ctypes
import math
import os
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from render.rig import Part, Rig

if TYPE_CHECKING:  # pragma: no cover
    from inference.motion import MotionClip

FRAMINGS = ("head", "head_and_shoulders")
LIGHTINGS = ("studio", "flat")
PLATFORMS = ("osmesa", "egl")
SHADINGS = ("vertex", "pixel")
PROBE_TIMEOUT_S = 30.0
SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "software")
STATIC_CACHE_SIZE = 64  # static meshes kept uploaded (a few rigs' worth)

_platform: str | None = None


class RenderError(RuntimeError):
    """A frame could not be rendered (OpenGL failed, a part is malformed, or the rig is out of view); the
    message says which and what to do."""


# --- settings ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderSettings:
    """How a study's frames look. Sizes are pixels (even, for H.264 yuv420p); `background` is the sRGB
    colour (0–255) of empty pixels; `framing` is how much of the rig's framed height (`Rig.look_at`) fills
    the frame ("head": exactly that height; "head_and_shoulders": a wider shot that also shows the
    shoulders); `lighting` is "studio" (soft key, fill and rim lights) or "flat" (even, nearly shadowless);
    `fov_degrees` is the camera's vertical field of view; `supersample` renders k× larger and averages k×k
    blocks for anti-aliasing (OSMesa has no multisample buffer, so this is how edges get smooth; 1 = off).
    `shading` is where the lights are evaluated: "vertex" (pyrender's metallic-roughness model, evaluated
    per vertex in numpy and drawn with the flat shader — about 2.5× faster on a CPU rasteriser, Gouraud
    smooth) or "pixel" (pyrender's own per-pixel shader).
    """

    width: int = 512
    height: int = 512
    background: tuple[int, int, int] = (226, 231, 238)
    framing: str = "head"
    lighting: str = "studio"
    fov_degrees: float = 20.0
    supersample: int = 2
    shading: str = "vertex"

    def __post_init__(self):
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"render {name} must be a whole number of pixels, got {value!r}")
            if not 16 <= value <= 4096:
                raise ValueError(f"render {name} must be between 16 and 4096 pixels, got {value}")
            if value % 2:
                raise ValueError(f"render {name} must be even (H.264 yuv420p halves it), got {value}; "
                                 f"use {value + 1} or {value - 1}")
            object.__setattr__(self, name, int(value))
        background = tuple(self.background) if isinstance(self.background, (list, tuple)) else None
        if (background is None or len(background) != 3
                or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c <= 255
                           for c in background)):
            raise ValueError(f"background must be three sRGB integers 0–255, e.g. [226, 231, 238]; "
                             f"got {self.background!r}")
        object.__setattr__(self, "background", tuple(int(c) for c in background))
        if self.framing not in FRAMINGS:
            raise ValueError(f"unknown framing {self.framing!r}; choose one of {', '.join(FRAMINGS)}")
        if self.lighting not in LIGHTINGS:
            raise ValueError(f"unknown lighting preset {self.lighting!r}; choose one of {', '.join(LIGHTINGS)}")
        if not (isinstance(self.fov_degrees, (int, float)) and 5.0 <= float(self.fov_degrees) <= 90.0):
            raise ValueError(f"fov_degrees must be between 5 and 90, got {self.fov_degrees!r}")
        object.__setattr__(self, "fov_degrees", float(self.fov_degrees))
        if isinstance(self.supersample, bool) or self.supersample not in (1, 2, 3, 4):
            raise ValueError(f"supersample must be 1 (off), 2, 3 or 4, got {self.supersample!r}")
        if self.shading not in SHADINGS:
            raise ValueError(f"unknown shading {self.shading!r}; choose one of {', '.join(SHADINGS)}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["background"] = list(self.background)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RenderSettings":
        if not isinstance(data, dict):
            raise ValueError(f"render settings must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown render setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(data)
        if isinstance(values.get("background"), list):
            values["background"] = tuple(values["background"])
        return cls(**values)


# --- platform ------------------------------------------------------------------------------------------

_PROBE_SCRIPT = r"""
import os, sys
os.environ["PYOPENGL_PLATFORM"] = "egl"
import numpy as np, pyrender
from OpenGL import GL
tri = pyrender.Primitive(positions=np.array([[-1, -1, 0], [1, -1, 0], [0, 1, 0]], np.float32),
                         indices=np.array([[0, 1, 2]], np.uint32),
                         material=pyrender.MetallicRoughnessMaterial(baseColorFactor=(1.0, 0.0, 0.0, 1.0)))
scene = pyrender.Scene(bg_color=(0.0, 0.0, 0.0, 1.0), ambient_light=(1.0, 1.0, 1.0))
scene.add(pyrender.Mesh([tri]))
pose = np.eye(4); pose[2, 3] = 3
scene.add(pyrender.PerspectiveCamera(yfov=1.0), pose=pose)
renderer = pyrender.OffscreenRenderer(32, 32)
color, _ = renderer.render(scene, flags=pyrender.RenderFlags.FLAT)
name = GL.glGetString(GL.GL_RENDERER)
renderer.delete()
ok = color[16, 16, 0] > 100 and color[0, 0].max() == 0
print("RENDERER=" + (name.decode() if isinstance(name, bytes) else str(name)))
sys.exit(0 if ok else 3)
"""


def probe_egl(timeout_s: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Render a triangle with EGL in a subprocess (a crashing driver cannot take this process down).
    Returns (whether it drew correctly on a hardware device, what happened)."""
    env = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE_SCRIPT], capture_output=True, text=True,
                              timeout=timeout_s, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"EGL probe did not finish ({type(exc).__name__})"
    renderer = next((line.split("=", 1)[1] for line in done.stdout.splitlines() if line.startswith("RENDERER=")), "")
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"EGL probe failed (exit {done.returncode}): {tail}"
    if any(word in renderer.lower() for word in SOFTWARE_RENDERERS):
        return False, f"EGL works but on a software rasteriser ({renderer}); OSMesa is faster there"
    return True, f"EGL renders on {renderer}"


def choose_platform() -> str:
    """The OpenGL platform this process renders with ("osmesa" or "egl"), chosen once and exported in
    `PYOPENGL_PLATFORM` (for pyrender, PyOpenGL and child processes). Call before pyrender is imported."""
    global _platform
    if _platform is not None:
        return _platform
    requested = os.environ.get("PYOPENGL_PLATFORM", "").strip().lower()
    if requested:
        if requested not in PLATFORMS:
            raise RenderError(f"PYOPENGL_PLATFORM={requested!r} cannot render offscreen; set it to 'osmesa' "
                              f"or 'egl', or unset it to let the renderer choose")
        _platform = requested
        return _platform
    if "OpenGL" in sys.modules or "pyrender" in sys.modules:
        raise RenderError("PyOpenGL was imported before an offscreen platform was chosen, so it is bound to a "
                          "windowing platform; set PYOPENGL_PLATFORM=osmesa (or egl) in the environment, or call "
                          "render.offscreen.choose_platform() before anything imports pyrender or OpenGL")
    works, _reason = probe_egl()
    _platform = "egl" if works else "osmesa"
    os.environ["PYOPENGL_PLATFORM"] = _platform
    return _platform


# --- the renderer --------------------------------------------------------------------------------------


def _look_at_pose(eye: np.ndarray, target: np.ndarray, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """A node pose at `eye` whose −z axis points at `target` (how pyrender aims cameras and lights)."""
    forward = np.asarray(target, float) - np.asarray(eye, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-6:
        right = np.cross(forward, (0.0, 0.0, 1.0))
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, true_up, -forward, eye
    return pose


# Directions point from the subject towards each light (x: the subject's left, the viewer's right; y up; z
# towards the camera). "studio" is soft in the photographic sense: a key light with a fill at a third of its
# strength and ambient light, so no side of the face goes dark, and two rims that separate the head from the
# background. "flat" is mostly ambient, for stimuli that must not show any modelling by light.
_LIGHTS = {
    "studio": {
        "ambient": 0.22,
        "lights": [  # (direction towards the light, intensity, colour)
            ((-0.6, 0.5, 0.8), 3.2, (1.0, 0.96, 0.9)),        # key: viewer's left, above, in front
            ((0.8, 0.05, 0.6), 1.0, (0.9, 0.94, 1.0)),        # fill: viewer's right, lower, cooler
            ((0.5, 0.6, -0.8), 2.4, (1.0, 1.0, 1.0)),         # rim: behind, above, viewer's right
            ((-0.6, 0.2, -0.8), 1.2, (1.0, 1.0, 1.0)),        # second rim, other side
        ],
    },
    "flat": {
        "ambient": 0.8,
        "lights": [((0.0, 0.25, 1.0), 1.6, (1.0, 1.0, 1.0))],
    },
}


MIN_ROUGHNESS = 0.04  # pyrender's mesh.frag constant (also the dielectric reflectance f0)


def shade_vertices(positions: np.ndarray, normals: np.ndarray, base: np.ndarray, *, metallic: float,
                   roughness: float, camera: np.ndarray, lights: Sequence[tuple[np.ndarray, np.ndarray]],
                   ambient: float) -> np.ndarray:
    """sRGB colours [N, 3] of world-space vertices lit as pyrender's mesh.frag lights a pixel.

    The same metallic-roughness model — Schlick Fresnel, Smith geometry (k = (r + 1)² / 8), GGX
    distribution, a (1 − F) Lambert diffuse over π, the ambient term and the 1/2.2 output gamma — for
    directional `lights` given as (unit vector towards the light, colour × intensity). `base` is the linear
    base colour, [3] or [N, 3].
    """
    n = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    v = camera[None, :] - positions
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    base = np.broadcast_to(np.asarray(base, np.float64), positions.shape)
    roughness = float(np.clip(roughness, MIN_ROUGHNESS, 1.0))
    metallic = float(np.clip(metallic, 0.0, 1.0))
    c_diff = base * (1.0 - MIN_ROUGHNESS) * (1.0 - metallic)
    f0 = MIN_ROUGHNESS * (1.0 - metallic) + base * metallic
    k = (roughness + 1.0) ** 2 / 8.0
    a2 = (roughness * roughness) ** 2
    nv = np.clip(np.abs((n * v).sum(axis=1)), 0.001, 1.0)[:, None]
    colour = base * ambient
    for towards, radiance in lights:
        h = v + towards[None, :]
        h /= np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
        nl = np.clip(n @ towards, 0.001, 1.0)[:, None]
        nh = np.clip((n * h).sum(axis=1), 0.0, 1.0)[:, None]
        vh = np.clip((v * h).sum(axis=1), 0.0, 1.0)[:, None]
        fresnel = f0 + (1.0 - f0) * (1.0 - vh) ** 5
        geometry = (nv / (nv * (1.0 - k) + k)) * (nl / (nl * (1.0 - k) + k))
        distribution = a2 / (math.pi * (nh * nh * (a2 - 1.0) + 1.0) ** 2)
        diffuse = (1.0 - fresnel) * c_diff / math.pi
        specular = fresnel * geometry * distribution / (4.0 * nl * nv + 0.001)
        colour = colour + nl * radiance[None, :] * (diffuse + specular)
    return np.clip(colour, 0.0, 1.0) ** (1.0 / 2.2)


_vertex_face_matrices: OrderedDict[tuple, Any] = OrderedDict()


def faces_key(faces: np.ndarray) -> tuple:
    """An identity for a face array by its content (rigs may hand over a fresh copy of the same faces in
    every frame)."""
    faces = np.asarray(faces)
    return faces.shape, faces.dtype.str, hash(faces.tobytes())


def _vertex_face_matrix(faces: np.ndarray, n_vertices: int):
    """The sparse [vertices × faces] incidence matrix of `faces` and its three corner index columns
    (cached: a rig's faces never change)."""
    key = (faces_key(faces), n_vertices)
    entry = _vertex_face_matrices.get(key)
    if entry is not None:
        _vertex_face_matrices.move_to_end(key)
        return entry
    from scipy.sparse import csr_matrix

    corners = np.ascontiguousarray(faces, dtype=np.intp)
    rows = corners.ravel()
    cols = np.repeat(np.arange(len(faces)), 3)
    matrix = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_vertices, len(faces)))
    entry = _vertex_face_matrices[key] = (matrix, tuple(np.ascontiguousarray(corners[:, k]) for k in range(3)))
    while len(_vertex_face_matrices) > STATIC_CACHE_SIZE:
        _vertex_face_matrices.popitem(last=False)
    return entry


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Smooth (area-weighted) unit vertex normals, float32: the sum of the (unnormalised) normals of the
    faces around each vertex (in face order), through a cached sparse incidence matrix.

    Computed in float64 one coordinate at a time (rows of [3, faces] arrays, which numpy runs through
    contiguously), with the cross product and the norm written out: the same arithmetic, bit for bit, as
    np.cross, np.add.at over the faces and np.linalg.norm, at about half the time of the [faces, 3] layout."""
    matrix, (i0, i1, i2) = _vertex_face_matrix(faces, len(vertices))
    columns = np.asarray(vertices).T  # x, y, z rows (a view)
    p0 = np.take(columns, i0, axis=1).astype(np.float64)
    a = np.take(columns, i1, axis=1).astype(np.float64)
    b = np.take(columns, i2, axis=1).astype(np.float64)
    a -= p0
    b -= p0
    face_n = np.empty_like(a)
    face_n[0] = a[1] * b[2] - a[2] * b[1]
    face_n[1] = a[2] * b[0] - a[0] * b[2]
    face_n[2] = a[0] * b[1] - a[1] * b[0]
    normals = np.empty((len(vertices), 3))
    for axis in range(3):  # each column summed in CSR order, as csr @ [faces, 3] sums it
        normals[:, axis] = matrix @ face_n[axis]
    length = np.sqrt(normals[:, 0] * normals[:, 0] + normals[:, 1] * normals[:, 1] + normals[:, 2] * normals[:, 2])
    normals /= np.where(length > 0, length, 1.0)[:, None]
    return normals.astype(np.float32)


def vertex_cache_order(faces: np.ndarray) -> np.ndarray:
    """The same triangles in the order a rasteriser's vertex cache likes: by their lowest vertex index
    (stable), so consecutive triangles share recently shaded vertices.

    llvmpipe shades the vertices of an indexed draw through a small cache keyed by index; in the order a
    mesh generator or simplifier leaves them, triangles that share a vertex are often far apart in the
    index buffer and the vertex is shaded again each time. For the avatar (13,600 vertices) a model of a
    256-entry direct-mapped cache counts 31,000 vertex shadings in the given order and 14,300 in this one;
    measured, a 512² supersampled frame takes 1.5-2 ms less (one core). Each triangle keeps its corners in
    order (so its facing), and within one depth-tested mesh the order of two triangles changes no pixel
    unless they overlap at exactly equal depth."""
    faces = np.asarray(faces)
    return np.ascontiguousarray(faces[np.argsort(faces.min(axis=1), kind="stable")])


def _check_part(part: Part) -> None:
    vertices = np.asarray(part.vertices)
    faces = np.asarray(part.faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
        raise RenderError(f"part {part.name!r}: vertices must be [N, 3], got shape {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise RenderError(f"part {part.name!r}: faces must be [M, 3] vertex indices, got shape {faces.shape}")
    if not np.all(np.isfinite(vertices)):
        bad = int((~np.isfinite(vertices)).any(axis=1).sum())
        raise RenderError(f"part {part.name!r} has {bad} vertices with NaN/inf coordinates; the rig produced an "
                          f"invalid pose (check the clip's values and the rig's deformations)")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise RenderError(f"part {part.name!r}: faces index vertices outside 0..{len(vertices) - 1}")
    transform = np.asarray(part.transform)
    if transform.shape != (4, 4) or not np.all(np.isfinite(transform)):
        raise RenderError(f"part {part.name!r}: transform must be a finite 4×4 matrix")
    color = np.asarray(part.color, dtype=np.float64)
    if not np.all(np.isfinite(color)):
        raise RenderError(f"part {part.name!r}: colour holds NaN/inf")


def _stable_osmesa_context_ids() -> None:
    """Make PyOpenGL identify the current OSMesa context by its address.

    PyOpenGL's OSMesa platform returns a new ctypes pointer object from every `GetCurrentContext()`, and
    objects of that type hash by identity. PyOpenGL keys the arrays it keeps alive for each
    `gl*Pointer` call on that object (`OpenGL.contextdata`), and pyrender keys its shader-program cache
    on it, so every frame added entries that were never found again: the shader recompiled on every draw
    (a quarter of the frame time) and the stored-pointer table grew without bound, slowing every vertex
    upload (measured: half the upload time after a few hundred frames). The address is the identity those
    tables were meant to use. Patched once per process, before the first renderer draws; EGL already
    returns plain addresses.
    """
    from OpenGL import platform as gl_platform

    plat = gl_platform.PLATFORM
    if getattr(plat, "_evalsite_stable_context", False) or not hasattr(plat, "OSMesa"):
        return
    current = plat.OSMesa["OSMesaGetCurrentContext"]  # a new function object: the platform's keeps its types
    current.restype = ctypes.c_void_p
    current.argtypes = []
    # the platform object and the names `OpenGL.platform` exported from it at import (contextdata's)
    for holder in (plat, gl_platform):
        holder.GetCurrentContext = current
        holder.CurrentContextIsValid = current
    plat._evalsite_stable_context = True


SHADER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shaders")


def _glsl_vec3s(rows: Sequence[np.ndarray]) -> str:
    return "vec3[](" + ", ".join("vec3(" + ", ".join(f"{float(x):.9g}" for x in row) + ")" for row in rows) + ")"


def _lit_vertex_program_cache(pyrender, *, ambient: float, lights: Sequence[tuple[np.ndarray, np.ndarray]]):
    """A pyrender program cache that draws RenderFlags.FLAT with render/shaders/lit_vertex.* (lights baked
    in as constants) and every other program as pyrender does."""
    base = pyrender.shader_program.ShaderProgramCache
    constants = {
        "EVALSITE_N_LIGHTS": str(len(lights)),
        "EVALSITE_LIGHT_DIRS": _glsl_vec3s([towards for towards, _ in lights]),
        "EVALSITE_LIGHT_RADIANCE": _glsl_vec3s([radiance for _, radiance in lights]),
        "EVALSITE_AMBIENT": f"{float(ambient):.9g}",
    }

    class LitVertexProgramCache(base):
        def get_program(self, vertex_shader, fragment_shader, geometry_shader=None, defines=None):
            if vertex_shader == "flat.vert" and fragment_shader == "flat.frag":
                # absolute paths: os.path.join(shader_dir, path) keeps them as they are
                vertex_shader = os.path.join(SHADER_DIR, "lit_vertex.vert")
                fragment_shader = os.path.join(SHADER_DIR, "lit_vertex.frag")
                defines = {**(defines or {}), **constants}
            return super().get_program(vertex_shader, fragment_shader, geometry_shader, defines)

    return LitVertexProgramCache()


def _draw_order(scene) -> list:
    """The order pyrender draws the scene's meshes in (opaque ones first, each group farthest first), with
    ties broken by the part's name. pyrender breaks them by the iteration order of a set of nodes, which
    follows their memory addresses: parts placed by one transform (the face, its mouth and eyes) were drawn
    in an order that changed from process to process, and where their surfaces meet at equal depth the first
    drawn wins, so the same clip rendered in two worker processes gave different pixels."""
    camera = scene.get_pose(scene.main_camera_node)[:3, 3]

    def key(node):
        return (bool(node.mesh.is_transparent), -float(np.linalg.norm(scene.get_pose(node)[:3, 3] - camera)),
                node.name or "")

    return sorted(scene.mesh_nodes, key=key)


@dataclass(eq=False)
class _DynamicPart:
    """A moving part's mesh in the scene, kept while its faces, colours and material stay the same."""

    key: tuple
    node: Any
    primitive: Any
    keep: tuple  # the colour array its key may name by id, kept alive so that id stays its own
    upload: np.ndarray | None = None


class Renderer:
    """One OpenGL context and one scene, reused for every frame; see the module docstring."""

    def __init__(self, settings: RenderSettings = RenderSettings()):
        self.settings = settings
        self.platform = choose_platform()
        import pyrender

        if self.platform == "osmesa":
            _stable_osmesa_context_ids()
        self._pyrender = pyrender
        scale = settings.supersample
        try:
            self._offscreen = pyrender.OffscreenRenderer(settings.width * scale, settings.height * scale)
        except Exception as exc:  # the GL stack's own exception types vary by platform
            raise RenderError(f"could not create an offscreen OpenGL context on {self.platform!r} "
                              f"({type(exc).__name__}: {exc}); install libosmesa6 or set "
                              f"PYOPENGL_PLATFORM=osmesa") from exc
        lighting = _LIGHTS[settings.lighting]
        bg = [c / 255.0 for c in settings.background] + [1.0]
        self._scene = pyrender.Scene(bg_color=bg, ambient_light=[lighting["ambient"]] * 3)
        self._camera_node = None
        self._camera_key: tuple | None = None
        lights: list[tuple[np.ndarray, np.ndarray]] = []
        for direction, intensity, colour in lighting["lights"]:
            towards = np.asarray(direction, float) / np.linalg.norm(direction)
            lights.append((towards, np.asarray(colour, float) * intensity))
            if settings.shading == "pixel":
                light = pyrender.DirectionalLight(color=colour, intensity=intensity)
                self._scene.add(light, pose=_look_at_pose(towards * 1000.0, np.zeros(3)))
        self._flags = pyrender.RenderFlags.FLAT if settings.shading == "vertex" else pyrender.RenderFlags.NONE
        if settings.shading == "vertex":
            self._offscreen._renderer._program_cache = _lit_vertex_program_cache(
                pyrender, ambient=float(lighting["ambient"]), lights=lights)
        self._offscreen._renderer._sorted_mesh_nodes = _draw_order
        # (name, id(vertices), id(faces), colour, material) → (node, the part's arrays, kept alive so that
        # their ids cannot be reused by other arrays while the entry exists)
        self._static: OrderedDict[tuple, tuple[Any, tuple]] = OrderedDict()
        self._dynamic: dict[str, _DynamicPart] = {}
        self._half_fbo = None  # the framebuffer a supersampled frame is halved into (OSMesa path)
        self._half_rbo = None
        self._background_bytes: tuple[tuple, bytes] | None = None
        self.frames_rendered = 0

    # -- camera ------------------------------------------------------------------------------------------

    def _place_camera(self, look_at: tuple[np.ndarray, float]) -> None:
        target, height = look_at
        target = np.asarray(target, dtype=np.float64).reshape(3)
        height = float(height)
        if not (np.all(np.isfinite(target)) and math.isfinite(height) and height > 0):
            raise RenderError(f"the rig's look_at must be a finite point and a positive height, got {look_at!r}")
        if self.settings.framing == "head_and_shoulders":
            target = target + np.array([0.0, -0.38 * height, 0.0])
            height *= 1.75
        key = (tuple(target), height)
        if key == self._camera_key:
            return
        fov = math.radians(self.settings.fov_degrees)
        distance = (height / 2.0) / math.tan(fov / 2.0)
        camera = self._pyrender.PerspectiveCamera(
            yfov=fov, aspectRatio=self.settings.width / self.settings.height,
            znear=max(distance - 2.0 * height, distance * 0.05), zfar=distance + 3.0 * height)
        pose = np.eye(4)
        pose[:3, 3] = target + np.array([0.0, 0.0, distance])
        if self._camera_node is not None:
            self._scene.remove_node(self._camera_node)
        self._camera_node = self._scene.add(camera, pose=pose)
        self._camera_key = key

    # -- meshes ------------------------------------------------------------------------------------------

    @staticmethod
    def _geometry(part: Part, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """The part's vertices, faces and colour (one RGBA, or [N, 4]); a part that is not smooth gets three
        vertices of its own per face, so each face is shaded flat."""
        vertices = np.ascontiguousarray(part.vertices, dtype=dtype)
        faces = np.ascontiguousarray(part.faces, dtype=np.uint32)
        color = np.asarray(part.color, dtype=dtype)
        per_vertex = color.ndim == 2
        if per_vertex and color.shape != (len(vertices), 4):
            raise RenderError(f"part {part.name!r}: per-vertex colours must be [{len(vertices)}, 4], "
                              f"got {color.shape}")
        if not per_vertex:
            flat = color.reshape(-1)
            color = np.array([*flat[:3], flat[3] if flat.size >= 4 else 1.0], dtype=dtype)
        if not part.smooth:
            vertices = vertices[faces.ravel()]
            if per_vertex:
                color = color[faces.ravel()]
            faces = np.arange(len(vertices), dtype=np.uint32).reshape(-1, 3)
        return vertices, faces, color, per_vertex

    def _mesh(self, part: Part):
        pyrender = self._pyrender
        vertices, faces, color, per_vertex = self._geometry(part, np.float32)
        normals = vertex_normals(vertices, faces)
        faces = vertex_cache_order(faces)
        if per_vertex:
            material = pyrender.MetallicRoughnessMaterial(
                baseColorFactor=(1.0, 1.0, 1.0, 1.0), metallicFactor=part.metallic, roughnessFactor=part.roughness)
            primitive = pyrender.Primitive(positions=vertices, normals=normals, indices=faces, color_0=color,
                                           material=material)
        else:
            material = pyrender.MetallicRoughnessMaterial(
                baseColorFactor=tuple(float(c) for c in color), metallicFactor=part.metallic, roughnessFactor=part.roughness)
            primitive = pyrender.Primitive(positions=vertices, normals=normals, indices=faces, material=material)
        return pyrender.Mesh([primitive], is_visible=True)

    def _sync_parts(self, parts: Sequence[Part]) -> None:
        seen_static: set[tuple] = set()
        seen_dynamic: set[str] = set()
        names = [p.name for p in parts]
        if len(set(names)) != len(names):
            raise RenderError(f"part names must be unique within a frame, got {names}")
        for part in parts:
            _check_part(part)
            pose = np.asarray(part.transform, dtype=np.float64)
            if part.static:
                colour = part.color
                colour_key = id(colour) if isinstance(colour, np.ndarray) else tuple(np.ravel(colour).tolist())
                key = (part.name, id(part.vertices), id(part.faces), colour_key, part.metallic, part.roughness,
                       part.smooth)
                seen_static.add(key)
                if key in self._static:
                    node, _keep = self._static[key]
                    self._static.move_to_end(key)
                    if node not in self._scene.nodes:
                        self._scene.add_node(node)
                    self._scene.set_pose(node, pose)
                else:
                    node = self._pyrender.Node(name=part.name, mesh=self._mesh(part), matrix=pose)
                    self._scene.add_node(node)
                    self._static[key] = (node, (part.vertices, part.faces, colour))
            else:
                seen_dynamic.add(part.name)
                colour = part.color
                colour_key = id(colour) if isinstance(colour, np.ndarray) else tuple(np.ravel(colour).tolist())
                key = (faces_key(part.faces), len(part.vertices), colour_key, part.metallic, part.roughness,
                       part.smooth)
                entry = self._dynamic.get(part.name)
                if entry is not None and entry.key == key and entry.primitive._vaid is not None:
                    # Same mesh, new vertex positions: refill its vertex buffer in place before the draw
                    # (a new primitive would cost a vertex array, three buffers and their set-up).
                    vertices, faces, color, per_vertex = self._geometry(part, np.float32)
                    columns = [vertices, vertex_normals(vertices, faces)] + ([color] if per_vertex else [])
                    entry.upload = np.ascontiguousarray(np.hstack(columns), dtype=np.float32)
                    self._scene.set_pose(entry.node, pose)
                    continue
                if entry is not None:  # the scene indexes nodes by mesh, so a new mesh needs a new node
                    self._scene.remove_node(entry.node)
                mesh = self._mesh(part)
                node = self._pyrender.Node(name=part.name, mesh=mesh, matrix=pose)
                self._scene.add_node(node)
                self._dynamic[part.name] = _DynamicPart(key, node, mesh.primitives[0], (part.faces, colour))
        # Parts of another rig or an earlier frame leave the scene (their GL buffers are freed by pyrender).
        for key, (node, _keep) in list(self._static.items()):
            if key not in seen_static and node in self._scene.nodes:
                self._scene.remove_node(node)
        while len(self._static) > STATIC_CACHE_SIZE:
            _key, (node, _keep) = self._static.popitem(last=False)
            if node in self._scene.nodes:
                self._scene.remove_node(node)
        for name in list(self._dynamic):
            if name not in seen_dynamic:
                self._scene.remove_node(self._dynamic.pop(name).node)

    # -- frames ------------------------------------------------------------------------------------------

    def render(self, parts: Sequence[Part], *, look_at: tuple[np.ndarray, float]) -> np.ndarray:
        """One frame `[height, width, 3]` uint8 of `parts` seen as framed by `look_at` (a rig's `look_at()`)."""
        if not parts:
            raise RenderError("nothing to render: the rig returned no parts for this frame")
        self._place_camera(look_at)
        self._sync_parts(parts)
        try:
            color = self._draw()
        except Exception as exc:
            raise RenderError(f"OpenGL failed to draw the frame on {self.platform!r} "
                              f"({type(exc).__name__}: {exc})") from exc
        frame = np.asarray(color)
        h, w = self.settings.height, self.settings.width
        scale = 1 if frame.shape[:2] == (h, w) else self.settings.supersample  # halved by the GL already
        if frame.shape[:2] != (h * scale, w * scale) or frame.ndim != 3 or frame.shape[2] < 3:
            raise RenderError(f"the renderer returned an image of shape {frame.shape}, expected "
                              f"({h * scale}, {w * scale}, 3)")
        if frame.shape[2] > 3:
            frame = frame[:, :, :3]
        if scale > 1:
            # Average each scale×scale block: a sum of strided views in uint16 (no reduction over a 5-D
            # view, which numpy does several times slower), rounded to nearest.
            blocks = np.zeros((h, w, 3), np.uint16)
            for dy in range(scale):
                for dx in range(scale):
                    blocks += frame[dy::scale, dx::scale]
            area = scale * scale
            frame = ((blocks + area // 2) // area).astype(np.uint8)
        else:
            frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.tobytes() == self._background_frame(frame.shape):  # one memcmp, no [h, w, 3] booleans
            raise RenderError("the frame shows only background: the rig is out of view (check its head pose "
                              "translation and look_at) or all its parts are degenerate")
        self.frames_rendered += 1
        return frame

    def _draw(self) -> np.ndarray:
        """Draw the scene and read the colour buffer. On OSMesa (no framebuffer objects) pyrender's
        OffscreenRenderer.render also reads and linearises the depth buffer, which we never use and which
        costs as much as the colour read: there, draw and read colour only (pyrender 0.1.45's own steps)."""
        offscreen = self._offscreen
        platform = offscreen._platform
        platform.make_current()
        self._upload_dynamic()
        if platform.supports_framebuffers():
            color, _depth = offscreen.render(self._scene, flags=self._flags)
            return color
        try:
            renderer = offscreen._renderer
            renderer.viewport_width, renderer.viewport_height = offscreen.viewport_width, offscreen.viewport_height
            renderer.point_size = offscreen.point_size
            renderer.render(self._scene, self._flags, None)
            if self.settings.supersample == 2:
                return self._read_halved()
            return renderer.read_color_buf()
        finally:
            platform.make_uncurrent()

    def _read_halved(self) -> np.ndarray:
        """The drawn frame at half its size, averaged 2×2 by the GL (OSMesa path, supersample 2).

        A linear-filtered 2:1 blit samples each output pixel exactly between four source pixels, so it is
        their mean, as the CPU average is; reading back the quarter-size image instead of the full one saves
        the CPU's averaging pass (about a fifth of a frame's time at 512² here). The blit also flips it and
        the read packs it as RGB, so the frame arrives as the encoder takes it, with no copy in numpy."""
        from OpenGL import GL

        w, h = self.settings.width, self.settings.height
        if self._half_fbo is None:
            self._half_fbo = GL.glGenFramebuffers(1)
            self._half_rbo = GL.glGenRenderbuffers(1)
            GL.glBindRenderbuffer(GL.GL_RENDERBUFFER, self._half_rbo)
            GL.glRenderbufferStorage(GL.GL_RENDERBUFFER, GL.GL_RGBA8, w, h)
            GL.glBindFramebuffer(GL.GL_DRAW_FRAMEBUFFER, self._half_fbo)
            GL.glFramebufferRenderbuffer(GL.GL_DRAW_FRAMEBUFFER, GL.GL_COLOR_ATTACHMENT0, GL.GL_RENDERBUFFER,
                                         self._half_rbo)
            status = GL.glCheckFramebufferStatus(GL.GL_DRAW_FRAMEBUFFER)
            if status != GL.GL_FRAMEBUFFER_COMPLETE:
                raise RenderError(f"the half-size framebuffer is incomplete (status {status:#x})")
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, 0)
        GL.glReadBuffer(GL.GL_FRONT)
        GL.glBindFramebuffer(GL.GL_DRAW_FRAMEBUFFER, self._half_fbo)
        # Destination rows reversed: the blit also turns the image top-down (GL's rows run bottom-up), and
        # each output row still averages the same two source rows.
        GL.glBlitFramebuffer(0, 0, 2 * w, 2 * h, 0, h, w, 0, GL.GL_COLOR_BUFFER_BIT, GL.GL_LINEAR)
        GL.glBindFramebuffer(GL.GL_READ_FRAMEBUFFER, self._half_fbo)
        GL.glReadBuffer(GL.GL_COLOR_ATTACHMENT0)
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 1)  # rows of w * 3 bytes, not padded to 4
        frame = np.empty((h, w, 3), np.uint8)  # a new array per frame: consumers may keep or draw on it
        GL.glReadPixels(0, 0, w, h, GL.GL_RGB, GL.GL_UNSIGNED_BYTE, frame)
        GL.glBindFramebuffer(GL.GL_FRAMEBUFFER, 0)
        GL.glReadBuffer(GL.GL_FRONT)
        return frame

    def _background_frame(self, shape: tuple) -> bytes:
        """The bytes of a frame of `shape` showing only the background (kept for the next frame)."""
        if self._background_bytes is None or self._background_bytes[0] != shape:
            empty = np.empty(shape, np.uint8)
            empty[...] = np.asarray(self.settings.background, np.uint8)
            self._background_bytes = (shape, empty.tobytes())
        return self._background_bytes[1]

    def _upload_dynamic(self) -> None:
        """Refill the vertex buffers of moving parts whose mesh was kept (the context is current).
        The layout is pyrender's: interleaved position, normal and, when per vertex, colour."""
        from OpenGL.GL import GL_ARRAY_BUFFER, glBindBuffer, glBufferSubData

        for entry in self._dynamic.values():
            if entry.upload is not None:
                glBindBuffer(GL_ARRAY_BUFFER, entry.primitive._buffers[0])
                glBufferSubData(GL_ARRAY_BUFFER, 0, entry.upload.nbytes, entry.upload)
                entry.upload = None
        glBindBuffer(GL_ARRAY_BUFFER, 0)

    def close(self) -> None:
        """Free the OpenGL context (the renderer cannot be used afterwards)."""
        if self._offscreen is not None:
            try:
                self._offscreen.delete()
            finally:
                self._offscreen = None
                self._static.clear()
                self._dynamic.clear()


_renderers: dict[tuple[int, RenderSettings], Renderer] = {}


def get_renderer(settings: RenderSettings = RenderSettings()) -> Renderer:
    """The process-wide renderer for `settings` (made on first use; a forked child makes its own)."""
    key = (os.getpid(), settings)
    renderer = _renderers.get(key)
    if renderer is None:
        for stale in [k for k in _renderers if k[0] != os.getpid()]:
            del _renderers[stale]  # a parent's GL context is not usable in a forked child
        renderer = _renderers[key] = Renderer(settings)
    return renderer


def render_clip(rig: Rig, clip: "MotionClip", settings: RenderSettings = RenderSettings()) -> Iterator[np.ndarray]:
    """Frames of `clip` played on `rig`, one per clip frame, as a generator (to stream into the encoder).

    The rig's `prepare` and the renderer are set up before this returns, so a clip the rig cannot take
    fails here rather than at the first frame.
    """
    prepared = rig.prepare(clip)
    renderer = get_renderer(settings)
    look_at = rig.look_at()

    def frames() -> Iterator[np.ndarray]:
        for index in range(prepared.n_frames):
            yield renderer.render(rig.parts(prepared, index), look_at=look_at)

    return frames()


__all__ = ["RenderSettings", "RenderError", "Renderer", "get_renderer", "render_clip", "choose_platform",
           "probe_egl", "vertex_normals", "FRAMINGS", "LIGHTINGS"]
