"""Paired sample generation: one expression, rendered on a random identity (I_o) and on the fixed
target identity (I_n), aligned by the runtime's own aligner, labelled by the AU mapping.

With a MediaPipe landmarker, each sample also carries what the runtime's geometry input would be:
the blendshapes MediaPipe reads on the full rendered frame (as it reads a full video frame at run
time, not an upscaled crop), and on the same view of the same person without the expression (the
person's own neutral, for per-person baselines). NaN rows mean MediaPipe found no face.

Determinism: sample ``i`` of seed ``s`` draws everything from ``default_rng([s, i])``, so a
dataset is identical whatever the number of workers or the order shards are produced in.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from norface_rt.config import ModelConfig
from norface_rt.faces.align import Aligner, points5_from_ibug68, transform_points
from train.synth import augment
from train.synth.expressions import ExpressionSampler
from train.synth.ict import FaceModel, shared_root
from train.synth.labels import AULabeler
from train.synth.render import Camera, Lighting, Material, Renderer, rotation_matrix
from train.synth.textures import TextureBank

GENERATOR_VERSION = "2.0"
SOURCE_NAME = "synthetic"
HEAD_WIDTH_CM = 15.0
IRIS_COLOURS = ((0.22, 0.12, 0.06), (0.12, 0.07, 0.04), (0.30, 0.20, 0.08), (0.18, 0.25, 0.35),
                (0.25, 0.32, 0.38), (0.20, 0.26, 0.14), (0.28, 0.27, 0.25))


@dataclass
class SynthSettings:
    """What varies and by how much (angles in degrees)."""

    img_size: int = 112
    render_size: int = 256
    identity_jitter: float = 0.5  # std of N(0, 1)-scaled noise added to fitted identity weights
    identity_modes: int = 60
    yaw_std: float = 18.0
    yaw_max: float = 55.0
    pitch_std: float = 10.0
    pitch_max: float = 30.0
    roll_std: float = 8.0
    roll_max: float = 25.0
    focal_range: tuple[float, float] = (0.9, 4.0)  # focal / render size
    face_fraction: tuple[float, float] = (0.28, 0.45)  # head width / render size (crop fits)
    offset: float = 0.06  # max head-centre offset, fraction of render size
    p_photo_background: float = 0.55
    p_occlusion: float = 0.2
    p_degrade: float = 0.85
    # canonical target view
    target_focal: float = 4.0
    target_fraction: float = 0.5
    target_background: tuple[int, int, int] = (128, 128, 128)

    def validate(self) -> None:
        if self.img_size % 16:
            raise ValueError(
                f"img_size must be a multiple of 16 (ViT patch size), got {self.img_size}")
        if self.render_size < self.img_size:
            raise ValueError(
                f"render_size must be >= img_size ({self.img_size}), got {self.render_size}")


TARGET_LIGHTING = Lighting(ambient=(0.42, 0.42, 0.42),
                           directions=((0.25, 0.35, 1.0), (-0.5, 0.0, 0.8)),
                           colors=((0.55, 0.55, 0.55), (0.18, 0.18, 0.18)),
                           specular=0.08, shininess=20.0)
TARGET_MATERIAL = Material(skin_gain=(1.0, 1.0, 1.0), iris=IRIS_COLOURS[0])


def _random_lighting(rng: np.random.Generator) -> Lighting:
    def direction(az: float, el: float) -> tuple[float, float, float]:
        a, e = np.deg2rad(az), np.deg2rad(el)
        return (float(np.sin(a) * np.cos(e)), float(np.sin(e)), float(np.cos(a) * np.cos(e)))

    temp = rng.uniform(-1, 1)  # warm .. cool white balance
    tint = np.array([1 + 0.12 * temp, 1.0, 1 - 0.12 * temp])
    amb = rng.uniform(0.12, 0.5) * tint * rng.uniform(0.95, 1.05, 3)
    key_az = rng.uniform(-75, 75)
    key = direction(key_az, rng.uniform(-25, 60))
    fill = direction(-key_az * rng.uniform(0.3, 1.2), rng.uniform(-20, 40))
    key_i = rng.uniform(0.35, 1.0)
    fill_i = rng.uniform(0.0, 0.4) * key_i
    def rgb(v: np.ndarray) -> tuple[float, float, float]:
        return (float(v[0]), float(v[1]), float(v[2]))

    return Lighting(
        ambient=rgb(amb), directions=(key, fill), colors=(rgb(key_i * tint), rgb(fill_i * tint)),
        specular=float(rng.uniform(0.03, 0.3)), shininess=float(rng.uniform(8, 45)))


@dataclass
class View:
    """A rendered view before alignment."""

    image: np.ndarray  # (R, R, 3) uint8
    landmarks: np.ndarray  # (68, 2) pixels
    rgba: np.ndarray  # raw render with coverage alpha


class SampleGenerator:
    """Owns one renderer (one GL context): create one per process."""

    def __init__(self, shared: str | os.PathLike[str] | None, texture_cache: str | os.PathLike[str],
                 settings: SynthSettings | None = None,
                 landmarker: str | os.PathLike[str] | None = None) -> None:
        self.settings = settings or SynthSettings()
        self.settings.validate()
        s = self.settings
        root = shared_root(shared)
        self.model = FaceModel.from_shared(root)
        self.bank = TextureBank(texture_cache)
        self.renderer = Renderer(self.model, s.render_size, s.render_size, samples=0)
        self.aligner = Aligner(ModelConfig(img_size=s.img_size))
        self.labeler = AULabeler(self.model.expression_names)
        self.sampler = ExpressionSampler(self.model.expression_names)
        bg_dir = root / "backgrounds" / "pixabay"
        self.backgrounds = augment.load_backgrounds(bg_dir if bg_dir.is_dir() else None,
                                                    s.render_size)
        self.renderer.set_texture("__target__", self.bank.target_texture())
        self._target_camera = Camera(focal=s.target_focal * s.render_size, width=s.render_size,
                                     height=s.render_size)
        self._target_distance = (s.target_focal * HEAD_WIDTH_CM) / s.target_fraction
        neutral = self.view_target(np.zeros(len(self.model.expression_names), np.float32))
        # I_n is framed once, from the target's neutral face, so every normalized crop shares one
        # canvas and differs only by expression (aligning each one by its own mouth corners would
        # make the framing itself depend on the expression).
        self.target_matrix = self.aligner.matrix_for_points(points5_from_ibug68(neutral.landmarks))
        self._landmarker = None
        if landmarker is not None:
            from norface_rt.faces.landmarker import Landmarker

            self._landmarker = Landmarker(landmarker, max_faces=1, mode="image")

    def read_blendshapes(self, image: np.ndarray) -> np.ndarray:
        """MediaPipe's blendshapes of the face in a full frame, (51,) float32; NaN when no face."""
        from norface_rt.faces.geometry import MEDIAPIPE_BLENDSHAPES, blendshape_vector
        from norface_rt.types import FramePacket

        if self._landmarker is None:
            raise RuntimeError("read_blendshapes needs a generator made with landmarker=...")
        faces = self._landmarker.detect(FramePacket("synth", 0, np.ascontiguousarray(image), None, 0.0))
        if not faces:
            return np.full(len(MEDIAPIPE_BLENDSHAPES), np.nan, np.float32)
        return blendshape_vector(faces[0].blendshapes, MEDIAPIPE_BLENDSHAPES)

    # ---------------------------------------------------------------------------------- views
    def _render(self, shape: np.ndarray, weights: np.ndarray, rot: np.ndarray, trans: np.ndarray,
                texture: str, camera: Camera, lighting: Lighting, material: Material) -> tuple[
                    np.ndarray, np.ndarray]:
        verts = self.model.mesh(shape, weights)
        normals = self.model.vertex_normals(verts) @ rot.T
        posed = verts @ rot.T + trans
        rgba = self.renderer.render(posed, normals, texture, camera, lighting, material)
        return rgba, camera.project(posed[self.model.landmarks68])

    def view_target(self, weights: np.ndarray) -> View:
        """The expression on the target identity: mean shape, frontal, canonical light and
        background."""
        s = self.settings
        rot = np.eye(3, dtype=np.float32)
        trans = np.array([0.0, 0.0, -self._target_distance], np.float32)
        rgba, lm = self._render(self.model.neutral, weights, rot, trans, "__target__",
                                self._target_camera, TARGET_LIGHTING, TARGET_MATERIAL)
        bg = np.empty((s.render_size, s.render_size, 3), np.uint8)
        bg[:] = s.target_background
        return View(image=augment.composite(rgba, bg), landmarks=lm, rgba=rgba)

    def draw_identity(self, rng: np.random.Generator) -> tuple[int, np.ndarray]:
        s = self.settings
        i = int(rng.integers(len(self.bank)))
        fitted = np.asarray(self.bank.identities[i].alpha, np.float32)
        alpha = np.zeros(s.identity_modes, np.float32)
        n = min(len(fitted), s.identity_modes)
        alpha[:n] = fitted[:n]
        alpha += rng.normal(0, s.identity_jitter, s.identity_modes).astype(np.float32)
        return i, alpha

    def view_original(self, rng: np.random.Generator, identity: int, alpha: np.ndarray,
                      weights: np.ndarray) -> View:
        s = self.settings
        r = s.render_size
        key = f"id{identity}"
        if not self.renderer.has_texture(key):
            self.renderer.set_texture(key, self.bank.texture(identity))
        yaw = float(np.clip(rng.normal(0, s.yaw_std), -s.yaw_max, s.yaw_max))
        if rng.random() < 0.25:
            yaw = float(rng.uniform(-s.yaw_max, s.yaw_max))
        pitch = float(np.clip(rng.normal(0, s.pitch_std), -s.pitch_max, s.pitch_max))
        roll = float(np.clip(rng.normal(0, s.roll_std), -s.roll_max, s.roll_max))
        focal = float(rng.uniform(*s.focal_range)) * r
        frac = float(rng.uniform(*s.face_fraction))
        dist = focal * HEAD_WIDTH_CM / (frac * r)
        off = rng.uniform(-s.offset, s.offset, 2) * r * dist / focal
        trans = np.array([off[0], off[1], -dist], np.float32)
        camera = Camera(focal=focal, width=r, height=r)
        lighting = _random_lighting(rng)
        gain = rng.uniform(0.8, 1.15) * rng.uniform(0.94, 1.06, 3)
        material = Material(skin_gain=(float(gain[0]), float(gain[1]), float(gain[2])),
                            iris=IRIS_COLOURS[int(rng.integers(len(IRIS_COLOURS)))])
        shape = self.model.identity_shape(alpha)
        rgba, lm = self._render(shape, weights, rotation_matrix(yaw, pitch, roll), trans, key,
                                camera, lighting, material)
        if self.backgrounds and rng.random() < s.p_photo_background:
            bg = augment.photo_background(rng, self.backgrounds, r)
        else:
            bg = augment.procedural_background(rng, r)
        img = augment.composite(rgba, bg)
        if rng.random() < s.p_occlusion:
            box = (float(lm[:, 0].min()), float(lm[:, 1].min()), float(lm[:, 0].max()),
                   float(lm[:, 1].max()))
            img = augment.occlude(rng, img, box, self.backgrounds)
        if rng.random() < s.p_degrade:
            img = augment.degrade(rng, img)
        return View(image=img, landmarks=lm, rgba=rgba)

    def target_crop(self, view: View | None = None) -> np.ndarray:
        """The target view (default: neutral) in the fixed I_n framing, (S, S, 3) uint8 RGB.

        The neutral crop is the I_t that the normalizer and the exported model set are given."""
        if view is None:
            view = self.view_target(np.zeros(len(self.model.expression_names), np.float32))
        size = self.settings.img_size
        return cv2.warpAffine(view.image, self.target_matrix, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))

    # ---------------------------------------------------------------------------------- sample
    def sample(self, seed: int, index: int) -> dict[str, Any]:
        """One sample in the common format (see docs/synthetic.md)."""
        return self.sample_with_info(seed, index)[0]

    def sample_with_info(self, seed: int, index: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """The sample plus what the sampler aimed for (category), for dataset statistics."""
        rng = np.random.default_rng([int(seed), int(index)])
        identity, alpha = self.draw_identity(rng)
        expr = self.sampler.sample(rng)
        # The same view without the expression draws exactly what the original view draws.
        rng_neutral = copy.deepcopy(rng) if self._landmarker is not None else None
        orig = self.view_original(rng, identity, alpha, expr.weights)
        target = self.view_target(expr.weights)
        crop, m = self.aligner.crop_for_points(orig.image, points5_from_ibug68(orig.landmarks))
        norm = self.target_crop(target)
        labels = self.labeler.labels(expr.weights)
        geometry: dict[str, Any] = {}
        if rng_neutral is not None:
            neutral = self.view_original(rng_neutral, identity, alpha,
                                         np.zeros_like(expr.weights))
            geometry = {"mp_blendshapes": self.read_blendshapes(orig.image),
                        "mp_neutral": self.read_blendshapes(neutral.image)}
        return {
            "image": crop,
            "au_occurrence": labels["au_occurrence"],
            "au_intensity": labels["au_intensity"],
            "emotion": labels["emotion"],
            "normalized": norm,
            "landmarks": transform_points(m, orig.landmarks).astype(np.float32),
            "normalized_landmarks": transform_points(self.target_matrix,
                                                     target.landmarks).astype(np.float32),
            "blendshapes": expr.weights.astype(np.float32),
            "subject": self.bank.identities[identity].id,
            "source": SOURCE_NAME,
            "key": f"synth-s{int(seed)}-{int(index):09d}",
            **geometry,
        }, {"category": expr.category}

    def close(self) -> None:
        self.renderer.release()
        if self._landmarker is not None:
            self._landmarker.close()

