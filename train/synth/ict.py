"""The ICT-FaceKit morphable head: geometry only (neutral + identity modes + expression modes).

The archive is third-party data that lives beside the project (``$NORFACE_RT_SHARED/ict``); it is
read from a path given by the caller, never bundled. Modes are stored as float16 offsets; they are
widened to float32 once here so every mesh evaluation is a single matrix product.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ICT_RELPATH = Path("ict") / "ict_facekit_v1.npz"

# Material classes the renderer shades differently. ICT's own material names are too fine (or, for
# the mouth socket, too coarse: it is tagged M_BackHead), so parts are mapped onto these.
MAT_SKIN = 0
MAT_MOUTH = 1  # mouth socket: dark, wet interior
MAT_GUMS = 2  # gums and tongue
MAT_TEETH = 3
MAT_SCLERA = 4
MAT_IRIS = 5
MAT_EYE_SOCKET = 7
MAT_HIDDEN = -1  # transparent helper layers (tear film, eye blend/occlusion): not drawn
# Visible iris diameter (~11.7 mm) over eyeball diameter (~24 mm).
IRIS_TO_BALL = 0.46


def shared_root(path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the shared data root: explicit argument, else ``$NORFACE_RT_SHARED``."""
    if path is not None:
        root = Path(path)
    elif os.environ.get("NORFACE_RT_SHARED"):
        root = Path(os.environ["NORFACE_RT_SHARED"])
    else:
        raise FileNotFoundError(
            "shared data root not given: pass --shared DIR or set NORFACE_RT_SHARED "
            "(the directory holding ict/, faces/ and backgrounds/)"
        )
    if not root.is_dir():
        raise FileNotFoundError(f"shared data root is not a directory: {root}")
    return root


@dataclass(frozen=True)
class Topology:
    """Render topology: ICT vertices split wherever a vertex carries several UVs or materials."""

    vertex_of_corner: np.ndarray  # (C,) index into ICT vertices for each render vertex
    uv: np.ndarray  # (C, 2) float32
    material: np.ndarray  # (C,) float32 material class
    triangles: np.ndarray  # (T, 3) uint32 indices into render vertices (hidden layers removed)


