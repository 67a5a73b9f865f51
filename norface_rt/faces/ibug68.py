"""The 68 iBUG 300-W points (OpenFace's ``x_0..x_67``) as points of MediaPipe's face mesh.

OpenFace writes the 68 points of the iBUG 300-W / Multi-PIE scheme: jaw line 0-16 (from the
subject's right ear to the left), brows 17-21 (right) and 22-26 (left), nose bridge 27-30 and
base 31-35, eyes 36-41 (right: outer corner, upper lid, inner corner, lower lid) and 42-47
(left: inner corner first), outer lips 48-59 (from the right corner, upper lip first) and inner
lips 60-67. MediaPipe's 478-point mesh has no such points, but a vertex near each:
:data:`IBUG68_FROM_MEDIAPIPE` ``[i]`` is the mesh point that stands for iBUG point ``i``.

How the map was made (once; the numbers are data, documented in docs/protocol.md): the 68
landmark vertices of the ICT-FaceKit head model (its ``landmarks68``, MIT licence) were placed on
MediaPipe's canonical face model (the metric mesh inside the ``.task`` bundle) by the similarity
that best maps nine points unambiguous on both (eye corners, nose tip, mouth corners, chin,
nose bridge; residual 0.1-0.6 cm); each iBUG point then took the nearest MediaPipe vertex of the
same feature: the face oval for the jaw line, the brow vertices, the eyelid margins for the eyes,
the outer lip line, and the upper and lower inner lip lines (MediaPipe's own feature contours),
the whole mesh for the nose. The result is mirror-symmetric, as both models are. What this map
cannot give: the jaw line is the mesh's face oval, a fixed line on the skin, where iBUG's
points follow the silhouette (for a turned head they differ, as OpenFace's own model and
annotations do).
"""

from __future__ import annotations

import numpy as np

IBUG68_FROM_MEDIAPIPE: tuple[int, ...] = (
    # jaw line 0-16
    127, 234, 93, 132, 172, 136, 149, 148, 152, 377, 378, 365, 397, 361, 323, 454, 356,
    # brows 17-21 (right), 22-26 (left)
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose bridge 27-30, nose base 31-35
    168, 197, 195, 4, 98, 97, 2, 326, 327,
    # right eye 36-41, left eye 42-47
    33, 160, 158, 133, 153, 163, 362, 385, 387, 263, 390, 380,
    # outer lips 48-59
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    # inner lips 60-67
    78, 81, 13, 311, 308, 402, 14, 178,
)
IBUG68_INDEX = np.asarray(IBUG68_FROM_MEDIAPIPE, dtype=np.intp)


def ibug68(landmarks: np.ndarray) -> np.ndarray:
    """The 68 iBUG points (68, C) of a MediaPipe mesh (468 or 478, C)."""
    pts = np.asarray(landmarks)
    if pts.ndim != 2 or pts.shape[0] < 468:
        raise ValueError(f"landmarks: expected a MediaPipe mesh of shape (478 or 468, >=2), got "
                         f"{pts.shape}")
    return pts[IBUG68_INDEX]
