"""The avatar: a stylised 3-D head the project generates itself, animated by `arkit52` blendshape weights.

Nothing is downloaded. The head is modelled as a signed distance field — smooth unions of ellipsoids and
capsules for the cranium, face, cheeks, jaw, chin, nose, lips and ears, with the eye sockets and the mouth
(a slit opening onto the oral cavity) carved out — and meshed once per process by surface nets on a grid
that is finer where the face needs detail. Vertices are projected onto the exact surface, and the field also
gives a baked ambient-occlusion term that darkens creases. Eyes (sclera, iris, pupil), eyelids, brows,
teeth, tongue, hair and the neck and shoulders are separate parts.

Model space is the one of `inference/face_geometry.py`: millimetres, x to the subject's left (the viewer's
right), y up, z towards the camera, origin between the eyes at eye level. The head turns about the top of
the neck (`HEAD_PIVOT`) with R = Rz(rz)·Ry(ry)·Rx(rx) (positive rx nods the nose down, positive ry turns it
to the subject's left), then translates by (tx, ty, tz); the neck and shoulders stay where they are.

Deformations are per-vertex displacement fields, each a smooth weight (0..1) times a direction, evaluated
once on the rest mesh: the brows (inner and outer raise, lowering), cheeks (squint, puff), nose sneer and
the mouth (smile, frown, stretch, dimple, pucker, funnel, press, upper-lip raise, lower-lip lowering, rolls,
shrugs, sideways). `jawOpen` is a rotation of the lower face about the jaw hinge with smoothly weighted
vertices (`mouthClose` counter-rotates the lips so they meet over an open jaw); the eyelids are shells over
the eyeballs whose edges follow `eyeBlink*`, `eyeWide*`, `eyeSquint*` and `cheekSquint*`; `eyeLook*`
turn the eyeballs. `tongueOut` is ignored.

The avatar takes `arkit52` clips as they are; `openface_au`, `landmarks:ibug68` and `pca` clips go through
`inference.motion.retarget` first (`Avatar.prepare`).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from inference.layouts import ARKIT52
from inference.motion import MotionClip
from render.rig import Part, Rig, RigError, arkit52_performance

# --- proportions (mm) -------------------------------------------------------------------------------------

HEAD_PIVOT = np.array([0.0, -75.0, -95.0])   # top of the neck, as in inference/face_geometry.py
JAW_HINGE = np.array([0.0, -10.0, -90.0])    # the mandible turns about the x axis through this point
JAW_OPEN_DEGREES = 24.0                      # mandible rotation at jawOpen = 1
JAW_GLIDE = np.array([0.0, -5.0, 18.0])      # the condyles' glide forward and down at jawOpen = 1
EYE_RADIUS = 13.0
EYE_CENTRES = np.array([[-31.0, 0.0, -7.5], [31.0, 0.0, -7.5]])  # subject's right, left
MOUTH_Y = -70.5                              # the line between the lips
MOUTH_HALF_WIDTH = 24.5
SLIT_HALF_HEIGHT = 1.0

# --- colours (linear RGB) ---------------------------------------------------------------------------------


def _srgb(r: int, g: int, b: int) -> np.ndarray:
    c = np.array([r, g, b], float) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


SKIN = _srgb(226, 174, 146)
SKIN_BLUSH = _srgb(218, 140, 126)
LIPS = _srgb(184, 102, 100)
MOUTH_INSIDE = _srgb(92, 30, 36)
MOUTH_DEEP = _srgb(20, 6, 8)
SOCKET = _srgb(200, 140, 128)
HAIR = _srgb(70, 48, 36)
HAIR_LIGHT = _srgb(104, 74, 54)
BROWS = _srgb(70, 50, 40)
SHIRT = _srgb(70, 92, 122)
SCLERA = _srgb(238, 234, 228)
IRIS = _srgb(92, 70, 48)
PUPIL = _srgb(12, 10, 10)
TEETH = _srgb(236, 230, 214)
TONGUE = _srgb(170, 84, 88)
LASH_LINE = _srgb(60, 40, 34)


# --- signed distances -----------------------------------------------------------------------------------
# Negative inside. Points come as a tuple of coordinate columns (x, y, z) of equal length — column arrays
# keep the arithmetic on contiguous memory, several times faster than [N, 3] rows for the millions of
# grid samples the mesher takes.

Points = tuple[np.ndarray, np.ndarray, np.ndarray]


def _columns(p: np.ndarray) -> Points:
    p = np.asarray(p, dtype=np.float64)
    return np.ascontiguousarray(p[:, 0]), np.ascontiguousarray(p[:, 1]), np.ascontiguousarray(p[:, 2])


def _ellipsoid(p: Points, centre, radii) -> np.ndarray:
    """Approximate distance to an ellipsoid (exact on the surface, good near it)."""
    (x, y, z), (cx, cy, cz), (rx, ry, rz) = p, centre, radii
    qx, qy, qz = (x - cx) / rx, (y - cy) / ry, (z - cz) / rz
    k0 = np.sqrt(qx * qx + qy * qy + qz * qz)
    k1 = np.sqrt((qx / rx) ** 2 + (qy / ry) ** 2 + (qz / rz) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)


def _capsule(p: Points, a, b, radius_a: float, radius_b: float | None = None) -> np.ndarray:
    """Distance to a segment a→b swept by a radius that goes linearly from radius_a to radius_b."""
    x, y, z = p
    ax, ay, az = a
    bx, by, bz = b[0] - ax, b[1] - ay, b[2] - az
    t = np.clip(((x - ax) * bx + (y - ay) * by + (z - az) * bz) / (bx * bx + by * by + bz * bz), 0.0, 1.0)
    dx, dy, dz = x - ax - t * bx, y - ay - t * by, z - az - t * bz
    radius = radius_a if radius_b is None else radius_a + (radius_b - radius_a) * t
    return np.sqrt(dx * dx + dy * dy + dz * dz) - radius


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth union (polynomial smooth minimum with blend radius k)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth intersection; smax(a, -b) carves b out of a."""
    return -_smin(-a, -b, k)


def _mirror_x(p: Points) -> Points:
    """Points with x replaced by |x|, so a shape written for the left side appears on both sides."""
    return np.abs(p[0]), p[1], p[2]


