"""Identity bank: real-skin UV textures fitted from the landmarked photos, built into a cache.

The photos and anything derived from them (textures, fits) are third-party data: they are read
from the shared directory and written to a cache directory by ``python -m train.synth textures``,
never committed. ``generate`` builds the cache on first use.

The normalization TARGET identity is chosen on purpose: the ICT neutral mean shape (all identity
coefficients zero) wearing the mean of the ten composite-face textures. Both are averages, so the
target has no idiosyncratic features that read as expression (the paper found that a target whose
neutral face looks expressive hurts): no asymmetry, no resting frown or smile, even skin. The
composites span five ethnic groups and both sexes, so the mean texture is not any one group's.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from train.data.london import CITATION as LONDON_CITATION
from train.data.london import london_people
from train.synth.fit import (
    FRL_OVAL,
    UVUnwrapper,
    fit_landmarks,
    frontal_ibug_reference,
    hair_colour_from_template,
)
from train.synth.ict import FaceModel, shared_root
from train.synth.tem import frl_to_ibug68, read_tem

TEXTURE_VERSION = 2
# "london" means the London set's neutral photos of its training people only (train.data.london:
# the held-out third never becomes a texture).
SOURCE_SETS = ("canada", "composite", "london")
TARGET_SET = "composite"
TARGET_ID = "target:ict-mean-shape+composite-mean-texture"
CITATIONS = {
    "canada": "DeBruine, L. & Jones, B. (2017). Young Adult White Faces with Manipulated Versions. "
              "figshare. doi:10.6084/m9.figshare.4220517.v1 (CC BY 4.0)",
    "composite": "DeBruine, L. (2016). Young adult composite faces. figshare. "
                 "doi:10.6084/m9.figshare.4055130.v1 (CC BY 4.0)",
    "london": LONDON_CITATION,
}
MAX_FIT_ERROR = 0.08  # weighted landmark RMS / inter-ocular distance above which a photo is dropped


@dataclass
class IdentityRecord:
    id: str  # "<set>/<photo stem>"
    texture: str  # file name inside the cache's textures/ directory
    alpha: list[float]  # fitted identity coefficients
    hair: list[float]  # RGB hair colour estimated from the photo
    fit_error: float  # landmark RMS / inter-ocular distance
    source: str  # photo set


def default_cache_dir() -> Path:
    from norface_rt.paths import cache_dir

    return cache_dir() / "synth" / f"textures-v{TEXTURE_VERSION}"


def list_photos(shared: str | os.PathLike[str] | None,
                sets: Sequence[str] = SOURCE_SETS) -> list[tuple[str, Path, Path]]:
    """(id, jpg, tem) for every photo with a template in the given sets, sorted by id."""
    root = shared_root(shared) / "faces"
    out: list[tuple[str, Path, Path]] = []
    for s in sets:
        if s == "london":
            out.extend((p.subject, p.neutral, p.neutral_tem)
                       for p in london_people(root.parent, split="train") if p.neutral_tem)
            continue
        d = root / s
        if not d.is_dir():
            raise FileNotFoundError(f"face photo set not found: {d}")
        for tem in sorted(d.glob("*.tem")):
            jpg = tem.with_suffix(".jpg")
            if jpg.is_file():
                out.append((f"{s}/{tem.stem}", jpg, tem))
    return out


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"could not decode image: {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def build_texture_cache(shared: str | os.PathLike[str] | None, cache: str | os.PathLike[str],
                        ids: Sequence[str] | None = None, tile: int = 512,
                        log: Callable[[str], None] = print) -> Path:
    """Fit every photo, unwrap it, write textures + identities.json + the target texture.

    ``ids`` restricts the photos (tests use a handful); at least one composite is needed for the
    target texture.
    """
    out = Path(cache)
    (out / "textures").mkdir(parents=True, exist_ok=True)
    photos = list_photos(shared)
    if ids is not None:
        wanted = set(ids)
        unknown = wanted - {p[0] for p in photos}
        if unknown:
            raise ValueError(f"unknown photo ids {sorted(unknown)}")
        photos = [p for p in photos if p[0] in wanted]
    if not any(pid.startswith(TARGET_SET + "/") for pid, _, _ in photos):
        raise ValueError(f"the target texture needs at least one {TARGET_SET}/ photo")
    model = FaceModel.from_shared(shared)
    ref = frontal_ibug_reference(model)
    unwrapper = UVUnwrapper(model, tile=tile)
    records: list[IdentityRecord] = []
    target_acc = np.zeros((tile, 2 * tile, 3), np.float64)
    n_target = 0
    t0 = time.time()
    try:
        for k, (pid, jpg, tem) in enumerate(photos):
            photo = _read_rgb(jpg)
            frl = read_tem(tem)
            target, weights = frl_to_ibug68(frl, ref)
            fit = fit_landmarks(model, target, weights, photo.shape[1], photo.shape[0])
            err = fit.rms_px / fit.iod_px
            if err > MAX_FIT_ERROR:
                log(f"skip {pid}: landmark fit error {err:.3f} > {MAX_FIT_ERROR}")
                continue
            hair = hair_colour_from_template(photo, frl)
            tex, _ = unwrapper.unwrap(photo, fit, frl[list(FRL_OVAL)], hair_colour=hair, seed=k)
            name = pid.replace("/", "__") + ".png"
            cv2.imwrite(str(out / "textures" / name), cv2.cvtColor(tex, cv2.COLOR_RGB2BGR))
            records.append(IdentityRecord(id=pid, texture=name, alpha=fit.alpha,
                                          hair=[float(v) for v in hair], fit_error=float(err),
                                          source=pid.split("/")[0]))
            if pid.startswith(TARGET_SET + "/"):
                target_acc += tex
                n_target += 1
            log(f"[{k + 1}/{len(photos)}] {pid}: fit error {err:.3f} IOD, "
                f"{time.time() - t0:.1f} s")
    finally:
        unwrapper.release()
    if n_target == 0:
        raise RuntimeError("no target-set photo could be fitted; cannot build the target texture")
    target_tex = np.clip(target_acc / n_target + 0.5, 0, 255).astype(np.uint8)
    cv2.imwrite(str(out / "target.png"), cv2.cvtColor(target_tex, cv2.COLOR_RGB2BGR))
    meta = {
        "texture_version": TEXTURE_VERSION, "tile": tile, "target": TARGET_ID,
        "target_sources": n_target, "identities": [asdict(r) for r in records],
        "citations": {s: CITATIONS[s] for s in {r.source for r in records}},
    }
    (out / "identities.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out


class TextureBank:
    """Reads a texture cache; decoded textures are kept in a bounded LRU (``keep`` entries)."""

    def __init__(self, cache: str | os.PathLike[str], keep: int = 64) -> None:
        self.dir = Path(cache)
        meta_path = self.dir / "identities.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"texture cache not built: {meta_path} missing; run "
                f"`python -m train.synth textures --cache {self.dir}`")
        meta = json.loads(meta_path.read_text())
        if meta.get("texture_version") != TEXTURE_VERSION:
            raise ValueError(f"texture cache {self.dir} has texture_version "
                             f"{meta.get('texture_version')}, expected {TEXTURE_VERSION}; rebuild it")
        self.meta = meta
        self.identities = [IdentityRecord(**r) for r in meta["identities"]]
        if not self.identities:
            raise ValueError(f"texture cache {self.dir} lists no identities")
        self.keep = int(keep)
        self._lru: OrderedDict[str, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.identities)

    def _load(self, name: str) -> np.ndarray:
        if name in self._lru:
            self._lru.move_to_end(name)
            return self._lru[name]
        img = _read_rgb(self.dir / name)
        self._lru[name] = img
        while len(self._lru) > self.keep:
            self._lru.popitem(last=False)
        return img

    def texture(self, i: int) -> np.ndarray:
        return self._load("textures/" + self.identities[i].texture)

    def target_texture(self) -> np.ndarray:
        return self._load("target.png")


def is_built(cache: str | os.PathLike[str]) -> bool:
    p = Path(cache)
    return (p / "identities.json").is_file() and (p / "target.png").is_file()
