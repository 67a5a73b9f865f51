"""DISFA (Mavadati et al. 2013) in its released layout.

  <root>/ActionUnit_Labels/SN001/SN001_au1.txt   one file per AU (1 2 4 5 6 9 12 15 17 20 25 26),
      lines "frame,intensity" with 1-based frame numbers and intensity 0..5
  <root>/Videos_LeftCamera/LeftVideoSN001_comp.avi   (and Videos_RightCamera/RightVideoSN001_comp.avi)
DISFA ships videos, not frames: :func:`extract_frames` decodes one video with PyAV into
``<frames_root>/SN001/<frame>.jpg`` where <frame> is the 1-based label frame number, so image and
label line up by construction. Occurrence is intensity >= 2 for the 8 detection AUs (the
protocol of DRML / JAA-Net and of the Norface paper); intensity is kept for all 12 AUs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from train.data.protocols import DISFA_DETECTION_AUS, DISFA_INTENSITY_AUS, DISFA_OCCURRENCE_THRESHOLD
from train.data.records import Record, index_frames
from train.data.sample import au_vector

_SUBJ = re.compile(r"^SN\d{3}$")
_AUFILE = re.compile(r"^(SN\d{3})_au(\d+)$", re.IGNORECASE)


def video_path(root: str | Path, subject: str, camera: str = "Left") -> Path:
    """Official path of a subject's video for camera "Left" or "Right"."""
    if camera not in ("Left", "Right"):
        raise ValueError(f"camera must be 'Left' or 'Right', got {camera!r}")
    return Path(root) / f"Videos_{camera}Camera" / f"{camera}Video{subject}_comp.avi"


def extract_frames(video: str | Path, out_dir: str | Path, quality: int = 95,
                   max_frames: int | None = None) -> int:
    """Decode every frame of ``video`` to ``out_dir/<n>.jpg`` (n = 1-based frame number).

    Returns the number of frames written. Uses PyAV (real decoding, no ffmpeg binary needed).
    """
    import av
    import cv2

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            n += 1
            rgb = frame.to_ndarray(format="rgb24")
            ok = cv2.imwrite(str(out / f"{n}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                             [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise OSError(f"could not write {out / f'{n}.jpg'}")
            if max_frames is not None and n >= max_frames:
                break
    if n == 0:
        raise ValueError(f"{video}: no video frames decoded")
    return n


def _read_au_file(path: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = re.split(r"[,\s]+", line)
        if len(parts) < 2:
            raise ValueError(f"{path}:{lineno}: expected 'frame,intensity', got {line!r}")
        frame, v = int(float(parts[0])), int(float(parts[1]))
        if not 0 <= v <= 5:
            raise ValueError(f"{path}:{lineno}: intensity must be 0..5, got {v}")
        out[frame] = float(v)
    return out


def load_disfa(root: str | Path, frames_root: str | Path, subjects: Iterable[str] | None = None,
               require_images: bool = True) -> list[Record]:
    """Parse DISFA labels and pair them with extracted frames (see :func:`extract_frames`)."""
    root = Path(root)
    label_root = root / "ActionUnit_Labels"
    if not label_root.is_dir():
        raise FileNotFoundError(f"DISFA label folder not found: {label_root}")
    frames_root = Path(frames_root)
    wanted = set(subjects) if subjects is not None else None
    records: list[Record] = []
    subject_dirs = sorted(p for p in label_root.iterdir() if p.is_dir() and _SUBJ.match(p.name))
    if not subject_dirs:
        raise FileNotFoundError(f"no SNxxx subject folders in {label_root}")
    for sdir in subject_dirs:
        subject = sdir.name
        if wanted is not None and subject not in wanted:
            continue
        per_au: dict[int, dict[int, float]] = {}
        for f in sdir.glob("*.txt"):
            m = _AUFILE.match(f.stem)
            if m and m.group(1) == subject and int(m.group(2)) in DISFA_INTENSITY_AUS:
                per_au[int(m.group(2))] = _read_au_file(f)
        if not per_au:
            raise FileNotFoundError(f"no {subject}_au<N>.txt label files in {sdir}")
        images = index_frames(frames_root / subject)
        if require_images and not images:
            raise FileNotFoundError(
                f"no frames for {subject} in {frames_root / subject}; extract them with "
                f"`python -m train extract-frames {video_path(root, subject)} {frames_root / subject}`")
        frames = sorted(set().union(*[set(v) for v in per_au.values()]))
        for frame in frames:
            if require_images and frame not in images:
                continue
            inten = {au: vals[frame] for au, vals in per_au.items() if frame in vals}
            occ = {au: float(v >= DISFA_OCCURRENCE_THRESHOLD) for au, v in inten.items()
                   if au in DISFA_DETECTION_AUS}
            records.append(Record(
                key=f"DISFA/{subject}/{frame:05d}",
                image_path=images.get(frame, frames_root / subject / f"{frame}.jpg"),
                subject=subject, source="DISFA",
                au_occurrence=au_vector(occ), au_intensity=au_vector(inten)))
    return records
