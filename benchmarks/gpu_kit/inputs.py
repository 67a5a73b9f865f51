"""The kit's inputs: frames decoded beforehand and stored as JPEG files, and the MediaPipe
landmarks of every face in them, in one compressed npz.

Why: the GPU machine the kit is written for has neither PyAV nor MediaPipe (and no network), so
the end-to-end figure cannot decode video or find faces there. :func:`prepare` does both here,
once, from the shared media (it needs PyAV, MediaPipe and ``../shared``) and writes a folder that
travels beside the repository; :func:`load_inputs` reads it anywhere with OpenCV and numpy alone.
The landmarks are found on the JPEG-decoded pixels, i.e. on exactly the frames the kit replays.

The folder is shared data turned into frames: it is git-ignored and never committed. Every file
is listed in ``manifest.json`` with its size and sha256, and checked when loaded, so a truncated
copy is refused naming the file instead of producing a wrong figure.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from norface_rt.config import BLENDSHAPE_NAMES, ModelConfig
from norface_rt.faces.align import Aligner, points5_from_mediapipe
from norface_rt.files import sha256_file
from norface_rt.types import Face, FramePacket, HeadPose

FORMAT = 1
MANIFEST = "manifest.json"
LANDMARKS = "landmarks.npz"
JPEG_QUALITY = 90
# Up to 5 faces per frame in the five-face clip; MediaPipe is asked for this many.
MAX_FACES = 8
PREPARE_COMMAND = "python -m benchmarks.gpu_kit --prepare"


@dataclass(frozen=True)
class ClipSpec:
    """One clip of the inputs: ``frames`` frames of ``source`` (under the shared ``media/``)
    from frame ``start`` on. ``source`` ``multi_face.jpg`` is the five-face pan of the pipeline
    benchmark (:func:`bench_helpers.five_face_frames`), 25 frames/s."""

    name: str
    source: str
    start: int
    frames: int


CLIPS: tuple[ClipSpec, ...] = (
    ClipSpec("single_face", "single_face.mp4", 0, 72),  # 640x360, one face
    ClipSpec("wolfgang", "WolfgangLanger_Pexels.mp4", 0, 72),  # 640x360, one face
    ClipSpec("face_noface", "face_noface.mov", 36, 72),  # 960x540, the face leaves half way
    ClipSpec("five_faces", "multi_face.jpg", 0, 48),  # 1280x720, five faces
)
FIVE_FACE_FPS = 25.0


class InputsError(ValueError):
    """The inputs folder is missing, incomplete or damaged; the message says what and how to
    make it again."""


# ---------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class Clip:
    """Frames (RGB uint8, shared by every stream that replays the clip: never written to) and,
    per frame, the faces MediaPipe found in it."""

    name: str
    fps: float
    frames: tuple[np.ndarray, ...]
    faces: tuple[tuple[Face, ...], ...]
    faces_cut: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def face_count(self) -> int:
        return sum(len(f) for f in self.faces)


@dataclass(frozen=True)
class Inputs:
    folder: Path
    manifest: dict[str, Any]
    clips: tuple[Clip, ...]

    @property
    def frame_count(self) -> int:
        return sum(len(c) for c in self.clips)

    @property
    def face_count(self) -> int:
        return sum(c.face_count for c in self.clips)

    def faces(self) -> list[tuple[np.ndarray, Face]]:
        """Every (frame, face) pair, clip by clip, frame by frame."""
        return [(frame, face) for clip in self.clips
                for frame, faces in zip(clip.frames, clip.faces) for face in faces]


class PingPong:
    """Which clip frame a stream shows at each of its frame indices: forwards, then backwards,
    and again (no jump at the clip's end, so tracks continue as in a longer video), starting
    ``offset`` frames in (streams replaying one clip are not in step)."""

    def __init__(self, length: int, offset: int = 0) -> None:
        if length < 1:
            raise ValueError(f"length: expected a clip of at least 1 frame, got {length}")
        self.length = length
        self.offset = offset
        self.period = max(1, 2 * length - 2)

    def __call__(self, frame_index: int) -> int:
        k = (frame_index + self.offset) % self.period
        return k if k < self.length else self.period - k


class ReplayLandmarker:
    """A :class:`~norface_rt.faces.stage.FaceFinder` that returns the faces MediaPipe found in
    the clip frame a stream shows (``schedule(frame.frame_index)``): the face stage, tracker,
    geometry reader and alignment run as in a real run, MediaPipe does not."""

    def __init__(self, clip: Clip, schedule: PingPong) -> None:
        self.clip = clip
        self.schedule = schedule
        self._faces_cut = 0

    @property
    def faces_cut(self) -> int:
        return self._faces_cut

    def detect(self, frame: FramePacket) -> list[Face]:
        i = self.schedule(frame.frame_index)
        self._faces_cut = self.clip.faces_cut[i]
        return [dataclasses.replace(f) for f in self.clip.faces[i]]  # the tracker sets ids on copies

    def close(self) -> None:
        """Nothing to release."""


def crops_and_geometry(inputs: Inputs, cfg: ModelConfig, n: int
                       ) -> tuple[np.ndarray, np.ndarray | None]:
    """``n`` real face crops (N, S, S, 3) uint8, aligned on the CPU as the pipeline does, and
    their geometry rows (N, G) (None for a model without one): every face of the inputs in
    order, repeated when ``n`` exceeds them."""
    from norface_rt.faces.geometry import blendshape_vector

    pairs = inputs.faces()
    if not pairs:
        raise InputsError(f"{inputs.folder}: no faces in the inputs (make them again: "
                          f"{PREPARE_COMMAND})")
    aligner = Aligner(cfg)
    crops = np.zeros((n, cfg.img_size, cfg.img_size, 3), np.uint8)
    geometry = np.zeros((n, cfg.geometry_dim), np.float32) if cfg.geometry_dim else None
    for i in range(n):
        frame, face = pairs[i % len(pairs)]
        crops[i] = aligner.crop_for_points(frame, face.points5)[0]
        if geometry is not None:
            geometry[i] = blendshape_vector(face.blendshapes, cfg.blendshape_names)
    return crops, geometry


# ---------------------------------------------------------------------------- load


def _check_files(folder: Path, manifest: dict[str, Any]) -> None:
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise InputsError(f"{folder / MANIFEST}: field 'files': expected the list of files, got "
                          f"{files!r}")
    for rel, want in files.items():
        path = folder / rel
        if not path.is_file():
            raise InputsError(f"{path}: missing (the inputs are incomplete; make them again: "
                              f"{PREPARE_COMMAND})")
        size = path.stat().st_size
        if size != want["bytes"]:
            raise InputsError(f"{path}: expected {want['bytes']} bytes, got {size} (damaged or "
                              f"changed; make the inputs again: {PREPARE_COMMAND})")
        digest = sha256_file(path)
        if digest != want["sha256"]:
            raise InputsError(f"{path}: expected sha256 {want['sha256'][:16]}..., got "
                              f"{digest[:16]}... (damaged or changed; make the inputs again: "
                              f"{PREPARE_COMMAND})")


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The inputs' manifest; :class:`InputsError` naming what to run when there is none."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise InputsError(f"no kit inputs in {folder} ({MANIFEST} not found): make them on a "
                          f"machine with PyAV, MediaPipe and the shared data: {PREPARE_COMMAND}")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputsError(f"{path}: not readable JSON ({e}); make the inputs again: "
                          f"{PREPARE_COMMAND}") from e
    if manifest.get("format") != FORMAT:
        raise InputsError(f"{path}: field 'format': expected {FORMAT}, got "
                          f"{manifest.get('format')!r}; make the inputs again: {PREPARE_COMMAND}")
    return manifest


def _faces_from_arrays(z: Any, clip: str, n_frames: int, names: Sequence[str]
                       ) -> tuple[tuple[tuple[Face, ...], ...], tuple[int, ...]]:
    """The edge where stored arrays become :class:`Face` objects (as the landmarker makes them)."""
    offsets = z[f"{clip}/offsets"]
    if offsets.shape != (n_frames + 1,):
        raise InputsError(f"{LANDMARKS}: '{clip}/offsets': expected shape ({n_frames + 1},), got "
                          f"{offsets.shape}")
    landmarks, boxes = z[f"{clip}/landmarks"], z[f"{clip}/box"]
    conf, pose, blend = z[f"{clip}/confidence"], z[f"{clip}/pose"], z[f"{clip}/blendshapes"]
    for arr in (landmarks, boxes, conf, pose, blend):
        arr.setflags(write=False)  # shared by every stream replaying the clip
    faces = []
    for i in range(n_frames):
        row = []
        for j in range(int(offsets[i]), int(offsets[i + 1])):
            lm = landmarks[j]
            p = pose[j]
            row.append(Face(
                box=(float(boxes[j, 0]), float(boxes[j, 1]), float(boxes[j, 2]), float(boxes[j, 3])),
                confidence=float(conf[j]), landmarks=lm, points5=points5_from_mediapipe(lm),
                pose=None if np.isnan(p).any() else HeadPose(float(p[0]), float(p[1]), float(p[2])),
                blendshapes=None if np.isnan(blend[j]).any()
                else dict(zip(names, map(float, blend[j])))))
        faces.append(tuple(row))
    cut = tuple(int(c) for c in z[f"{clip}/faces_cut"])
    return tuple(faces), cut


def rgb_from_jpeg(data: np.ndarray, what: str) -> np.ndarray:
    """JPEG bytes -> (H, W, 3) uint8 RGB, C-contiguous (the one decoder of the inputs, used when
    they are made and when they are read)."""
    import cv2

    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputsError(f"{what}: not a decodable JPEG; make the inputs again: {PREPARE_COMMAND}")
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def load_inputs(folder: str | os.PathLike[str], *, max_frames: int | None = None) -> Inputs:
    """Read and check the inputs; ``max_frames`` keeps only the first frames of each clip (the
    dry run). Frames are decoded from their JPEG files once, here."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    _check_files(folder, manifest)
    with np.load(folder / LANDMARKS) as z:
        names = [str(n) for n in z["blendshape_names"]]
        clips = []
        for spec in manifest["clips"]:
            n_all = int(spec["frames"])
            faces, cut = _faces_from_arrays(z, spec["name"], n_all, names)
            n = n_all if max_frames is None else min(n_all, max_frames)
            frames = []
            for i in range(n):
                path = folder / spec["name"] / f"{i:06d}.jpg"
                frames.append(rgb_from_jpeg(np.fromfile(path, np.uint8), str(path)))
            clips.append(Clip(spec["name"], float(spec["fps"]), tuple(frames), faces[:n], cut[:n]))
    return Inputs(folder, manifest, tuple(clips))


def folder_bytes(folder: str | os.PathLike[str]) -> int:
    """Bytes of every file under ``folder`` (what it adds to a copy of the working tree)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


# ---------------------------------------------------------------------------- prepare (here)


def _clip_frames(spec: ClipSpec, media: Path, landmarker: Path) -> tuple[list[np.ndarray], float]:
    """The clip's RGB frames as decoded by the runtime's own video source, and its frame rate."""
    src_path = media / spec.source
    if not src_path.is_file():
        raise InputsError(f"{src_path}: shared media file not found (set NORFACE_RT_SHARED or "
                          "--shared)")
    if spec.source == "multi_face.jpg":
        from benchmarks.bench_helpers import five_face_frames

        return five_face_frames(src_path, landmarker)[spec.start:spec.start + spec.frames], \
            FIVE_FACE_FPS
    from norface_rt.sources.file import FileSource

    frames: list[np.ndarray] = []
    with FileSource(src_path, stream_id=spec.name) as src:
        fps = src.info.fps or 30.0
        for packet in src.iter_frames(timeout=30.0):  # to the end: a clean end, no warning
            if spec.start <= packet.frame_index < spec.start + spec.frames:
                frames.append(packet.image)
        if src.end is not None and src.end.error is not None:
            raise InputsError(f"{src_path}: {src.end.error}")
    if len(frames) < spec.frames:
        raise InputsError(f"{src_path}: expected {spec.start + spec.frames} frames, decoded "
                          f"{spec.start + len(frames)}")
    return frames, float(fps)


def prepare(shared: str | os.PathLike[str], landmarker: str | os.PathLike[str],
            out: str | os.PathLike[str], *, clips: Sequence[ClipSpec] = CLIPS,
            jpeg_quality: int = JPEG_QUALITY) -> dict[str, Any]:
    """Write the inputs folder ``out`` (replacing it) from the shared media; returns its
    manifest. Needs PyAV and MediaPipe. Written into a sibling folder that is then renamed, so
    a failed run never leaves half an inputs folder."""
    import cv2

    from norface_rt.faces.landmarker import Landmarker
    from norface_rt.tools.bench import versions

    media = Path(shared) / "media"
    landmarker = Path(landmarker)
    out = Path(out)
    staging = out.with_name(out.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    arrays: dict[str, np.ndarray] = {"blendshape_names": np.array(BLENDSHAPE_NAMES)}
    specs = []
    for spec in clips:
        frames, fps = _clip_frames(spec, media, landmarker)
        (staging / spec.name).mkdir()
        offsets, cut = [0], []
        lms, boxes, conf, pose, blend = [], [], [], [], []
        with Landmarker(landmarker, max_faces=MAX_FACES, mode="video") as lm:
            for i, rgb in enumerate(frames):
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
                if not ok:
                    raise RuntimeError(f"{spec.name} frame {i}: JPEG encoding failed")
                path = staging / spec.name / f"{i:06d}.jpg"
                path.write_bytes(buf.tobytes())
                # Landmarks of the pixels the kit will replay: the JPEG-decoded frame.
                seen = rgb_from_jpeg(buf, str(path))
                faces = lm.detect(FramePacket(spec.name, i, seen, i / fps, 0.0))
                cut.append(lm.faces_cut)
                for f in faces:
                    lms.append(f.landmarks.astype(np.float32))
                    boxes.append(f.box)
                    conf.append(f.confidence)
                    pose.append((f.pose.yaw, f.pose.pitch, f.pose.roll) if f.pose else (np.nan,) * 3)
                    blend.append([np.nan] * len(BLENDSHAPE_NAMES) if f.blendshapes is None
                                 else [f.blendshapes.get(n, np.nan) for n in BLENDSHAPE_NAMES])
                offsets.append(len(lms))
        h, w = frames[0].shape[:2]
        arrays.update({
            f"{spec.name}/offsets": np.asarray(offsets, np.int32),
            f"{spec.name}/faces_cut": np.asarray(cut, np.int16),
            f"{spec.name}/landmarks": np.asarray(lms, np.float32).reshape(-1, 478, 3),
            f"{spec.name}/box": np.asarray(boxes, np.float32).reshape(-1, 4),
            f"{spec.name}/confidence": np.asarray(conf, np.float32),
            f"{spec.name}/pose": np.asarray(pose, np.float32).reshape(-1, 3),
            f"{spec.name}/blendshapes": np.asarray(blend, np.float32).reshape(-1, len(BLENDSHAPE_NAMES)),
        })
        specs.append({"name": spec.name, "source": spec.source,
                      "source_sha256": sha256_file(media / spec.source),
                      "first_source_frame": spec.start, "frames": len(frames), "fps": fps,
                      "width": int(w), "height": int(h), "faces": len(lms),
                      "frames_with_faces": int(sum(1 for a, b in zip(offsets, offsets[1:]) if b > a))})
    np.savez_compressed(staging / LANDMARKS, **arrays)  # type: ignore[arg-type]
    files = {str(p.relative_to(staging)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(staging.rglob("*")) if p.is_file()}
    manifest = {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "made_by": PREPARE_COMMAND,
        "what": "frames of the shared media decoded (PyAV) and stored as JPEG, and the faces "
                "MediaPipe finds in the JPEG-decoded frames (video mode); shared data: never "
                "commit",
        "landmarker": {"file": landmarker.name, "sha256": sha256_file(landmarker),
                       "max_faces": MAX_FACES, "mode": "video"},
        "jpeg_quality": jpeg_quality,
        "versions": versions(),
        "clips": specs,
        "files": files,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return manifest
