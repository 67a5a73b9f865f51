"""Real photos re-enacted with synthetic expressions: real skin, eyes, hair and light, moved by the
ICT expression shapes.

Why: renders of the textured ICT head teach the image branches what renders look like (a bald,
smooth head); a real-face expression model reads most of their negative expressions as neutral.
Real photos with expressions and a licence that allows training are rare (the permissive sets
are neutral, plus one smile per London person). This module turns every permissive neutral photo
with a landmark template into any expression the sampler can draw, without leaving the photo:

1. The ICT head is fitted to the photo's landmarks (:func:`train.synth.fit.fit_landmarks`), so
   its neutral mesh projects onto the photographed face.
2. The expressed mesh (same identity, pose and camera, expression weights added) is rasterised
   with, per pixel, the photo position the same surface point had on the neutral mesh. Sampling
   the photo there moves every pixel of the face with the muscles: brows lower, lids close, lip
   corners pull, the jaw drops (a backward warp, so nothing tears; depth testing handles lips and
   lids that slide over each other).
3. Creases and bulges that the expression makes (a furrowed brow, deeper nasolabial folds) change
   the shading of the same skin point: the warped photo is multiplied by the ratio of the
   expressed to the neutral mesh's diffuse shading under a frontal light (an expression ratio
   image, Liu, Shan & Zhang, SIGGRAPH 2001).
4. What the neutral photo never showed, the mouth interior of an opening mouth, is drawn from the
   mesh's own teeth, gums and cavity.

Outside the head mesh (background, hair beyond the scalp, clothes) the photo is unchanged. Labels
come from the same expression weights through :class:`train.synth.labels.AULabeler`, as for
renders. What the warp cannot make: wrinkles finer than the mesh, teeth that differ from the
generic ones, a changed head pose (that stays the photo's own).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from train.synth.fit import FitResult, fit_landmarks, frontal_ibug_reference
from train.synth.ict import MAT_GUMS, MAT_MOUTH, MAT_SKIN, MAT_TEETH, FaceModel
from train.synth.render import Camera
from train.synth.tem import frl_to_ibug68, read_tem

_VERT = """
#version 330
uniform mat4 proj;
in vec3 in_pos;
in vec2 in_src;
in vec3 in_n1;
in vec3 in_n0;
in float in_occ;
in float in_w;
in float in_mat;
out vec2 v_src;
out vec3 v_n1;
out vec3 v_n0;
out vec3 v_pos;
out float v_occ;
out float v_w;
flat out int v_mat;
void main() {
    v_src = in_src;
    v_w = in_w;
    v_n1 = in_n1;
    v_n0 = in_n0;
    v_pos = in_pos;
    v_occ = in_occ;
    v_mat = int(in_mat + 0.5);
    gl_Position = proj * vec4(in_pos, 1.0);
}
"""

# Output 0: photo position to sample (x, y), shading ratio, material + 1 (0 = not covered).
# Output 1: the interior colour (teeth, gums, cavity) in sRGB, lit like the photo, and the
# vertex's share of the motion (1 on the face, falling to 0 down the neck and over the scalp).
_FRAG = """
#version 330
uniform vec3 light;
uniform float ambient;
in vec2 v_src;
in vec3 v_n1;
in vec3 v_n0;
in vec3 v_pos;
in float v_occ;
in float v_w;
flat in int v_mat;
layout(location = 0) out vec4 f_map;
layout(location = 1) out vec4 f_col;
float shade(vec3 n) {
    vec3 m = normalize(n);
    if (dot(m, normalize(-v_pos)) < 0.0) m = -m;
    return ambient + (1.0 - ambient) * max(dot(m, normalize(light)), 0.0);
}
void main() {
    float s1 = shade(v_n1);
    float s0 = max(shade(v_n0), 0.3);
    f_map = vec4(v_src, s1 / s0, float(v_mat + 1));
    vec3 base = vec3(0.12, 0.04, 0.035);
    if (v_mat == 1) base = vec3(0.16, 0.025, 0.025);
    else if (v_mat == 2) base = vec3(0.26, 0.07, 0.07);
    else if (v_mat == 3) base = vec3(0.74, 0.70, 0.62);
    vec3 c = base * s1 * v_occ;
    f_col = vec4(pow(clamp(c, 0.0, 1.0), vec3(1.0 / 2.2)), v_w);
}
"""

INTERIOR = (MAT_MOUTH, MAT_GUMS, MAT_TEETH)


@dataclass
class FittedPhoto:
    """A photo (RGB, at most ``max_side`` pixels) and the ICT fit to it."""

    id: str
    image: np.ndarray
    fit: FitResult


def load_fitted_photo(model: FaceModel, photo_id: str, jpg: str | os.PathLike[str],
                      tem: str | os.PathLike[str], max_side: int = 720) -> FittedPhoto:
    """Read a photo and its FRL template, downscale to ``max_side``, fit the ICT head to it."""
    img = cv2.imread(str(jpg), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot decode image {jpg}")
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    frl = read_tem(tem)
    scale = min(1.0, max_side / max(rgb.shape[:2]))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)),
                         interpolation=cv2.INTER_AREA)
        frl = frl * scale
    target, weights = frl_to_ibug68(frl, frontal_ibug_reference(model))
    fit = fit_landmarks(model, target, weights, rgb.shape[1], rgb.shape[0])
    return FittedPhoto(id=photo_id, image=np.ascontiguousarray(rgb), fit=fit)


class PhotoReenactor:
    """One GL context (EGL, headless), one program; frame buffers per photo size. One per process."""

    def __init__(self, model: FaceModel) -> None:
        try:
            import moderngl
        except ImportError as e:  # pragma: no cover - depends on the machine
            raise RuntimeError("photo re-enactment needs moderngl (pip install moderngl) and an "
                               "EGL driver (apt-get install libegl1 libgl1-mesa-dri libegl-mesa0)"
                               ) from e
        self._mgl = moderngl
        # moderngl's stubs type its objects loosely; they are used as the GL API documents them
        self.ctx: Any = moderngl.create_standalone_context(backend="egl")  # type: ignore[arg-type]
        self.model = model
        self.prog: Any = self.ctx.program(vertex_shader=_VERT, fragment_shader=_FRAG)
        topo = model.topology
        self._corner_vertex = topo.vertex_of_corner
        n = len(topo.vertex_of_corner)
        self._n = n
        self._static = self.ctx.buffer(topo.material.astype(np.float32).tobytes())
        self._dynamic = self.ctx.buffer(reserve=n * 12 * 4, dynamic=True)
        self._weight = self.ctx.buffer(face_weights(model)[topo.vertex_of_corner].astype(
            np.float32).tobytes())
        ibo = self.ctx.buffer(np.ascontiguousarray(topo.triangles.astype(np.uint32)).tobytes())
        self._vao = self.ctx.vertex_array(
            self.prog,
            [(self._dynamic, "3f 2f 3f 3f 1f", "in_pos", "in_src", "in_n1", "in_n0", "in_occ"),
             (self._weight, "1f", "in_w"), (self._static, "1f", "in_mat")],
            index_buffer=ibo, index_element_size=4)
        occ = np.ones(n, np.float32)
        z = model.neutral[topo.vertex_of_corner, 2]
        lip_z = float(model.neutral[model.landmarks68[62], 2])
        interior = np.isin(topo.material, INTERIOR)
        occ[interior] = 1.0 - 0.85 * np.clip((lip_z - z[interior]) / 5.0, 0.0, 1.0) ** 0.7
        self._occ = occ
        self._fbos: dict[tuple[int, int], Any] = {}
        self._fbo_parts: list[Any] = []

    def _framebuffer(self, width: int, height: int) -> Any:
        """One frame buffer per photo size (the photo sets have a handful of sizes), kept: a frame
        buffer's textures are not freed with it, so making one per call would leak GPU memory."""
        key = (width, height)
        fbo = self._fbos.get(key)
        if fbo is None:
            if len(self._fbos) >= 8:
                raise ValueError(f"more than 8 photo sizes ({sorted(self._fbos)} and {key}); "
                                 "resize photos to a few sizes first")
            ctx = self.ctx
            parts = [ctx.texture(key, 4, dtype="f4"), ctx.texture(key, 4, dtype="f4"),
                     ctx.depth_renderbuffer(key)]
            fbo = ctx.framebuffer(color_attachments=parts[:2], depth_attachment=parts[2])
            self._fbos[key] = fbo
            self._fbo_parts.extend(parts)
        return fbo

    def maps(self, fit: FitResult, weights: np.ndarray, light: tuple[float, float, float],
             ambient: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel (x, y, ratio, material + 1) and interior colour (H, W, 4) float32."""
        m = self.model
        shape = m.identity_shape(np.asarray(fit.alpha, np.float32))
        rot = fit.rotation()
        trans = np.asarray(fit.translation, np.float32)
        camera = Camera(focal=fit.focal, width=fit.width, height=fit.height)
        v0 = shape
        v1 = m.mesh(shape, weights)
        p0 = v0 @ rot.T + trans
        p1 = v1 @ rot.T + trans
        src = camera.project(p0)
        n0 = m.vertex_normals(v0) @ rot.T
        n1 = m.vertex_normals(v1) @ rot.T
        ci = self._corner_vertex
        dyn = np.empty((self._n, 12), np.float32)
        dyn[:, 0:3] = p1[ci]
        dyn[:, 3:5] = src[ci]
        dyn[:, 5:8] = n1[ci]
        dyn[:, 8:11] = n0[ci]
        dyn[:, 11] = self._occ
        with self.ctx:
            fbo = self._framebuffer(fit.width, fit.height)
            self._dynamic.write(dyn.tobytes())
            self.prog["proj"].write(camera.projection().T.copy().tobytes())
            self.prog["light"].value = tuple(float(v) for v in light)
            self.prog["ambient"].value = float(ambient)
            fbo.use()
            fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
            self.ctx.enable(self._mgl.DEPTH_TEST)
            self.ctx.disable(self._mgl.CULL_FACE)
            self._vao.render(self._mgl.TRIANGLES)
            out = []
            for k in range(2):
                raw = fbo.read(components=4, attachment=k, dtype="f4")
                out.append(np.frombuffer(raw, np.float32).reshape(fit.height, fit.width, 4)[::-1])
        return np.ascontiguousarray(out[0]), np.ascontiguousarray(out[1])

    def reenact(self, photo: FittedPhoto, weights: np.ndarray,
                light: tuple[float, float, float] = (0.0, 0.3, 1.0),
                ratio_range: tuple[float, float] = (0.65, 1.35)) -> np.ndarray:
        """The photo with the expression ``weights`` (ICT order), (H, W, 3) uint8 RGB."""
        img = photo.image
        h, w = img.shape[:2]
        fmap, col = self.maps(photo.fit, weights, light)
        mat = np.rint(fmap[..., 3]).astype(np.int32) - 1
        covered = mat >= 0
        interior = covered & np.isin(mat, INTERIOR)
        warp = covered & ~interior
        share = np.where(warp, col[..., 3], 0.0).astype(np.float32)
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        mapx = (gx + share * (fmap[..., 0] - gx)).astype(np.float32)
        mapy = (gy + share * (fmap[..., 1] - gy)).astype(np.float32)
        out = cv2.remap(img, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        out = out.astype(np.float32)
        ratio = np.where(warp & (mat == MAT_SKIN), np.clip(fmap[..., 2], *ratio_range), 1.0)
        # creases belong to the face; the generic neck, stretched by the jaw, has none to give
        ratio = 1.0 + share ** 4 * (ratio - 1.0)
        ratio = cv2.GaussianBlur(ratio.astype(np.float32), (3, 3), 0)
        # shading acts on light, not on sRGB codes: apply it in (approximately) linear light
        lin = (out / 255.0) ** 2.2 * ratio[..., None]
        out = np.clip(lin, 0.0, 1.0) ** (1 / 2.2) * 255.0
        if interior.any():
            # a soft edge between lips and the drawn interior (no multisampling in float buffers)
            a = cv2.GaussianBlur(interior.astype(np.float32), (3, 3), 0)[..., None]
            out = out * (1 - a) + col[..., :3] * 255.0 * a
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

    def release(self) -> None:
        with self.ctx:
            for f in self._fbos.values():
                f.release()
            for part in self._fbo_parts:
                part.release()
            self._fbos.clear()
            self._fbo_parts.clear()
        self.ctx.release()


def face_weights(model: FaceModel, falloff_cm: float = 2.5) -> np.ndarray:
    """Per ICT vertex, the share of the expression's motion a photo warp applies: 1 inside the
    face (jaw line up to 4 cm above the brows) and on eyes and mouth, falling linearly to 0 over
    ``falloff_cm`` beyond it. Why: the generic head's neck and scalp do not match the photographed
    neck, collar and hair; moving them with the jaw smears the photo where no muscle moves it."""
    lm = model.landmarks68
    xy = model.neutral[:, :2].astype(np.float64)
    jaw = xy[lm[0:17]]
    brow_top = float(xy[lm[17:27], 1].max()) + 4.0
    outline = np.concatenate([jaw, [[jaw[-1, 0], brow_top], [jaw[0, 0], brow_top]]]).astype(
        np.float32)
    d = np.array([cv2.pointPolygonTest(outline, (float(x), float(y)), True) for x, y in xy])
    w = np.clip(1.0 + d / falloff_cm, 0.0, 1.0)  # d > 0 inside the outline
    skin = np.zeros(model.n_vertices, bool)
    for part in ("face", "head_neck"):
        skin[model.part(part)] = True
    w[~skin] = 1.0
    return w.astype(np.float32)


def photo_list(shared: str | os.PathLike[str], exclude: tuple[str, ...] = ()) -> list[
        tuple[str, Path, Path]]:
    """(id, jpg, tem) of every permissive neutral photo with a template (London: training people
    only), less the ids in ``exclude`` (the held-out synthetic test identities)."""
    from train.synth.textures import list_photos

    return [p for p in list_photos(shared) if p[0] not in set(exclude)]


# Identities of the held-out synthetic test set (train/configs: exclude_subjects); never
# re-enacted, so the renders' test identities stay unseen in every form.
HELD_OUT_IDS: tuple[str, ...] = ("canada/003f", "canada/044f", "canada/070f", "canada/095m",
                                 "canada/129m", "canada/154m", "composite/f_easian",
                                 "composite/m_african")
REENACT_VERSION = "1.1"
# The ICT shapes warp a photographed face less far than the same weight means on a real face:
# real-face expression models (the teachers) read a re-enacted happy face as happy 25 % of the
# time at gain 1, 58 % at 1.5 and 83 % at 2; angry 12 / 21 / 38 % (docs/synthetic.md, "Teachers
# as critics"). So the warp applies the weights times a gain drawn from this range (a weight is
# capped at WARP_MAX, a mild extrapolation of the mesh), and the labels describe what is shown:
# the gained weights, capped at 1.
EXPRESSION_GAIN = (1.5, 2.2)
WARP_MAX = 1.5
SOURCE_NAME = "reenact"


class ReenactGenerator:
    """Samples in the common shard format from re-enacted photos (one GL context: one per
    process). Sample ``i`` of seed ``s`` draws everything from ``default_rng([s, i])``, as the
    render generator does, so a data set does not depend on the number of workers.

    Each sample: a random permissive photo (fits cached per photo), an expression from the
    render generator's sampler, a slightly varied light for the shading ratio, a random down-scale
    (faces from about 100 to 300 pixels between the eyes' outer corners) and the render
    generator's degradations; then the runtime's own face recipe (MediaPipe image mode on the
    full frame, five-point alignment) gives the crop and ``mp_blendshapes``. A frame where
    MediaPipe finds no face keeps NaN blendshapes (``require_geometry`` drops it).
    """

    def __init__(self, shared: str | os.PathLike[str] | None, landmarker: str | os.PathLike[str],
                 img_size: int = 112, p_degrade: float = 0.6,
                 exclude: tuple[str, ...] = HELD_OUT_IDS,
                 gain: tuple[float, float] = EXPRESSION_GAIN) -> None:
        from norface_rt.config import ModelConfig
        from norface_rt.faces.align import Aligner
        from norface_rt.faces.landmarker import Landmarker
        from train.synth.expressions import ExpressionSampler
        from train.synth.ict import shared_root
        from train.synth.labels import AULabeler

        root = shared_root(shared)
        self.model = FaceModel.from_shared(root)
        self.photos = photo_list(root, exclude)
        if not self.photos:
            raise ValueError(f"no photo with a landmark template under {root / 'faces'}")
        self.p_degrade = float(p_degrade)
        if not 0 < gain[0] <= gain[1] <= 4:
            raise ValueError(f"gain must be a range within (0, 4], got {gain}")
        self.gain = (float(gain[0]), float(gain[1]))
        self.reenactor = PhotoReenactor(self.model)
        self.sampler = ExpressionSampler(self.model.expression_names)
        self.labeler = AULabeler(self.model.expression_names)
        self.aligner = Aligner(ModelConfig(img_size=img_size))
        self.landmarker = Landmarker(Path(landmarker), max_faces=1, mode="image", tiling=1.0)
        self._fitted: dict[int, FittedPhoto] = {}

    def photo(self, i: int) -> FittedPhoto:
        if i not in self._fitted:
            pid, jpg, tem = self.photos[i]
            self._fitted[i] = load_fitted_photo(self.model, pid, jpg, tem)
        return self._fitted[i]

    def sample_with_info(self, seed: int, index: int) -> tuple[dict[str, object], dict[str, object]]:
        from norface_rt.faces.align import points5_from_ibug68
        from norface_rt.faces.geometry import MEDIAPIPE_BLENDSHAPES, blendshape_vector
        from norface_rt.types import FramePacket
        from train.synth import augment

        rng = np.random.default_rng([int(seed), int(index)])
        fp = self.photo(int(rng.integers(len(self.photos))))
        expr = self.sampler.sample(rng)
        light = (float(rng.normal(0.0, 0.3)), float(0.3 + rng.normal(0.0, 0.15)), 1.0)
        shown = np.minimum(expr.weights * float(rng.uniform(*self.gain)), WARP_MAX)
        img = self.reenactor.reenact(fp, shown.astype(np.float32), light)
        scale = float(rng.uniform(0.35, 1.0))
        if scale < 0.98:
            img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)),
                             interpolation=cv2.INTER_AREA)
        if rng.random() < self.p_degrade:
            img = augment.degrade(rng, img)
        img = np.ascontiguousarray(img)
        faces = self.landmarker.detect(FramePacket("reenact", 0, img, None, 0.0))
        if faces:
            points = faces[0].points5
            mp = blendshape_vector(faces[0].blendshapes, MEDIAPIPE_BLENDSHAPES)
        else:  # keep the sample's place; crop where the fitted head says the face is
            m = self.model
            shape = m.identity_shape(np.asarray(fp.fit.alpha, np.float32))
            posed = m.mesh(shape, shown)[m.landmarks68] @ fp.fit.rotation().T + np.asarray(
                fp.fit.translation, np.float32)
            cam = Camera(focal=fp.fit.focal, width=fp.fit.width, height=fp.fit.height)
            points = points5_from_ibug68(cam.project(posed) * scale)
            mp = np.full(len(MEDIAPIPE_BLENDSHAPES), np.nan, np.float32)
        crop, _ = self.aligner.crop_for_points(img, points)
        weights = np.clip(shown, 0.0, 1.0).astype(np.float32)
        labels = self.labeler.labels(weights)
        return {
            "image": crop,
            "au_occurrence": labels["au_occurrence"],
            "au_intensity": labels["au_intensity"],
            "emotion": labels["emotion"],
            "blendshapes": weights,
            "mp_blendshapes": mp,
            "subject": fp.id,
            "source": SOURCE_NAME,
            "key": f"reenact-s{int(seed)}-{int(index):09d}",
        }, {"category": expr.category}

    def sample(self, seed: int, index: int) -> dict[str, object]:
        return self.sample_with_info(seed, index)[0]

    def close(self) -> None:
        self.reenactor.release()
        self.landmarker.close()
