"""Fit the ICT model to a landmarked photo and unwrap the photo into ICT's UV space.

Fitting: identity coefficients, head rotation/translation and focal length are solved together by
regularised non-linear least squares on the iBUG points derived from the photo's FRL template
(see :mod:`train.synth.tem`). Identity weights get a Gaussian prior (they are ~N(0, 1) by
construction of the PCA), the focal length a weak log-normal prior around a portrait lens.

Unwrapping: every texel of the skin UV atlas is rasterised with its posed 3-D position; it takes
the photo colour where it is visible from the photo camera (depth test against a depth map of the
fitted mesh) and faces the camera; unseen texels are filled from the mirrored texel (the ICT UV
layout is left/right symmetric), then by push-pull interpolation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from train.synth.ict import MAT_SKIN, FaceModel
from train.synth.render import Camera

# The FRL "oval" mask (head outline incl. hair and neck), used to keep photo background out.
FRL_OVAL = (145, 146, 147, 148, 149, 150, 151, 152, 153, 154, 155, 156, 157, 184, 183)


@dataclass
class FitResult:
    alpha: list[float]  # identity coefficients
    rotvec: list[float]  # head rotation (axis-angle, camera space)
    translation: list[float]  # cm, camera space
    focal: float  # pixels
    width: int
    height: int
    rms_px: float  # weighted landmark residual in pixels
    iod_px: float  # inter-ocular distance in the photo (pixels), for judging rms_px

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def rotation(self) -> np.ndarray:
        return Rotation.from_rotvec(self.rotvec).as_matrix().astype(np.float32)

    def camera(self) -> Camera:
        return Camera(focal=self.focal, width=self.width, height=self.height)


def frontal_ibug_reference(model: FaceModel) -> np.ndarray:
    """The ICT iBUG-68 vertices seen from the front (x right, y down), for contour fractions."""
    p = model.neutral[model.landmarks68]
    return np.stack([p[:, 0], -p[:, 1]], axis=1).astype(np.float32)


def fit_landmarks(model: FaceModel, target: np.ndarray, weights: np.ndarray, width: int,
                  height: int, n_identity: int = 40, identity_prior: float = 1.0,
                  focal_prior: float = 0.3) -> FitResult:
    """Solve identity + pose + focal so the ICT iBUG vertices project onto ``target`` (68, 2)."""
    if target.shape != (68, 2) or weights.shape != (68,):
        raise ValueError(f"target must be (68, 2) and weights (68,), got {target.shape}, "
                         f"{weights.shape}")
    k = min(int(n_identity), model.n_identity)
    lm = model.landmarks68
    base = model.neutral[lm].astype(np.float64)
    modes = model.identity_modes.reshape(model.n_identity, -1, 3)[:k, lm].astype(np.float64)
    iod = float(np.linalg.norm(target[36] - target[45]))
    if iod <= 1:
        raise ValueError(f"eye corners coincide in the target landmarks (iod={iod:.2f} px)")
    model_iod = float(np.linalg.norm(base[36] - base[45]))
    f0 = 2.0 * max(width, height)  # a portrait lens: ~50 degrees vertical field is too wide
    dist0 = f0 * model_iod / iod
    centre = target[weights > 0].mean(axis=0)
    tx0 = (centre[0] - width / 2 + 0.5) * dist0 / f0
    ty0 = -(centre[1] - height / 2 + 0.5) * dist0 / f0
    x0 = np.concatenate([np.zeros(k), np.zeros(3), [tx0, ty0, -dist0], [np.log(f0)]])
    sw = np.sqrt(weights.astype(np.float64))[:, None]
    cx, cy = width / 2 - 0.5, height / 2 - 0.5

    def project(x: np.ndarray) -> np.ndarray:
        alpha, rv, t, logf = x[:k], x[k:k + 3], x[k + 3:k + 6], x[k + 6]
        pts = base + np.tensordot(alpha, modes, axes=1)
        pc = pts @ Rotation.from_rotvec(rv).as_matrix().T + t
        z = np.maximum(-pc[:, 2], 1e-3)
        f = np.exp(logf)
        return np.stack([cx + f * pc[:, 0] / z, cy - f * pc[:, 1] / z], axis=1)

    def residuals(x: np.ndarray) -> np.ndarray:
        r = (project(x) - target) * sw / iod
        prior = np.sqrt(identity_prior) * 0.05 * x[:k]
        fprior = np.array([focal_prior * 0.05 * (x[k + 6] - np.log(f0))])
        return np.concatenate([r.ravel(), prior, fprior])

    sol = least_squares(residuals, x0, method="trf", x_scale="jac", max_nfev=200)
    x = sol.x
    err = np.linalg.norm(project(x) - target, axis=1)
    rms = float(np.sqrt(np.sum(weights * err ** 2) / max(float(weights.sum()), 1e-9)))
    return FitResult(alpha=[float(v) for v in x[:k]], rotvec=[float(v) for v in x[k:k + 3]],
                     translation=[float(v) for v in x[k + 3:k + 6]], focal=float(np.exp(x[k + 6])),
                     width=int(width), height=int(height), rms_px=rms, iod_px=iod)


_UV_VERT = """
#version 330
in vec2 in_uv;
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_model;
out vec3 v_pos;
out vec3 v_normal;
out vec3 v_model;
void main() {
    v_pos = in_pos;
    v_normal = in_normal;
    v_model = in_model;
    gl_Position = vec4(in_uv.x - 1.0, in_uv.y * 2.0 - 1.0, 0.0, 1.0);
}
"""
_UV_FRAG = """
#version 330
uniform float focal;
uniform vec2 centre;
in vec3 v_pos;
in vec3 v_normal;
in vec3 v_model;
layout(location = 0) out vec4 f_out;
layout(location = 1) out vec4 f_model;
void main() {
    float z = -v_pos.z;
    vec3 n = normalize(v_normal);
    float ndotv = dot(n, normalize(-v_pos));
    f_out = vec4(centre.x + focal * v_pos.x / z, centre.y - focal * v_pos.y / z, z, ndotv);
    f_model = vec4(v_model, 1.0);
}
"""
_DEPTH_VERT = """
#version 330
uniform mat4 proj;
in vec3 in_pos;
out float v_z;
void main() { v_z = -in_pos.z; gl_Position = proj * vec4(in_pos, 1.0); }
"""
_DEPTH_FRAG = """
#version 330
in float v_z;
out vec4 f_out;
void main() { f_out = vec4(v_z, 0.0, 0.0, 1.0); }
"""


def _push_pull_fill(img: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill invalid pixels by masked averaging over a pyramid (smooth, no streaks)."""
    h, w = valid.shape
    if valid.all() or min(h, w) <= 2:
        if valid.any():
            out = img.copy()
            out[~valid] = img[valid].mean(axis=0)
            return out
        return img
    m = valid.astype(np.float32)
    acc = img.astype(np.float32) * m[..., None]
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    acc_s = cv2.resize(acc, (w2, h2), interpolation=cv2.INTER_AREA)
    m_s = cv2.resize(m, (w2, h2), interpolation=cv2.INTER_AREA)
    small = np.where(m_s[..., None] > 1e-6, acc_s / np.maximum(m_s[..., None], 1e-6), 0)
    filled_small = _push_pull_fill(small.astype(np.float32), m_s > 1e-6)
    up = cv2.resize(filled_small, (w, h), interpolation=cv2.INTER_LINEAR)
    out = img.astype(np.float32).copy()
    out[~valid] = up[~valid]
    return out