def _smoothstep(edge0, edge1, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _bump(p: np.ndarray, centre, radii) -> np.ndarray:
    """A smooth weight for [N, 3] points: 1 at `centre`, falling to 0 on the ellipsoid of `radii` (C¹)."""
    q = (p - np.asarray(centre, float)) / np.asarray(radii, float)
    t2 = np.einsum("ij,ij->i", q, q)
    return np.where(t2 < 1.0, (1.0 - t2) ** 2, 0.0)


# --- the head's shape -----------------------------------------------------------------------------------


def _head_base(p: Points) -> np.ndarray:
    """The head before the eye sockets and the mouth are carved."""
    m = _mirror_x(p)
    cranium = _ellipsoid(p, (0.0, 32.0, -84.0), (72.0, 92.0, 96.0))
    face = _ellipsoid(p, (0.0, -30.0, -30.0), (59.0, 62.0, 52.0))
    d = _smin(cranium, face, 16.0)
    cheek = _ellipsoid(m, (33.0, -27.0, -5.0), (17.0, 15.0, 17.0))
    d = _smin(d, cheek, 16.0)
    buccal = _ellipsoid(m, (35.0, -60.0, -20.0), (16.0, 22.0, 22.0))
    d = _smin(d, buccal, 24.0)
    brow_ridge = _capsule(m, (0.0, 11.0, 5.0), (42.0, 12.0, -6.0), 8.0, 6.0)
    d = _smin(d, brow_ridge, 9.0)
    cheekbone = _ellipsoid(m, (50.0, -13.0, -18.0), (12.0, 8.0, 14.0))
    d = _smin(d, cheekbone, 16.0)
    # the lower face narrows along the jaw line from the angles below the ears to the chin
    lower_face = _ellipsoid(p, (0.0, -74.0, -30.0), (46.0, 36.0, 46.0))
    chin = _ellipsoid(p, (0.0, -105.0, 1.5), (18.0, 14.5, 15.0))
    jaw_line = _capsule(m, (45.0, -86.0, -58.0), (13.0, -110.0, -2.0), 6.5, 9.5)
    jaw = _smin(_smin(lower_face, chin, 14.0), jaw_line, 20.0)
    d = _smin(d, jaw, 14.0)
    # nose: bridge, tip, wings, nostrils (from below)
    bridge = _capsule(p, (0.0, -2.0, 6.0), (0.0, -31.0, 22.5), 5.2, 5.0)
    tip = _ellipsoid(p, (0.0, -35.0, 23.0), (7.0, 6.5, 7.0))
    wings = _ellipsoid(m, (11.0, -39.5, 12.0), (5.5, 5.0, 6.5))
    nose = _smin(_smin(bridge, tip, 4.0), wings, 3.0)
    d = _smin(d, nose, 5.0)
    # the orbits: the skin round each eye sits back, level with the eyeball's front
    d = _smax(d, -_ellipsoid(m, (31.0, 3.5, 14.0), (19.0, 11.5, 11.0)), 6.0)
    # lips
    upper_lip = _ellipsoid(p, (0.0, -64.5, 12.5), (24.0, 7.0, 8.0))
    lower_lip = _ellipsoid(p, (0.0, -76.5, 11.0), (21.5, 7.0, 8.5))
    d = _smin(d, _smin(upper_lip, lower_lip, 2.0), 6.0)
    # The top of the neck turns with the head, round the vertical through the pivot, so turning leaves it
    # where it was: it covers the flat top of the body's neck, then tapers away inside it.
    neck = _smin(_capsule(p, (0.0, -72.0, -95.0), (0.0, -128.0, -94.0), 50.0, 55.0),
                 _capsule(p, (0.0, -128.0, -94.0), (0.0, -168.0, -92.0), 55.0, 44.0), 4.0)
    d = _smin(d, neck, 18.0)
    # ears: a flattened shell with a rim (helix) and a hollow (concha)
    ear = _ellipsoid(m, (70.0, -10.0, -90.0), (6.5, 24.0, 14.0))
    d = _smin(d, ear, 5.0)
    d = _smax(d, -_ellipsoid(m, (76.5, -11.0, -89.0), (3.2, 18.0, 9.5)), 1.5)
    return d


def _eye_socket(p: Points) -> np.ndarray:
    cx, cy, cz = EYE_CENTRES[1]
    return _ellipsoid(_mirror_x(p), (cx, cy + 1.2, cz), (15.2, 14.7, 14.7))


def _mouth_carve(p: Points) -> np.ndarray:
    slit = _ellipsoid(p, (0.0, MOUTH_Y, 9.0), (MOUTH_HALF_WIDTH + 1.0, SLIT_HALF_HEIGHT, 17.0))
    cavity = _ellipsoid(p, (0.0, MOUTH_Y - 0.5, -14.0), (23.0, 11.0, 21.0))
    return _smin(slit, cavity, 3.0)


def head_sdf(p: Points) -> np.ndarray:
    """The skin surface of the head (negative inside)."""
    d = _head_base(p)
    d = _smax(d, -_eye_socket(p), 2.5)
    d = _smax(d, -_mouth_carve(p), 1.2)
    return d


def _hairline_height(p: Points) -> np.ndarray:
    """Height (y) above which the scalp is covered, by the direction round the head."""
    angle = np.degrees(np.abs(np.arctan2(p[0], p[2] + 75.0)))  # 0 front, 90 side, 180 back
    return np.interp(angle, [0, 12, 30, 45, 58, 70, 80, 90, 102, 115, 135, 180],
                     [64, 65, 60, 58, 44, 32, 8, 22, 14, -20, -45, -62])


def _hair_taper(p: Points) -> np.ndarray:
    """0 at the hairline, 1 a little above it: the hair thins out towards its edge."""
    return _smoothstep(0.0, 16.0, p[1] - _hairline_height(p))


def hair_sdf(p: Points) -> np.ndarray:
    x, y, z = p
    lift = np.clip((y - 10.0) / 90.0, 0.0, 1.0)
    volume = 2.0 + 8.0 * lift ** 0.8 + 4.0 * _smoothstep(-60.0, 10.0, z) * lift \
        + 5.0 * np.sqrt(_bump(np.column_stack([x, y, z]), (-10.0, 80.0, -5.0), (45.0, 30.0, 45.0)))
    thickness = 0.8 + volume * _hair_taper(p)
    shell = _head_base(p) - thickness
    cut = _hairline_height(p) - y
    hair = _smax(shell, cut, 1.5)
    return hair


def body_sdf(p: Points) -> np.ndarray:
    """Neck and shoulders, which do not move with the head."""
    x, y, z = p
    m = _mirror_x(p)
    neck = _capsule(p, (0.0, -215.0, -82.0), (0.0, -110.0, -93.0), 57.0, 52.0)
    neck = _smax(neck, y + 118.0, 2.0)  # flat-topped, inside the head's own neck
    trapezius = _capsule(m, (35.0, -170.0, -88.0), (140.0, -212.0, -80.0), 26.0, 30.0)
    shoulders = _capsule(p, (-148.0, -228.0, -78.0), (148.0, -228.0, -78.0), 42.0)
    flat = (x, y, (z + 72.0) / 0.62 - 72.0)  # a chest deeper than wide would be a barrel
    chest = _capsule(flat, (-118.0, -300.0, -72.0), (118.0, -300.0, -72.0), 78.0)
    waist = _capsule(flat, (-100.0, -420.0, -72.0), (100.0, -420.0, -72.0), 80.0)
    torso = _smin(_smin(_smin(shoulders, chest, 40.0), waist, 40.0), trapezius, 30.0)
    return _smin(neck, torso, 26.0)


def _collar_height(p: np.ndarray) -> np.ndarray:
    """The shirt's crew neckline round the neck: lower at the front than at the back."""
    angle = np.arctan2(p[:, 0], p[:, 2] + 84.0)
    return -192.0 - 12.0 * np.cos(angle)


# --- meshing --------------------------------------------------------------------------------------------


def _axis(lo: float, hi: float, coarse: float, fine: list[tuple[float, float, float]]) -> np.ndarray:
    """Grid coordinates from lo to hi: spacing `coarse`, or the finer spacing of any (a, b, step) band."""
    coords = [lo]
    while coords[-1] < hi:
        x = coords[-1]
        step = min([coarse] + [s for a, b, s in fine if a - s <= x < b])
        coords.append(x + step)
    return np.array(coords)


def _sample(sdf, p: np.ndarray) -> np.ndarray:
    """The field at [N, 3] points, as float64."""
    return sdf(_columns(p)).astype(np.float64)


def _gradient(sdf, p: np.ndarray, eps: float = 0.05, at_p: np.ndarray | None = None) -> np.ndarray:
    """The field's gradient at [N, 3] points: central differences, or forward ones from `at_p` (the field
    at p, when the caller has it) at half the cost."""
    g = np.empty_like(p)
    for axis in range(3):
        dp = np.zeros(3)
        dp[axis] = eps
        if at_p is None:
            g[:, axis] = (_sample(sdf, p + dp) - _sample(sdf, p - dp)) / (2 * eps)
        else:
            g[:, axis] = (_sample(sdf, p + dp) - at_p) / eps
    return g


def _grid_values(sdf, axes: tuple[np.ndarray, ...], coarse_every: int = 4) -> np.ndarray:
    """The field on the grid, evaluated exactly only near the surface: a coarse pass (every
    `coarse_every`-th grid line) finds the coarse cells the surface may cross; elsewhere every sample takes
    the sign of its coarse cell (all of whose corners agree), which is all the mesher needs there."""
    shape = tuple(len(a) for a in axes)
    coarse_idx = [np.unique(np.r_[np.arange(0, n, coarse_every), n - 1]) for n in shape]
    coarse_pts = np.meshgrid(*[a[i] for a, i in zip(axes, coarse_idx)], indexing="ij")
    fc = sdf(tuple(np.ascontiguousarray(c.ravel(), dtype=np.float32) for c in coarse_pts))
    fc = fc.reshape(tuple(len(i) for i in coarse_idx)).astype(np.float32)
    cs = tuple(len(i) - 1 for i in coarse_idx)
    corners = [fc[i:i + cs[0], j:j + cs[1], k:k + cs[2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    nearest = np.min([np.abs(c) for c in corners], axis=0)
    n_inside = sum((c < 0).astype(np.int8) for c in corners)
    spans = [np.diff(a[i]) for a, i in zip(axes, coarse_idx)]
    diagonal = np.sqrt(spans[0][:, None, None] ** 2 + spans[1][None, :, None] ** 2 + spans[2][None, None, :] ** 2)
    refine = (nearest < 1.5 * diagonal + 2.0) | ((n_inside > 0) & (n_inside < 8))
    # every fine sample's coarse cell
    cell_of = [np.clip(np.searchsorted(i, np.arange(n), side="right") - 1, 0, c - 1)
               for i, n, c in zip(coarse_idx, shape, cs)]
    ci, cj, ck = np.meshgrid(*cell_of, indexing="ij")
    need = refine[ci, cj, ck]
    far_sign = np.where(corners[0] < 0, -1.0, 1.0).astype(np.float32)
    f = (far_sign * (nearest + 1.0))[ci, cj, ck]
    idx = np.nonzero(need)
    pts = tuple(np.ascontiguousarray(a[i], dtype=np.float32) for a, i in zip(axes, idx))
    f[idx] = sdf(pts)
    return f


def surface_nets(sdf, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray,
                 project_steps: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Mesh the zero set of `sdf` sampled on the rectilinear grid xs × ys × zs: one vertex per cell the
    surface crosses (the mean of the edge crossings, then projected onto the surface), one quad per grid
    edge it crosses, split into triangles along the shorter diagonal and wound outwards."""
    axes = (np.asarray(xs, float), np.asarray(ys, float), np.asarray(zs, float))
    shape = tuple(len(a) for a in axes)
    f = _grid_values(sdf, axes)
    inside = f < 0.0

    corners = [(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    cell_shape = tuple(n - 1 for n in shape)

    def corner(arr, c):
        return arr[c[0]:c[0] + cell_shape[0], c[1]:c[1] + cell_shape[1], c[2]:c[2] + cell_shape[2]]

    n_inside = sum(corner(inside, c).astype(np.int8) for c in corners)
    active = (n_inside > 0) & (n_inside < 8)
    cells = np.argwhere(active)
    vertex_id = np.full(cell_shape, -1, dtype=np.int64)
    vertex_id[tuple(cells.T)] = np.arange(len(cells))

    # mean of the crossings on the 12 edges of each active cell
    total = np.zeros((len(cells), 3))
    count = np.zeros(len(cells))
    for c0 in corners:
        for axis in range(3):
            if c0[axis] == 1:
                continue
            c1 = list(c0)
            c1[axis] = 1
            i0 = cells + np.array(c0)
            i1 = cells + np.array(c1)
            f0 = f[tuple(i0.T)].astype(np.float64)
            f1 = f[tuple(i1.T)].astype(np.float64)
            crosses = (f0 < 0) != (f1 < 0)
            t = np.where(crosses, f0 / np.where(crosses, f0 - f1, 1.0), 0.0)
            p0 = np.stack([axes[a][i0[:, a]] for a in range(3)], axis=1)
            p1 = np.stack([axes[a][i1[:, a]] for a in range(3)], axis=1)
            total += np.where(crosses[:, None], p0 + t[:, None] * (p1 - p0), 0.0)
            count += crosses
    vertices = total / count[:, None]

    # project onto the surface, never further than half a cell (thin gaps must not be jumped)
    lo = np.stack([axes[a][cells[:, a]] for a in range(3)], axis=1)
    hi = np.stack([axes[a][cells[:, a] + 1] for a in range(3)], axis=1)
    for _ in range(project_steps):
        d = _sample(sdf, vertices)
        g = _gradient(sdf, vertices, at_p=d)
        step = d[:, None] * g / np.maximum((g * g).sum(axis=1, keepdims=True), 1e-9)
        vertices = np.clip(vertices - step, lo - 0.5 * (hi - lo), hi + 0.5 * (hi - lo))

    # one quad per crossed grid edge, between the four cells that share it
    quads = []
    for axis in range(3):
        b, c = (axis + 1) % 3, (axis + 2) % 3
        sl0 = [slice(None)] * 3
        sl1 = [slice(None)] * 3
        sl0[axis] = slice(0, shape[axis] - 1)
        sl1[axis] = slice(1, shape[axis])
        for other in (b, c):  # the edge needs cells on both sides in the other two directions
            sl0[other] = slice(1, shape[other] - 1)
            sl1[other] = slice(1, shape[other] - 1)
        a_in = inside[tuple(sl0)]
        b_in = inside[tuple(sl1)]
        edges = np.argwhere(a_in != b_in)
        if len(edges) == 0:
            continue
        outward_positive = a_in[tuple(edges.T)]  # inside at the lower end: the surface faces +axis
        edges[:, b] += 1
        edges[:, c] += 1
        ring = []
        for db, dc in ((-1, -1), (0, -1), (0, 0), (-1, 0)):
            cell = edges.copy()
            cell[:, b] += db
            cell[:, c] += dc
            ring.append(vertex_id[tuple(cell.T)])
        ring = np.stack(ring, axis=1)
        ring[~outward_positive] = ring[~outward_positive][:, ::-1]
        quads.append(ring)
    quads = np.concatenate(quads)
    quads = quads[(quads >= 0).all(axis=1)]
    d02 = np.linalg.norm(vertices[quads[:, 0]] - vertices[quads[:, 2]], axis=1)
    d13 = np.linalg.norm(vertices[quads[:, 1]] - vertices[quads[:, 3]], axis=1)
    split02 = d02 <= d13
    faces = np.concatenate([
        np.where(split02[:, None], quads[:, [0, 1, 2]], quads[:, [0, 1, 3]]),
        np.where(split02[:, None], quads[:, [0, 2, 3]], quads[:, [1, 2, 3]]),
    ])
    return vertices, faces.astype(np.int64)


def _drop_vertices(vertices: np.ndarray, faces: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mesh without the vertices where `keep` is False (and the faces that used them)."""
    faces = faces[keep[faces].all(axis=1)]
    used = np.zeros(len(vertices), bool)
    used[faces.ravel()] = True
    remap = np.cumsum(used) - 1
    return vertices[used], remap[faces]


def _edges(faces: np.ndarray) -> np.ndarray:
    """Unique undirected edges [E, 2] (smaller index first)."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).astype(np.int64)
    e.sort(axis=1)
    n = int(faces.max()) + 1
    keys = np.unique(e[:, 0] * n + e[:, 1])  # one integer per edge: much faster than unique rows
    return np.stack([keys // n, keys % n], axis=1)


def _face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices[faces]
    return np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])


def simplify(vertices: np.ndarray, faces: np.ndarray, sdf, target_length, *, max_passes: int = 40,
             max_turn_degrees: float = 35.0) -> tuple[np.ndarray, np.ndarray]:
    """Coarsen a mesh where detail is not needed: collapse every edge shorter than `target_length(midpoint)`
    (mm), shortest relative to its target first, the merged vertex projected back onto the surface of `sdf`.

    Each pass collapses a set of edges far enough apart (no two within one ring of each other) to be done
    at once, and skips a collapse that would turn a neighbouring face by more than `max_turn_degrees`,
    stretch an edge past 1.6 targets, or join two sheets (the link condition).
    """
    from scipy import sparse

    v = np.asarray(vertices, dtype=np.float64).copy()
    f = np.asarray(faces, dtype=np.int64).copy()
    cos_limit = math.cos(math.radians(max_turn_degrees))
    for _ in range(max_passes):
        edges = _edges(f)
        a, b = edges[:, 0], edges[:, 1]
        mid = 0.5 * (v[a] + v[b])
        target = target_length(mid)
        ratio = np.linalg.norm(v[a] - v[b], axis=1) / target
        candidate = ratio < 1.0
        if not candidate.any():
            break
        # a maximal set of edges no two of which lie within one ring of each other, cheapest first
        cost = ratio + 1e-9 * np.arange(len(edges)) / len(edges)  # unique: ties broken by index
        n = len(v)
        available = candidate.copy()
        picked = []
        while available.any():
            c = np.where(available, cost, np.inf)
            m1 = np.full(n, np.inf)
            np.minimum.at(m1, a, c)
            np.minimum.at(m1, b, c)
            m2 = m1.copy()
            np.minimum.at(m2, a, m1[b])
            np.minimum.at(m2, b, m1[a])
            best = available & (c == m2[a]) & (c == m2[b])
            picked.append(np.flatnonzero(best))
            near = np.zeros(n, bool)
            near[a[best]] = near[b[best]] = True
            ring = near.copy()
            ring[a[near[b]]] = True
            ring[b[near[a]]] = True
            available &= ~(ring[a] | ring[b])
        chosen = np.concatenate(picked)
        ca, cb = a[chosen], b[chosen]
        # link condition: an interior edge's ends share exactly the two vertices opposite it
        adjacency = sparse.csr_matrix((np.ones(2 * len(edges)), (np.r_[a, b], np.r_[b, a])), shape=(n, n))
        common = np.asarray(adjacency[ca].multiply(adjacency[cb]).sum(axis=1)).ravel()
        new_pos = 0.5 * (v[ca] + v[cb])
        d = _sample(sdf, new_pos)  # one Newton step: the midpoint of a short edge lies close to the surface
        g = _gradient(sdf, new_pos, at_p=d)
        new_pos = new_pos - d[:, None] * g / np.maximum((g * g).sum(axis=1, keepdims=True), 1e-9)
        ok = common == 2
        ok &= np.linalg.norm(new_pos - mid[chosen], axis=1) < 0.5 * target[chosen]
        # which chosen edge (if any) each vertex belongs to
        owner = np.full(n, -1)
        owner[ca] = np.arange(len(chosen))
        owner[cb] = np.arange(len(chosen))
        moved = v.copy()
        moved[ca] = new_pos
        moved[cb] = new_pos
        face_owner = owner[f].max(axis=1)
        touched = face_owner >= 0
        e = np.maximum(face_owner, 0)
        collapsing = touched & (f == ca[e][:, None]).any(axis=1) & (f == cb[e][:, None]).any(axis=1)
        check = touched & ~collapsing
        before = _face_normals(v, f[check])
        after = _face_normals(moved, f[check])
        cos_turn = (before * after).sum(axis=1) / np.maximum(
            np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1), 1e-12)
        tri = moved[f[check]]
        longest = np.max([np.linalg.norm(tri[:, i] - tri[:, (i + 1) % 3], axis=1) for i in range(3)], axis=0)
        bad_face = (cos_turn < cos_limit) | (longest > 1.6 * target_length(tri.mean(axis=1)))
        bad_edge = np.zeros(len(chosen), bool)
        bad_edge[face_owner[check][bad_face]] = True
        ok &= ~bad_edge
        if ok.sum() < max(1, len(v) // 500):  # converged: what is left is blocked by the shape checks
            break
        ca, cb, new_pos = ca[ok], cb[ok], new_pos[ok]
        v[ca] = new_pos
        remap = np.arange(n)
        remap[cb] = ca
        f = remap[f]
        f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
        used = np.zeros(n, bool)
        used[f.ravel()] = True
        index = np.cumsum(used) - 1
        v, f = v[used], index[f]
    return v, f


def ambient_occlusion(sdf, vertices: np.ndarray, normals: np.ndarray, *, reach: float = 9.0,
                      steps: int = 5) -> np.ndarray:
    """How open each surface point is (1 = open, towards 0 in creases), from the distance field sampled
    along the normal — the classic distance-field occlusion estimate."""
    occlusion = np.zeros(len(vertices))
    for i in range(1, steps + 1):
        h = reach * i / steps
        occlusion += (h - np.minimum(_sample(sdf, vertices + normals * h), h)) / h * 0.5 ** (i - 1)
    return np.clip(1.0 - occlusion * 0.9, 0.0, 1.0)


# --- small parametric meshes ----------------------------------------------------------------------------


def _grid_faces(rows: int, cols: int, *, wrap: bool = False) -> np.ndarray:
    """Triangles of a rows × cols vertex grid (row-major), optionally closed round the columns."""
    faces = []
    last = cols if wrap else cols - 1
    for r in range(rows - 1):
        for c in range(last):
            c1 = (c + 1) % cols
            a, b, d, e = r * cols + c, r * cols + c1, (r + 1) * cols + c, (r + 1) * cols + c1
            faces += [(a, d, b), (b, d, e)]
    return np.array(faces, dtype=np.int64)


def _sphere_cap(radius: float, max_angle_degrees: float, rings: int, segments: int,
                centre=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """A cap of a sphere round +z (its pole), from the pole out to `max_angle_degrees`."""
    theta = np.radians(np.linspace(0.0, max_angle_degrees, rings + 1)[1:])
    phi = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], axis=-1).reshape(-1, 3)
    points = np.vstack([[0.0, 0.0, 1.0], ring]) * radius
    fan = np.array([(0, 1 + i, 1 + (i + 1) % segments) for i in range(segments)])
    body = _grid_faces(rings, segments, wrap=True) + 1  # rows run outwards from the pole: faces +z
    return points + np.asarray(centre), np.vstack([fan, body])


def _ellipsoid_mesh(centre, radii, rings: int = 14, segments: int = 24) -> tuple[np.ndarray, np.ndarray]:
    v, f = _sphere_cap(1.0, 180.0 - 180.0 / rings, rings - 1, segments)
    v = np.vstack([v, [0.0, 0.0, -1.0]])
    last = len(v) - 1
    base = last - segments
    f = np.vstack([f, [(last, base + (i + 1) % segments, base + i) for i in range(segments)]])
    return v * np.asarray(radii) + np.asarray(centre), f


def _arch_mesh(front_z: float, depth_per_mm2: float, half_width: float, top: float, bottom: float,
               thickness: float, columns: int = 41) -> tuple[np.ndarray, np.ndarray]:
    """A row of teeth: a curved slab along the dental arch z = front_z − k·x², from y=top to y=bottom."""
    x = np.linspace(-half_width, half_width, columns)
    z = front_z - depth_per_mm2 * x * x
    # outward normal of the arch in the x-z plane
    nx, nz = 2 * depth_per_mm2 * x, np.ones_like(x)
    norm = np.hypot(nx, nz)
    nx, nz = nx / norm, nz / norm
    rows = []
    for y, out in ((top, 0.0), (bottom + 0.8, 0.0), (bottom, -0.4), (bottom, -thickness + 0.4),
                   (bottom + 0.8, -thickness), (top, -thickness)):
        rows.append(np.stack([x + nx * out, np.full_like(x, y), z + nz * out], axis=1))
    v = np.vstack(rows)
    f = _grid_faces(len(rows), columns)
    middle = f[columns // 2 * 2]  # a face of the front surface, at the middle of the arch
    if np.cross(v[middle[1]] - v[middle[0]], v[middle[2]] - v[middle[0]])[2] < 0:
        f = f[:, ::-1]  # wind so that the front faces the lips
    return v, f


def _teeth_colours(v: np.ndarray, light: float) -> np.ndarray:
    """Teeth in the mouth's shade, with darker gaps between them and darker towards the back."""
    # incisors 8.5 and 6.5 mm wide, then canines and premolars about 7.5 mm, measured along the arch
    gaps = np.array([0.0, 8.5, 15.0, 22.5, 30.0])
    along = np.abs(v[:, 0])
    gap = np.exp(-((along[:, None] - gaps[None, :]) / 0.6) ** 2).max(axis=1)
    back = np.clip(along / 22.0, 0.0, 1.0)
    return TEETH[None, :] * (light * (1.0 - 0.55 * gap) * (1.0 - 0.5 * back))[:, None]


def _surface_z(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Where a ray from the front along −z first meets the skin, by bisection (for points on the face)."""
    lo = np.full(len(x), -60.0)   # inside the head
    hi = np.full(len(x), 80.0)    # in front of it
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        inside = head_sdf((x, y, mid)) < 0
        lo = np.where(inside, mid, lo)
        hi = np.where(inside, hi, mid)
    return 0.5 * (lo + hi)


def _brow_mesh() -> tuple[np.ndarray, np.ndarray]:
    """Both brows: tapered strips laid on the skin along the brow ridge, raised a little in the middle."""
    # the subject's left brow, inner head to tail: (x, y, half thickness)
    control = np.array([[13.0, 14.0, 2.7], [19.0, 16.8, 2.9], [28.0, 19.2, 2.6], [38.0, 20.0, 2.2],
                        [46.0, 18.2, 1.6], [53.0, 14.5, 0.7]])
    u = np.linspace(0.0, 1.0, 26)
    knots = np.linspace(0.0, 1.0, len(control))
    cx, cy, half = (np.interp(u, knots, control[:, i]) for i in range(3))
    across = np.linspace(-1.0, 1.0, 5)
    # the strip's cross direction is perpendicular to the centreline in the x-y plane
    tx, ty = np.gradient(cx), np.gradient(cy)
    tn = np.hypot(tx, ty)
    nx, ny = -ty / tn, tx / tn
    px = cx[None, :] + across[:, None] * half[None, :] * nx[None, :]
    py = cy[None, :] + across[:, None] * half[None, :] * ny[None, :]
    px, py = px.ravel(), py.ravel()
    pz = _surface_z(px, py)
    points = np.stack([px, py, pz], axis=1)
    normal = _gradient(head_sdf, points)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    lift = 0.25 + 0.9 * np.repeat(np.cos(across * np.pi / 2) ** 0.7, len(u))
    left = points + normal * lift[:, None]
    faces = _grid_faces(len(across), len(u))
    # wind towards the camera
    tri = left[faces]
    if np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2].mean() < 0:
        faces = faces[:, ::-1]
    right = left * (-1.0, 1.0, 1.0)
    return np.vstack([right, left]), np.vstack([faces[:, ::-1], faces + len(left)])


# --- eyelids --------------------------------------------------------------------------------------------

LID_COLUMNS = 28
LID_ROWS = 9
UPPER_LID_RADIUS = EYE_RADIUS + 1.1
LOWER_LID_RADIUS = EYE_RADIUS + 0.8
LID_MARGIN_RADIUS = EYE_RADIUS + 0.25
INNER_CORNER, OUTER_CORNER = -56.0, 60.0          # horizontal angles of the eye corners (deg, + outwards)
CORNER_ELEVATION = (-3.0, 2.0)                    # inner, outer corner elevation (deg)
UPPER_OPEN, LOWER_OPEN = 25.0, 17.0               # lid edge heights above/below the corner line (deg)


def _lid_columns() -> np.ndarray:
    return np.linspace(INNER_CORNER - 28.0, OUTER_CORNER + 30.0, LID_COLUMNS)


def _lid_edges(blink: float, wide: float, squint: float, cheek_squint: float,
               gaze_up_degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Elevation (deg) of the upper and lower lid edge at each lid column, for one eye's channel values."""
    a = _lid_columns()
    t = np.clip((a - 0.5 * (INNER_CORNER + OUTER_CORNER)) / (0.5 * (OUTER_CORNER - INNER_CORNER)), -1.0, 1.0)
    mid = np.interp(t, [-1.0, 1.0], CORNER_ELEVATION)
    upper_shape = (1.0 - t * t) ** 0.55 * (1.0 - 0.12 * t)
    lower_shape = (1.0 - t * t) ** 0.75 * (1.0 + 0.1 * t)
    lower = mid - lower_shape * LOWER_OPEN * (1.0 - 0.4 * squint - 0.3 * cheek_squint - 0.15 * blink) \
        + lower_shape * 0.15 * gaze_up_degrees
    open_upper = mid + upper_shape * (UPPER_OPEN * (1.0 + 0.55 * wide - 0.3 * squint) + 0.45 * gaze_up_degrees)
    closed_upper = lower - 2.0 * lower_shape - 0.5   # a closed lid overlaps the lower one
    upper = open_upper + (closed_upper - open_upper) * blink
    return upper, lower


def _lid_shell(edge: np.ndarray, far: float, radius: float, centre: np.ndarray, side: float) -> np.ndarray:
    """Vertices [LID_ROWS, LID_COLUMNS, 3] of one lid: row 0 is the margin against the eyeball, then the
    shell from the edge elevation out to `far` elevation (deg)."""
    a = np.radians(_lid_columns())[None, :]
    v = np.linspace(0.0, 1.0, LID_ROWS - 1)[:, None] ** 1.5
    elevation = np.radians(edge[None, :] + (far - edge[None, :]) * v)
    elevation = np.vstack([np.radians(edge)[None, :], elevation])
    r = np.full(elevation.shape, radius)
    r[0] = LID_MARGIN_RADIUS
    # the first shell row leans a little back over the margin, which rounds the lid's edge
    elevation[1] += np.radians(0.8) * np.sign(far)
    x = r * np.cos(elevation) * np.sin(a) * side
    y = r * np.sin(elevation)
    z = r * np.cos(elevation) * np.cos(a)
    return np.stack([x, y, z], axis=-1) + centre


def _lid_faces() -> np.ndarray:
    """Faces of the four lids (right upper, right lower, left upper, left lower), wound outwards."""
    one = _grid_faces(LID_ROWS, LID_COLUMNS)
    n = LID_ROWS * LID_COLUMNS
    out = []
    for k, (side, upper) in enumerate(((-1, True), (-1, False), (1, True), (1, False))):
        # rows run from the edge outwards: up for an upper lid, down for a lower one; mirrored on the right
        flip = (side > 0) != upper
        out.append((one if flip else one[:, ::-1]) + k * n)
    return np.vstack(out)


def _lid_colours() -> np.ndarray:
    """Skin with a dark lash line along each lid's margin."""
    rows = np.arange(LID_ROWS)[:, None].repeat(LID_COLUMNS, axis=1)
    cols = []
    for upper in (True, False, True, False):
        lash = np.where(rows <= 1, 0.9 if upper else 0.3, np.where(rows == 2, 0.35 if upper else 0.0, 0.0))
        colour = SKIN[None, None, :] * (1.0 - lash[..., None]) + LASH_LINE * lash[..., None]
        colour = colour * np.where(rows >= 3, 0.96, 1.0)[..., None]
        cols.append(colour.reshape(-1, 3))
    rgb = np.vstack(cols)
    return np.hstack([rgb, np.ones((len(rgb), 1))]).astype(np.float32)


# --- deformation fields ---------------------------------------------------------------------------------

MIRROR = np.array([-1.0, 1.0, 1.0])


def _lower_side(p: np.ndarray) -> np.ndarray:
    """1 below the line between the lips, 0 above (sharp: the slit walls are ±1 mm from it)."""
    return _smoothstep(MOUTH_Y + 0.6, MOUTH_Y - 0.6, p[:, 1])


def _lips(p: np.ndarray) -> np.ndarray:
    """The lips and the skin right round them: a plateau of 1 over the mouth, fading over the last 40 %."""
    q = (p - np.array([0.0, MOUTH_Y, 14.0])) / np.array([MOUTH_HALF_WIDTH + 11.0, 19.0, 24.0])
    return _smoothstep(1.0, 0.6, np.sqrt(np.einsum("ij,ij->i", q, q)))


def _corner(p: np.ndarray) -> np.ndarray:
    return _bump(p, (MOUTH_HALF_WIDTH, MOUTH_Y, 10.0), (19.0, 17.0, 22.0))


def jaw_weight(p: np.ndarray) -> np.ndarray:
    """How much each point turns with the mandible (0..1): below a surface that runs along the line between
    the lips, through the mouth and back up to the jaw hinge; sharp at the lips, softer across the cheeks."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    back = -35.0
    y_split = np.where(z >= back, MOUTH_Y,
                       MOUTH_Y + (back - z) * (JAW_HINGE[1] - MOUTH_Y) / (back - JAW_HINGE[2]))
    # near the lips the band sets how far each lip turns: 1.5/band is the share of the opening at that x,
    # which follows an ellipse from the middle of the mouth to its corners, so the mouth opens as an oval
    across = np.clip(np.abs(x) / (MOUTH_HALF_WIDTH + 1.5), 0.0, 1.0)
    band = np.minimum(1.5 / np.sqrt(np.maximum(1.0 - across ** 2, 1e-3)), 30.0)
    band = np.maximum(band, 0.8 * (np.abs(x) - MOUTH_HALF_WIDTH + 9.0)) + 0.35 * np.maximum(0.0, back - z)
    below = _smoothstep(-band, band, y_split - y)
    # the throat behind the chin stretches; below it, the neck does not follow the jaw
    throat = 1.0 - _smoothstep(-118.0, -136.0, y) * _smoothstep(-12.0, -32.0, z)
    ears = _smoothstep(66.0, 58.0, np.abs(x))
    return below * throat * ears * _smoothstep(JAW_HINGE[2] - 12.0, JAW_HINGE[2] + 14.0, z)


def _left_fields(p: np.ndarray) -> dict[str, np.ndarray]:
    """Displacements (mm, at weight 1) of the subject's left-side channels; right ones are their mirror."""
    lower, upper = _lower_side(p), 1.0 - _lower_side(p)
    corner = _corner(p)[:, None]

    def along(w, d):
        return np.asarray(w)[:, None] * np.asarray(d, float)[None, :]

    return {
        "browOuterUp": along(_brow_band(p) * _smoothstep(12.0, 46.0, p[:, 0]), (0.5, 6.5, 0.0)),
        "browDown": along(_brow_band(p) * _smoothstep(50.0, 10.0, p[:, 0]) * _smoothstep(-2.0, 6.0, p[:, 0]),
                          (-2.2, -5.0, 1.2)),
        "eyeSquint": along(_bump(p, (31.0, -11.0, 11.0), (15.0, 7.0, 16.0)), (0.0, 1.5, 0.3)),
        "cheekSquint": along(_bump(p, (36.0, -25.0, 14.0), (21.0, 15.0, 20.0)), (0.0, 3.5, 1.2)),
        "noseSneer": along(_bump(p, (9.5, -33.0, 20.0), (10.0, 13.0, 15.0)), (0.8, 3.0, 0.0))
        + along(_bump(p, (12.0, 14.0, 12.0), (12.0, 8.0, 16.0)), (0.0, -2.0, 0.0)),
        "mouthSmile": corner * (5.5, 8.0, -3.5) + along(_bump(p, (35.0, -46.0, 12.0), (20.0, 20.0, 24.0)),
                                                         (1.5, 3.5, 2.0)),
        "mouthFrown": corner * (1.0, -5.5, -0.5),
        "mouthStretch": corner * (6.5, -2.0, -2.5),
        "mouthDimple": corner * (2.5, 0.0, -3.5),
        "mouthPress": along(_bump(p, (11.0, MOUTH_Y, 17.0), (20.0, 12.0, 18.0)) * (lower - upper), (0.0, 2.0, 0.0)),
        "mouthUpperUp": along(_bump(p, (10.0, MOUTH_Y + 5.0, 18.0), (17.0, 11.0, 18.0)) * upper, (0.0, 4.5, 1.0)),
        "mouthLowerDown": along(_bump(p, (10.0, MOUTH_Y - 6.0, 17.0), (17.0, 12.0, 18.0)) * lower, (0.0, -5.0, 0.5)),
    }


def _brow_band(p: np.ndarray) -> np.ndarray:
    """The skin that moves with the brows: the brow itself, fading to the upper lid below and the hairline above."""
    y, z = p[:, 1], p[:, 2]
    return _smoothstep(-3.0, 11.0, y) * _smoothstep(66.0, 22.0, y) * _smoothstep(-45.0, -15.0, z)


def _symmetric_fields(p: np.ndarray) -> dict[str, np.ndarray]:
    lower, upper = _lower_side(p), 1.0 - _lower_side(p)
    lips = _lips(p)
    x, y = p[:, 0], p[:, 1]
    inner_brows = _brow_band(p) * _smoothstep(44.0, 10.0, np.abs(x))
    jaw = jaw_weight(p)
    puff = _bump(_mirror_rows(p), (40.0, -62.0, 4.0), (22.0, 24.0, 30.0))
    zeros = np.zeros_like(x)
    return {
        "browInnerUp": np.stack([zeros, 7.5 * inner_brows, zeros], axis=1),
        "cheekPuff": np.stack([6.0 * np.sign(x) * puff, zeros, 2.0 * puff], axis=1),
        "mouthPucker": np.stack([-0.4 * x * lips, -0.12 * (y - MOUTH_Y) * lips, 9.0 * lips], axis=1),
        "mouthFunnel": np.stack([-0.22 * x * lips, (3.5 * upper - 4.5 * lower) * lips, 7.0 * lips], axis=1),
        "mouthRollLower": (_bump(p, (0.0, MOUTH_Y - 6.0, 18.0), (25.0, 10.0, 16.0)) * lower)[:, None]
        * np.array([0.0, 2.0, -4.0]),
        "mouthRollUpper": (_bump(p, (0.0, MOUTH_Y + 6.0, 18.0), (25.0, 10.0, 16.0)) * upper)[:, None]
        * np.array([0.0, -2.0, -4.0]),
        "mouthShrugLower": (_bump(p, (0.0, MOUTH_Y - 16.0, 14.0), (30.0, 28.0, 26.0)) * lower)[:, None]
        * np.array([0.0, 3.5, 1.5]),
        "mouthShrugUpper": (_bump(p, (0.0, MOUTH_Y + 6.0, 18.0), (26.0, 12.0, 18.0)) * upper)[:, None]
        * np.array([0.0, 2.5, 1.0]),
        "mouthLeft": lips[:, None] * np.array([6.0, 0.0, 0.0]),
        "mouthRight": lips[:, None] * np.array([-6.0, 0.0, 0.0]),
        "jawForward": jaw[:, None] * np.array([0.0, 0.0, 6.0]),
        "jawLeft": jaw[:, None] * np.array([7.0, 0.0, 0.0]),
        "jawRight": jaw[:, None] * np.array([-7.0, 0.0, 0.0]),
    }


def _mirror_rows(p: np.ndarray) -> np.ndarray:
    return np.column_stack([np.abs(p[:, 0]), p[:, 1], p[:, 2]])


def displacement_fields(p: np.ndarray) -> dict[str, np.ndarray]:
    """Every linear channel's displacement [N, 3] (mm at weight 1) for rest points p [N, 3]."""
    fields = _symmetric_fields(p)
    mirrored = _left_fields(p * MIRROR)
    for name, left in _left_fields(p).items():
        fields[name + "Left"] = left
        fields[name + "Right"] = mirrored[name] * MIRROR
    return fields


# --- the model: everything that does not change between frames ----------------------------------------

# Target edge lengths (mm) for the skin mesh: fine where the face moves and curves, coarse elsewhere.
_DETAIL = (  # (centre, radii, edge length there)
    ((0.0, MOUTH_Y, 12.0), (36.0, 20.0, 32.0), 1.15),
    ((31.0, 1.0, -4.0), (23.0, 18.0, 20.0), 1.3),
    ((-31.0, 1.0, -4.0), (23.0, 18.0, 20.0), 1.3),
    ((0.0, -33.0, 18.0), (22.0, 22.0, 22.0), 1.8),
    ((0.0, -35.0, 0.0), (80.0, 100.0, 60.0), 4.0),
    ((73.0, -10.0, -90.0), (14.0, 34.0, 22.0), 2.6),
    ((-73.0, -10.0, -90.0), (14.0, 34.0, 22.0), 2.6),
)
_COARSE = 7.5


def _skin_target_length(p: np.ndarray) -> np.ndarray:
    length = np.full(len(p), _COARSE)
    for centre, radii, fine in _DETAIL:
        w = np.sqrt(_bump(p, centre, radii))
        length = np.minimum(length, fine + (_COARSE - fine) * (1.0 - w))
    return length


def _with_alpha(rgb: np.ndarray) -> np.ndarray:
    return np.hstack([rgb, np.ones((len(rgb), 1))]).astype(np.float32)


def _shade_with_occlusion(rgb: np.ndarray, occlusion: np.ndarray) -> np.ndarray:
    """Darken creases, more in blue and green than in red: light scattered inside skin comes out warm."""
    ao = occlusion[:, None]
    return rgb * (0.35 + 0.65 * ao ** np.array([0.75, 1.0, 1.15]))


def _lip_mask(p: np.ndarray) -> np.ndarray:
    """1 on the red of the lips (the vermilion), 0 on the skin round them, soft at the border."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ux = np.clip(np.abs(x) / (MOUTH_HALF_WIDTH + 0.5), 0.0, 1.0)
    upper_height = 8.0 * np.sqrt(1.0 - ux ** 2) - 1.4 * np.exp(-(x / 3.2) ** 2) \
        + 0.7 * np.exp(-((np.abs(x) - 6.0) / 3.0) ** 2)
    lower_height = 10.0 * (1.0 - ux ** 2) ** 0.6
    above = y - MOUTH_Y
    height = np.where(above >= 0, upper_height, lower_height)
    inside = _smoothstep(1.6, -1.6, np.abs(above) - height)
    return inside * _smoothstep(-6.0, 0.0, z)


def _skin_colours(v: np.ndarray, occlusion: np.ndarray, normals_y: np.ndarray) -> np.ndarray:
    cols = _columns(v)
    rgb = np.repeat(SKIN[None, :], len(v), axis=0)
    blush = 0.3 * _bump(_mirror_rows(v), (38.0, -32.0, 8.0), (24.0, 20.0, 24.0)) \
        + 0.18 * _bump(v, (0.0, -34.0, 26.0), (10.0, 10.0, 12.0)) \
        + 0.25 * _bump(_mirror_rows(v), (78.0, -10.0, -88.0), (14.0, 32.0, 22.0))
    rgb += (SKIN_BLUSH - SKIN)[None, :] * blush[:, None]
    lips = _lip_mask(v)
    rgb += (LIPS[None, :] - rgb) * lips[:, None]
    # inside the mouth and the eye sockets: how far the point lies inside the uncarved head
    depth = -_head_base(cols)
    in_mouth = _smoothstep(0.8, 0.2, _mouth_carve(cols)) * _smoothstep(0.3, 4.0, depth)
    inside_colour = MOUTH_INSIDE[None, :] + (MOUTH_DEEP - MOUTH_INSIDE)[None, :] * _smoothstep(4.0, 14.0, depth)[:, None]
    rgb += (inside_colour - rgb) * in_mouth[:, None]
    in_socket = _smoothstep(0.8, 0.2, _eye_socket(cols)) * _smoothstep(0.3, 3.0, depth)
    rgb += (SOCKET[None, :] - rgb) * (0.5 * in_socket)[:, None]
    # nostrils: dark ovals under the nose
    nostril = _bump(_mirror_rows(v), (6.2, -44.0, 17.0), (3.4, 3.0, 4.4)) * _smoothstep(0.0, -0.5, normals_y)
    rgb *= (1.0 - 0.85 * np.clip(nostril * 2.0, 0.0, 1.0))[:, None]
    return _with_alpha(_shade_with_occlusion(rgb, occlusion))


def _occluders(p: Points) -> np.ndarray:
    """Skin, hair and eyeballs together: what shades the skin's creases."""
    x, y, z = p
    eyes = np.minimum(*[np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) - EYE_RADIUS
                        for c in EYE_CENTRES])
    return np.minimum(np.minimum(head_sdf(p), eyes), hair_sdf(p))


@dataclass(frozen=True)
class AvatarModel:
    """The avatar at rest and its deformation data; built once per process by `avatar_model()`.

    Parts that share a material are merged so that a frame takes few draw calls (each costs milliseconds
    on a software rasteriser): the face is skin + eyelids + brows, the mouth is teeth + tongue.
    """

    skin: tuple[np.ndarray, np.ndarray, np.ndarray]         # vertices, faces, colours
    skin_fields: np.ndarray                                  # [52, N, 3] displacement at weight 1 (arkit52 order)
    skin_jaw: np.ndarray                                     # [N] 0..1, how much each vertex turns with the jaw
    skin_upper_lip: np.ndarray                               # [N] 0..1
    skin_lower_lip: np.ndarray                               # [N] 0..1
    brows: np.ndarray                                        # [M, 3] rest vertices
    brow_fields: np.ndarray                                  # [52, M, 3]
    face_faces: np.ndarray                                   # skin, then the four lids, then the brows
    face_colours: np.ndarray
    eye: dict[str, tuple[np.ndarray, np.ndarray]]            # sclera, iris, pupil of one eye, about its centre
    mouth: tuple[np.ndarray, np.ndarray, np.ndarray]         # teeth and tongue at rest, faces, colours
    mouth_on_jaw: np.ndarray                                 # [K] bool: lower teeth and tongue
    hair: tuple[np.ndarray, np.ndarray, np.ndarray]
    body: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def n_skin_vertices(self) -> int:
        return int(len(self.skin[0]))

    @property
    def n_lid_vertices(self) -> int:
        return 4 * LID_ROWS * LID_COLUMNS


def _field_stack(p: np.ndarray) -> np.ndarray:
    fields = displacement_fields(p)
    stack = np.zeros((len(ARKIT52), len(p), 3), np.float32)
    for k, name in enumerate(ARKIT52):
        if name in fields:
            stack[k] = fields[name]
    return stack


def _frozen(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.setflags(write=False)
    return arrays


def _build_skin() -> tuple[np.ndarray, np.ndarray]:
    xs = _axis(-92.0, 92.0, 2.6, [(-62.0, 62.0, 1.3)])
    ys = _axis(-132.0, 132.0, 2.6, [(MOUTH_Y - 14.0, MOUTH_Y + 12.0, 0.55), (MOUTH_Y + 12.0, 26.0, 1.2)])
    zs = _axis(-186.0, 46.0, 2.6, [(-32.0, 46.0, 1.2)])
    v, f = surface_nets(head_sdf, xs, ys, zs)
    # the scalp under the hair and the bottom of the head's neck, inside the body's, are never seen
    v, f = _drop_vertices(v, f, (hair_sdf(_columns(v)) > -4.0) & (body_sdf(_columns(v)) > -2.0))
    return simplify(v, f, head_sdf, _skin_target_length)


def _build_hair() -> tuple[np.ndarray, np.ndarray]:
    step = 2.4
    v, f = surface_nets(hair_sdf, _axis(-96.0, 96.0, step, []), _axis(-75.0, 140.0, step, [(40.0, 80.0, 1.2)]),
                        _axis(-196.0, 40.0, step, [(-30.0, 40.0, 1.2)]))
    v, f = _drop_vertices(v, f, _head_base(_columns(v)) > -2.5)  # the hair's inside is within the head

    def target(p):
        edge = np.abs(_hairline_height(_columns(p)) - p[:, 1])
        return 2.0 + 7.0 * _smoothstep(2.0, 16.0, edge)

    return simplify(v, f, hair_sdf, target)


def _build_body() -> tuple[np.ndarray, np.ndarray]:
    step = 4.0
    v, f = surface_nets(body_sdf, _axis(-240.0, 240.0, step, []), _axis(-470.0, -40.0, step, []),
                        _axis(-190.0, 70.0, step, []))
    v, f = _drop_vertices(v, f, v[:, 1] > -460.0)  # open at the bottom, below the frame
    def target(p):
        near_collar = np.maximum(np.abs(p[:, 1] - _collar_height(p)), np.hypot(p[:, 0], p[:, 2] + 84.0) - 70.0)
        return np.minimum(3.0 + 8.0 * _smoothstep(2.0, 14.0, near_collar),
                          9.0 + 12.0 * _smoothstep(-190.0, -260.0, p[:, 1]))

    return simplify(v, f, body_sdf, target)


def _body_colours(v: np.ndarray, occlusion: np.ndarray) -> np.ndarray:
    """Skin on the neck, a shirt with a crew neckline below."""
    collar = _collar_height(v)
    from_neck = np.hypot(v[:, 0], v[:, 2] + 84.0)
    neck_skin = _smoothstep(collar - 0.8, collar + 0.8, v[:, 1]) * _smoothstep(66.0, 62.0, from_neck)
    shirt = 1.0 - neck_skin
    rib = shirt * _smoothstep(collar - 10.0, collar - 8.0, v[:, 1])
    rgb = SKIN[None, :] * (1.0 - shirt[:, None]) + SHIRT[None, :] * shirt[:, None]
    rgb *= (1.0 - 0.2 * rib)[:, None]
    return _with_alpha(_shade_with_occlusion(rgb, occlusion))


@functools.lru_cache(maxsize=1)
def avatar_model() -> AvatarModel:
    """Build the avatar (a few seconds, once per process)."""
    from render.offscreen import vertex_normals

    skin_v, skin_f = _build_skin()
    skin_normals = vertex_normals(skin_v, skin_f).astype(np.float64)
    skin_occlusion = ambient_occlusion(_occluders, skin_v, skin_normals)
    skin_colours = _skin_colours(skin_v, skin_occlusion, skin_normals[:, 1])
    lips = _lips(skin_v)
    lower = _lower_side(skin_v)

    brow_v, brow_f = _brow_mesh()
    n_skin, n_lids = len(skin_v), 4 * LID_ROWS * LID_COLUMNS
    face_faces = np.vstack([skin_f, _lid_faces() + n_skin, brow_f + n_skin + n_lids])
    brow_colours = np.tile(np.r_[BROWS, 1.0].astype(np.float32), (len(brow_v), 1))
    face_colours = np.vstack([skin_colours, _lid_colours(), brow_colours])

    eye = {
        "sclera": _sphere_cap(EYE_RADIUS, 120.0, 12, 32),  # the back of the eyeball is never seen
        "iris": _sphere_cap(EYE_RADIUS + 0.06, 26.0, 5, 32),
        "pupil": _sphere_cap(EYE_RADIUS + 0.12, 10.5, 2, 32),
    }
    upper_teeth = _arch_mesh(0.5, 0.034, 19.0, MOUTH_Y + 8.0, MOUTH_Y - 2.2, 6.0)
    lower_teeth = _arch_mesh(-4.0, 0.034, 17.0, MOUTH_Y - 8.0, MOUTH_Y - 2.5, 5.0)
    tongue = _ellipsoid_mesh((0.0, MOUTH_Y - 8.0, -15.0), (16.0, 4.5, 17.0), rings=10, segments=18)
    pieces = [  # (mesh, colours, moves with the jaw); inside the mouth everything is in shade
        (upper_teeth, _teeth_colours(upper_teeth[0], 0.6), False),
        (lower_teeth, _teeth_colours(lower_teeth[0], 0.35), True),
        (tongue, np.tile(TONGUE * 0.2, (len(tongue[0]), 1)), True),
    ]
    mouth_v, mouth_f, mouth_c, on_jaw, offset = [], [], [], [], 0
    for (v, f), colours, jaw in pieces:
        mouth_v.append(v)
        mouth_f.append(f + offset)
        mouth_c.append(np.hstack([colours, np.ones((len(v), 1))]))
        on_jaw.append(np.full(len(v), jaw))
        offset += len(v)

    hair_v, hair_f = _build_hair()
    hair_occlusion = ambient_occlusion(hair_sdf, hair_v, vertex_normals(hair_v, hair_f).astype(np.float64))
    hair_cols = _columns(hair_v)
    lighter = np.clip((hair_v[:, 1] - 40.0) / 80.0, 0.0, 1.0) * _hair_taper(hair_cols)
    hair_rgb = HAIR[None, :] * (0.7 + 0.3 * _hair_taper(hair_cols))[:, None] + (HAIR_LIGHT - HAIR)[None, :] * lighter[:, None]
    hair_colours = _with_alpha(hair_rgb * (0.45 + 0.55 * hair_occlusion[:, None]))
    body_v, body_f = _build_body()
    # only the body's own creases: the head turns, so any shade it casts on the neck would be wrong
    body_occlusion = ambient_occlusion(body_sdf, body_v, vertex_normals(body_v, body_f).astype(np.float64), reach=10.0)
    body_colours = _body_colours(body_v, body_occlusion)

    f32 = np.float32
    return AvatarModel(
        skin=_frozen(skin_v.astype(f32), skin_f.astype(np.int32), skin_colours),
        skin_fields=_frozen(_field_stack(skin_v))[0],
        skin_jaw=_frozen(jaw_weight(skin_v).astype(f32))[0],
        skin_upper_lip=_frozen((lips * (1.0 - lower)).astype(f32))[0],
        skin_lower_lip=_frozen((lips * lower).astype(f32))[0],
        brows=_frozen(brow_v.astype(f32))[0],
        brow_fields=_frozen(_field_stack(brow_v))[0],
        face_faces=_frozen(face_faces.astype(np.int32))[0],
        face_colours=_frozen(face_colours.astype(f32))[0],
        eye={k: _frozen(v.astype(f32), f.astype(np.int32)) for k, (v, f) in eye.items()},
        mouth=_frozen(np.vstack(mouth_v).astype(f32), np.vstack(mouth_f).astype(np.int32),
                      np.vstack(mouth_c).astype(f32)),
        mouth_on_jaw=_frozen(np.concatenate(on_jaw))[0],
        hair=_frozen(hair_v.astype(f32), hair_f.astype(np.int32), hair_colours),
        body=_frozen(body_v.astype(f32), body_f.astype(np.int32), body_colours),
    )


# --- the rig --------------------------------------------------------------------------------------------

CHANNEL = {name: k for k, name in enumerate(ARKIT52)}
MAX_GAZE_DEGREES = (25.0, 20.0)  # sideways, up/down
_RIGHT, _LEFT = 0, 1


def head_transform(pose: np.ndarray) -> np.ndarray:
    """4×4 placing the head for a head pose (rx, ry, rz degrees; tx, ty, tz mm): R = Rz·Ry·Rx about
    `HEAD_PIVOT`, then the translation (the convention of inference/face_geometry.py)."""
    rx, ry, rz = np.radians(np.asarray(pose[:3], float))
    rot_x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    rot_y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    rot_z = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    rot = rot_z @ rot_y @ rot_x
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = HEAD_PIVOT - rot @ HEAD_PIVOT + np.asarray(pose[3:6], float)
    return out


def _rotation_about_x(degrees: float, pivot: np.ndarray) -> np.ndarray:
    a = math.radians(degrees)
    out = np.eye(4)
    out[1:3, 1:3] = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
    out[:3, 3] = pivot - out[:3, :3] @ pivot
    return out


def jaw_transform(jaw_open: float) -> np.ndarray:
    """The mandible's rigid motion at `jaw_open` (0..1): a turn about the hinge (chin down and back) and the
    condyles' forward glide. Moves the lower teeth and the tongue; the skin follows it vertex by vertex."""
    out = _rotation_about_x(JAW_OPEN_DEGREES * jaw_open, JAW_HINGE)
    out[:3, 3] += JAW_GLIDE * jaw_open
    return out


def _translation(offset) -> np.ndarray:
    out = np.eye(4)
    out[:3, 3] = offset
    return out


class Avatar(Rig):
    """The project's stylised head; see the module docstring. One instance can play any number of clips."""

    name = "avatar"
    consumes = "arkit52"

    def __init__(self):
        self.model = avatar_model()

    # -- clips -------------------------------------------------------------------------------------------

    def prepare(self, clip: MotionClip) -> MotionClip:
        return arkit52_performance(clip, rig=self.name)

    def _frame(self, clip: MotionClip, frame: int) -> tuple[np.ndarray, np.ndarray]:
        if clip.layout != "arkit52" or clip.head_pose is None:
            raise RigError("parts() needs the clip returned by Avatar.prepare (arkit52 with a head pose)")
        if not 0 <= frame < clip.n_frames:
            raise RigError(f"frame {frame} is outside the clip's {clip.n_frames} frames")
        return clip.values[frame], clip.head_pose[frame]

    # -- posing ------------------------------------------------------------------------------------------

    def skin_vertices(self, weights: np.ndarray) -> np.ndarray:
        """The skin's vertices (head space, before the head pose) for 52 arkit weights in 0..1."""
        model = self.model
        rest = model.skin[0]
        w = np.clip(np.asarray(weights, np.float32), 0.0, 1.0)
        active = np.flatnonzero(w > 1e-4)
        v = rest + np.tensordot(w[active], model.skin_fields[active], axes=1) if len(active) else rest.copy()
        jaw_open = float(w[CHANNEL["jawOpen"]])
        close = min(float(w[CHANNEL["mouthClose"]]), jaw_open)
        angles = JAW_OPEN_DEGREES * (jaw_open * model.skin_jaw
                                     + close * (0.4 * model.skin_upper_lip - 0.6 * model.skin_lower_lip))
        moving = np.flatnonzero(np.abs(angles) > 1e-4)
        if len(moving):
            a = np.radians(angles[moving])
            rel = v[moving] - JAW_HINGE
            c, s = np.cos(a), np.sin(a)
            y = c * rel[:, 1] - s * rel[:, 2]
            z = s * rel[:, 1] + c * rel[:, 2]
            glide = (model.skin_jaw[moving] * jaw_open)[:, None] * JAW_GLIDE
            v[moving] = np.stack([rel[:, 0], y, z], axis=1) + JAW_HINGE + glide
        return v.astype(np.float32)

    def brow_vertices(self, weights: np.ndarray) -> np.ndarray:
        model = self.model
        w = np.clip(np.asarray(weights, np.float32), 0.0, 1.0)
        active = np.flatnonzero(w > 1e-4)
        if not len(active):
            return model.brows
        return (model.brows + np.tensordot(w[active], model.brow_fields[active], axes=1)).astype(np.float32)

    def lid_vertices(self, weights: np.ndarray) -> np.ndarray:
        """The four eyelids (right upper, right lower, left upper, left lower) in head space."""
        w = np.clip(np.asarray(weights, np.float32), 0.0, 1.0)
        shells = []
        for side_index, side_name, sign in ((_RIGHT, "Right", -1.0), (_LEFT, "Left", 1.0)):
            gaze_up = MAX_GAZE_DEGREES[1] * (w[CHANNEL["eyeLookUp" + side_name]] - w[CHANNEL["eyeLookDown" + side_name]])
            upper, lower = _lid_edges(float(w[CHANNEL["eyeBlink" + side_name]]), float(w[CHANNEL["eyeWide" + side_name]]),
                                      float(w[CHANNEL["eyeSquint" + side_name]]),
                                      float(w[CHANNEL["cheekSquint" + side_name]]), float(gaze_up))
            centre = EYE_CENTRES[side_index]
            shells.append(_lid_shell(upper, 82.0, UPPER_LID_RADIUS, centre, sign).reshape(-1, 3))
            shells.append(_lid_shell(lower, -78.0, LOWER_LID_RADIUS, centre, sign).reshape(-1, 3))
        return np.vstack(shells).astype(np.float32)

    def _gaze(self, w: np.ndarray, side_name: str, sign: float) -> np.ndarray:
        """Rotation of one eyeball: towards the subject's left is +yaw (Look Out on the left eye, In on the right)."""
        out_w, in_w = w[CHANNEL["eyeLookOut" + side_name]], w[CHANNEL["eyeLookIn" + side_name]]
        yaw = math.radians(MAX_GAZE_DEGREES[0] * float(out_w - in_w) * sign)
        pitch = math.radians(MAX_GAZE_DEGREES[1] * float(w[CHANNEL["eyeLookDown" + side_name]]
                                                         - w[CHANNEL["eyeLookUp" + side_name]]))
        rot_y = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
        rot_x = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
        out = np.eye(4)
        out[:3, :3] = rot_y @ rot_x
        return out

    def parts(self, clip: MotionClip, frame: int) -> list[Part]:
        weights, pose = self._frame(clip, frame)
        return self.pose_parts(weights, pose)

    def pose_parts(self, weights: np.ndarray, pose: np.ndarray | None = None) -> list[Part]:
        """The posed parts for one frame's 52 arkit weights and head pose (zeros when None)."""
        model = self.model
        w = np.clip(np.asarray(weights, np.float32), 0.0, 1.0)
        if w.shape != (len(ARKIT52),):
            raise RigError(f"need {len(ARKIT52)} arkit52 weights, got shape {w.shape}")
        head = head_transform(np.zeros(6) if pose is None else pose).astype(np.float32)
        face = np.vstack([self.skin_vertices(w), self.lid_vertices(w), self.brow_vertices(w)])
        jaw = jaw_transform(float(w[CHANNEL["jawOpen"]]))
        mouth = model.mouth[0].copy()
        on_jaw = model.mouth_on_jaw
        mouth[on_jaw] = mouth[on_jaw] @ jaw[:3, :3].T.astype(np.float32) + jaw[:3, 3].astype(np.float32)
        eyes = {name: [] for name in model.eye}
        for side_index, side_name, sign in ((_RIGHT, "Right", -1.0), (_LEFT, "Left", 1.0)):
            place = _translation(EYE_CENTRES[side_index]) @ self._gaze(w, side_name, sign)
            for name, (v, _f) in model.eye.items():
                eyes[name].append(v @ place[:3, :3].T.astype(np.float32) + place[:3, 3].astype(np.float32))

        def both(name):
            v, f = model.eye[name]
            return np.vstack(eyes[name]), np.vstack([f, f + len(v)])

        return [
            Part("body", *model.body, roughness=0.75, static=True),
            Part("hair", *model.hair, transform=head, roughness=0.55, static=True),
            Part("face", face, model.face_faces, model.face_colours, head, roughness=0.5),
            Part("mouth", mouth, model.mouth[1], model.mouth[2], head, roughness=0.4),
            Part("eye_whites", *both("sclera"), (*SCLERA, 1.0), head, roughness=0.3),
            Part("irises", *both("iris"), (*IRIS, 1.0), head, roughness=0.2),
            Part("pupils", *both("pupil"), (*PUPIL, 1.0), head, roughness=0.15),
        ]

    def look_at(self) -> tuple[np.ndarray, float]:
        return np.array([0.0, 4.0, -40.0], np.float32), 300.0


__all__ = ["Avatar", "AvatarModel", "avatar_model", "head_transform", "jaw_transform", "jaw_weight",
           "displacement_fields", "head_sdf", "HEAD_PIVOT", "JAW_HINGE", "EYE_CENTRES", "EYE_RADIUS", "MOUTH_Y"]