class FaceModel:
    """ICT-FaceKit geometry. ``mesh(identity, expression)`` is the only hot method."""

    def __init__(self, npz_path: str | os.PathLike[str], n_identity: int = 100) -> None:
        p = Path(npz_path)
        if not p.is_file():
            raise FileNotFoundError(f"ICT-FaceKit archive not found: {p}")
        with np.load(p) as d:
            self.neutral = d["neutral"].astype(np.float32)
            n_id = min(int(n_identity), d["identity_modes"].shape[0])
            self.identity_modes = d["identity_modes"][:n_id].astype(np.float32).reshape(n_id, -1)
            self.expression_modes = d["expression_modes"].astype(np.float32).reshape(
                d["expression_modes"].shape[0], -1)
            self.expression_names: tuple[str, ...] = tuple(str(s) for s in d["expression_names"])
            self.triangles = d["triangles"].astype(np.int64)
            self.triangles_uv = d["triangles_uv"].astype(np.int64)
            self.uv = d["uv"].astype(np.float32)
            self.triangle_material = d["triangle_material"].astype(np.int64)
            self.material_names = tuple(str(s) for s in d["material_names"])
            self.part_names = tuple(str(s) for s in d["part_names"])
            self.part_ranges = d["part_vertex_ranges"].astype(np.int64)
            self.landmarks68 = d["landmarks68"].astype(np.int64)
        self.n_vertices = self.neutral.shape[0]
        self.n_identity = self.identity_modes.shape[0]
        self.topology = self._build_topology()
        self.eye_params = self._iris_radius()

    @classmethod
    def from_shared(cls, shared: str | os.PathLike[str] | None = None, **kw: int) -> FaceModel:
        return cls(shared_root(shared) / ICT_RELPATH, **kw)

    # --------------------------------------------------------------------------------- geometry
    def identity_shape(self, alpha: np.ndarray) -> np.ndarray:
        """Neutral face of one identity; ``alpha`` ~ N(0, 1) per mode (shorter vectors pad 0)."""
        a = np.zeros(self.n_identity, np.float32)
        alpha = np.asarray(alpha, np.float32).ravel()[: self.n_identity]
        a[: alpha.size] = alpha
        return self.neutral + (a @ self.identity_modes).reshape(-1, 3)

    def mesh(self, identity_shape: np.ndarray, expression: np.ndarray) -> np.ndarray:
        """Identity neutral plus expression offsets; weights are the ICT/ARKit blendshape values."""
        w = np.asarray(expression, np.float32).ravel()
        if w.size != len(self.expression_names):
            raise ValueError(
                f"expression must have {len(self.expression_names)} weights, got {w.size}")
        return identity_shape + (w @ self.expression_modes).reshape(-1, 3)

    def part(self, name: str) -> slice:
        i = self.part_names.index(name)
        a, b = self.part_ranges[i]
        return slice(int(a), int(b))

    def vertex_normals(self, verts: np.ndarray) -> np.ndarray:
        """Area-weighted vertex normals (bincount is ~10x faster than np.add.at here)."""
        t = self.triangles
        v0, v1, v2 = verts[t[:, 0]], verts[t[:, 1]], verts[t[:, 2]]
        fn = np.cross(v1 - v0, v2 - v0)
        n = np.empty_like(verts)
        idx = t.ravel()
        for k in range(3):
            w = np.repeat(fn[:, k], 3)
            n[:, k] = np.bincount(idx, weights=w, minlength=verts.shape[0])
        norm = np.linalg.norm(n, axis=1, keepdims=True)
        return (n / np.maximum(norm, 1e-12)).astype(np.float32)

    # --------------------------------------------------------------------------------- topology
    def _material_of_triangles(self) -> np.ndarray:
        tri_mat = np.full(len(self.triangles), MAT_SKIN, np.int64)
        names = self.material_names
        by_name = {
            "M_GumsTongue": MAT_GUMS, "M_Teeth": MAT_TEETH, "M_ScleraLeft": MAT_SCLERA,
            "M_ScleraRight": MAT_SCLERA, "M_IrisLeft": MAT_IRIS, "M_IrisRight": MAT_IRIS,
            # Lashes are alpha-textured cards (opaque they look like goggles); the photo texture
            # already carries lash lines at the lid margins.
            "M_EyeLashes": MAT_HIDDEN, "M_LacrimalFluid": MAT_HIDDEN, "M_EyeBlend": MAT_HIDDEN,
            "M_EyeOcclusion": MAT_HIDDEN,
        }
        for name, cls_id in by_name.items():
            tri_mat[self.triangle_material == names.index(name)] = cls_id
        first = self.triangles[:, 0]
        for part, cls_id in (("mouth_socket", MAT_MOUTH), ("eye_socket_left", MAT_EYE_SOCKET),
                             ("eye_socket_right", MAT_EYE_SOCKET)):
            s = self.part(part)
            tri_mat[(first >= s.start) & (first < s.stop)] = cls_id
        return tri_mat

    def _build_topology(self) -> Topology:
        tri_mat = self._material_of_triangles()
        keep = tri_mat != MAT_HIDDEN
        tv = self.triangles[keep]
        tu = self.triangles_uv[keep]
        tm = np.repeat(tri_mat[keep], 3)
        key = np.stack([tv.ravel(), tu.ravel(), tm], axis=1)
        uniq, inverse = np.unique(key, axis=0, return_inverse=True)
        return Topology(
            vertex_of_corner=uniq[:, 0].astype(np.int64),
            uv=self.uv[uniq[:, 1]].astype(np.float32),
            material=uniq[:, 2].astype(np.float32),
            triangles=inverse.reshape(-1, 3).astype(np.uint32),
        )

    def _iris_radius(self) -> np.ndarray:
        """Per render-vertex radius from the eye's optical axis in iris radii (0 centre, 1 limbus).

        ICT's iris material is a whole inner shell and its UVs are a full square, so the iris,
        pupil and the transparent cornea (the sclera shell in front of the iris) are all cut by
        this radius in the fragment shader. Eyeballs are rigid and look down +z in the neutral
        mesh, so the radius is computed once; gaze shapes rotate it with the ball.
        """
        topo = self.topology
        vi = topo.vertex_of_corner
        aux = np.full(len(vi), 2.0, np.float32)
        for part in ("eyeball_left", "eyeball_right"):
            s = self.part(part)
            ball = self.neutral[s]
            centre = (ball.max(axis=0) + ball.min(axis=0)) / 2
            radius = float((ball.max(axis=0) - ball.min(axis=0)).max()) / 2
            iris_r = IRIS_TO_BALL * radius
            sel = (vi >= s.start) & (vi < s.stop)
            rel = self.neutral[vi[sel]] - centre
            rr = np.linalg.norm(rel[:, :2], axis=1) / iris_r
            aux[sel] = np.where(rel[:, 2] > 0, rr, 2.0)
        return aux