def _border_colour(photo: np.ndarray) -> np.ndarray:
    """Median colour of the photo's top and side borders (the studio backdrop)."""
    h, w = photo.shape[:2]
    b = max(2, int(0.03 * min(h, w)))
    strips = [photo[:b].reshape(-1, 3), photo[: h // 2, :b].reshape(-1, 3),
              photo[: h // 2, -b:].reshape(-1, 3)]
    return np.median(np.concatenate(strips), axis=0).astype(np.float32)


def hair_colour_from_template(photo: np.ndarray, frl: np.ndarray) -> np.ndarray:
    """Median colour between the FRL hairline (134-144) and the head-top outline (147-155)."""
    poly = np.concatenate([frl[134:145], frl[147:156][::-1]])
    mask = np.zeros(photo.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 255)
    bg = _border_colour(photo)
    px = photo[mask > 0].astype(np.float32)
    px = px[np.linalg.norm(px - bg, axis=1) > 30.0]
    if len(px) < 50:
        return np.array([70.0, 50.0, 35.0], np.float32)
    return np.median(px, axis=0).astype(np.float32)


def _hair_region(model_xyz: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Scalp and back of the head in ICT model coordinates (cm): above the ears, or behind them
    down to the nape."""
    y, z = model_xyz[..., 1], model_xyz[..., 2]
    top = y > 7.5 - 0.35 * np.clip(z, 0, 12)
    back = (y > -3.0) & (z < 0.5)
    return (covered & (top | back)).astype(np.float32)


def _hair_texture(colour: np.ndarray, t: int, seed: int) -> np.ndarray:
    """Flat hair colour with strand-like streaks (noise smeared along v)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (t, 2 * t)).astype(np.float32)
    streak: np.ndarray = cv2.GaussianBlur(noise, (0, 0), sigmaX=0.6, sigmaY=t / 40)
    streak = streak / max(float(streak.std()), 1e-6)
    shade = 1.0 + 0.08 * streak
    return np.clip(colour[None, None, :] * shade[..., None], 0, 255)


class UVUnwrapper:
    """Projects photos into the ICT skin UV atlas with a headless GL context (see render.py)."""

    def __init__(self, model: FaceModel, tile: int = 512) -> None:
        import moderngl

        self._mgl = moderngl
        # (moderngl's stub types **settings as dicts; backend= is a string)
        self.ctx = moderngl.create_standalone_context(backend="egl")  # type: ignore[arg-type]
        self.model = model
        self.tile = int(tile)
        topo = model.topology
        tris = topo.triangles
        skin = topo.material[tris[:, 0]] == MAT_SKIN
        self._tris = tris[skin].astype(np.uint32)
        self._corner_vertex = topo.vertex_of_corner
        self._uv = topo.uv
        self.uv_prog = self.ctx.program(vertex_shader=_UV_VERT, fragment_shader=_UV_FRAG)
        self.depth_prog = self.ctx.program(vertex_shader=_DEPTH_VERT, fragment_shader=_DEPTH_FRAG)
        self._all_tris = topo.triangles.astype(np.uint32)

    def unwrap(self, photo: np.ndarray, fit: FitResult, mask_polygon: np.ndarray | None = None,
               min_facing: float = 0.3, hair_colour: np.ndarray | None = None,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Return (texture (T, 2T, 3) uint8 filled, observed (T, 2T) float weight in [0, 1])."""
        with self.ctx:  # make this context current: a process may hold several
            return self._unwrap(photo, fit, mask_polygon, min_facing, hair_colour, seed)

    def _unwrap(self, photo: np.ndarray, fit: FitResult, mask_polygon: np.ndarray | None,
                min_facing: float, hair_colour: np.ndarray | None,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
        m = self.model
        shape = m.identity_shape(np.asarray(fit.alpha, np.float32))
        rot = fit.rotation()
        verts = shape @ rot.T + np.asarray(fit.translation, np.float32)
        normals = m.vertex_normals(shape) @ rot.T
        ci = self._corner_vertex
        pos = verts[ci].astype(np.float32)
        nrm = normals[ci].astype(np.float32)
        ctx = self.ctx
        # depth map of the fitted mesh from the photo camera (half resolution is plenty)
        scale = 0.5
        dw, dh = int(fit.width * scale), int(fit.height * scale)
        cam = Camera(focal=fit.focal * scale, width=dw, height=dh, near=1.0, far=1000.0)
        vbo = ctx.buffer(pos.tobytes())
        ibo_all = ctx.buffer(self._all_tris.tobytes())
        vao_d = ctx.vertex_array(self.depth_prog, [(vbo, "3f", "in_pos")], index_buffer=ibo_all,
                                 index_element_size=4)
        self.depth_prog["proj"].write(cam.projection().T.copy().tobytes())
        dfbo = ctx.framebuffer(color_attachments=[ctx.renderbuffer((dw, dh), 4, dtype="f4")],
                               depth_attachment=ctx.depth_renderbuffer((dw, dh)))
        dfbo.use()
        ctx.enable(self._mgl.DEPTH_TEST)
        dfbo.clear(1e9, 0.0, 0.0, 0.0, depth=1.0)
        vao_d.render(self._mgl.TRIANGLES)
        depth = np.frombuffer(dfbo.read(components=4, dtype="f4"), np.float32)
        depth = depth.reshape(dh, dw, 4)[::-1, :, 0].copy()
        # UV-space pass: photo coordinates, camera depth and facing per texel
        t = self.tile
        data = np.concatenate([self._uv, pos, nrm, m.neutral[ci]], axis=1).astype(np.float32)
        vbo2 = ctx.buffer(data.tobytes())
        ibo = ctx.buffer(self._tris.tobytes())
        vao_uv = ctx.vertex_array(self.uv_prog, [(vbo2, "2f 3f 3f 3f", "in_uv", "in_pos",
                                                  "in_normal", "in_model")],
                                  index_buffer=ibo, index_element_size=4)
        self.uv_prog["focal"].value = float(fit.focal)
        self.uv_prog["centre"].value = (fit.width / 2 - 0.5, fit.height / 2 - 0.5)
        ufbo = ctx.framebuffer(color_attachments=[
            ctx.renderbuffer((2 * t, t), 4, dtype="f4"), ctx.renderbuffer((2 * t, t), 4, dtype="f4")])
        ufbo.use()
        ctx.disable(self._mgl.DEPTH_TEST)
        ufbo.clear(-1.0, -1.0, 0.0, -1.0)
        vao_uv.render(self._mgl.TRIANGLES)
        uvmap = np.frombuffer(ufbo.read(components=4, dtype="f4", attachment=0), np.float32)
        uvmap = uvmap.reshape(t, 2 * t, 4)[::-1].copy()
        model_xyz = np.frombuffer(ufbo.read(components=4, dtype="f4", attachment=1), np.float32)
        model_xyz = model_xyz.reshape(t, 2 * t, 4)[::-1, :, :3].copy()
        for obj in (vao_d, vao_uv, vbo, vbo2, ibo, ibo_all, dfbo, ufbo):
            obj.release()
        px, py, z, facing = (uvmap[..., i] for i in range(4))
        covered = facing > -1.0
        # visibility: texel depth must match the photo-view depth map at its pixel
        dx = np.clip(((px + 0.5) * scale - 0.5).round().astype(np.int64), 0, dw - 1)
        dy = np.clip(((py + 0.5) * scale - 0.5).round().astype(np.int64), 0, dh - 1)
        inside = (px >= 0) & (px < fit.width) & (py >= 0) & (py < fit.height)
        visible = covered & inside & (z <= depth[dy, dx] + 0.35)
        if mask_polygon is not None:
            mask: np.ndarray = np.zeros(photo.shape[:2], np.uint8)
            cv2.fillPoly(mask, [np.round(mask_polygon).astype(np.int32)], 255)
            erode = max(3, int(0.03 * max(photo.shape[:2])))
            mask = cv2.erode(mask, np.ones((erode, erode), np.uint8))
            mx = np.clip(px.round().astype(np.int64), 0, photo.shape[1] - 1)
            my = np.clip(py.round().astype(np.int64), 0, photo.shape[0] - 1)
            visible &= mask[my, mx] > 0
        colours = cv2.remap(photo, px.astype(np.float32), py.astype(np.float32),
                            interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        colours = colours.astype(np.float32)
        # Studio backdrop bleeding onto silhouette texels (ears, jaw edge) when the fit is off.
        bg = _border_colour(photo)
        backdrop = (np.linalg.norm(colours - bg, axis=-1) < 22.0) & (facing < 0.8)
        visible &= ~backdrop
        # Ears and the sides of the head rarely line up with the photo: keep only skin-like
        # colours there (robust statistics of the central face), so backdrop and hair stay out.
        mx_abs, my_ = np.abs(model_xyz[..., 0]), model_xyz[..., 1]
        central = visible & (mx_abs < 4.0) & (my_ > -4.0) & (my_ < 2.0)
        if central.sum() > 100:
            med = np.median(colours[central], axis=0)
            dist = np.linalg.norm(colours - med, axis=-1)
            thr = max(40.0, 3.0 * float(np.median(dist[central])))
            visible &= ~((mx_abs > 5.5) & (dist > thr))
        weight = np.where(visible, np.clip((facing - min_facing) / 0.25, 0.0, 1.0), 0.0)
        # mirror fill: each tile is left/right symmetric in ICT's layout (u -> 1-u, u -> 3-u)
        mir_w = np.concatenate([weight[:, :t][:, ::-1], weight[:, t:][:, ::-1]], axis=1)
        mir_c = np.concatenate([colours[:, :t][:, ::-1], colours[:, t:][:, ::-1]], axis=1)
        use_mirror = mir_w > weight + 0.2
        w_best = np.where(use_mirror, mir_w, weight)
        c_best = np.where(use_mirror[..., None], mir_c, colours)
        valid = w_best > 0.5
        filled = _push_pull_fill(c_best, valid)
        # feather the seam between observed and filled colour
        alpha = cv2.GaussianBlur(np.clip(w_best, 0, 1).astype(np.float32), (0, 0), t / 128)
        smooth = cv2.GaussianBlur(filled, (0, 0), t / 64)
        out = filled * alpha[..., None] + smooth * (1 - alpha[..., None])
        out = np.where(valid[..., None], out, smooth)
        if hair_colour is not None:
            # Unseen scalp and back of the head: hair, not the skin colour the fill spreads there.
            hair = _hair_region(model_xyz, covered) * (1.0 - alpha)
            hair = cv2.GaussianBlur(hair.astype(np.float32), (0, 0), t / 96)[..., None]
            out = out * (1 - hair) + _hair_texture(hair_colour, t, seed) * hair
        return np.clip(out, 0, 255).astype(np.uint8), w_best.astype(np.float32)

    def release(self) -> None:
        self.ctx.release()

