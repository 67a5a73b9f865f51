"""Check mode: does the runtime's face stage see our renders the way the generator labels them?

Runs the runtime's MediaPipe landmarker (image mode) on full synthetic originals (before
alignment) and reports the detection rate, plus how far MediaPipe's five alignment points land
from the renderer's (in inter-ocular distances). A large offset would mean training crops and
serving crops are framed differently, which would cost accuracy no matter how good the model is.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from norface_rt.faces.align import points5_from_ibug68
from norface_rt.types import FramePacket


@dataclass
class CheckReport:
    count: int
    detected: int
    detection_rate: float
    points5_error_iod: float  # median over detected faces
    points5_error_iod_p90: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_detection(generator: Any, landmarker_path: str | os.PathLike[str], count: int,
                    seed: int) -> CheckReport:
    """Render ``count`` originals of ``seed`` and run MediaPipe on each."""
    from norface_rt.faces.landmarker import Landmarker

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    t0 = time.time()
    detected = 0
    errors: list[float] = []
    with Landmarker(landmarker_path, max_faces=1, mode="image") as lm:
        for i in range(count):
            rng = np.random.default_rng([int(seed), int(i)])
            identity, alpha = generator.draw_identity(rng)
            expr = generator.sampler.sample(rng)
            view = generator.view_original(rng, identity, alpha, expr.weights)
            frame = FramePacket(stream_id="synth-check", frame_index=i, image=view.image,
                                pts=None, capture_time=time.time())
            faces = lm.detect(frame)
            if not faces:
                continue
            detected += 1
            ours = points5_from_ibug68(view.landmarks)
            iod = float(np.linalg.norm(ours[0] - ours[1]))
            err = np.linalg.norm(np.asarray(faces[0].points5) - ours, axis=1).mean() / iod
            errors.append(float(err))
    e = np.asarray(errors) if errors else np.asarray([np.nan])
    return CheckReport(count=count, detected=detected, detection_rate=detected / count,
                       points5_error_iod=float(np.median(e)),
                       points5_error_iod_p90=float(np.percentile(e, 90)),
                       seconds=time.time() - t0)
