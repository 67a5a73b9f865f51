"""Writing model sets from a trained (or freshly initialised) NorfaceModel.

* :mod:`norface_rt.export.graphs` -- tracing the two halves to ONNX with the config embedded;
* :mod:`norface_rt.export.writer` -- :func:`save_model_set`, a complete model set in one call;
* :mod:`norface_rt.export.untrained` -- randomly initialised sets and their procedural target face.

The format itself (file names, metadata keys, graph I/O) is :mod:`norface_rt.model_set`'s; reading
weights back into PyTorch is :mod:`norface_rt.weights`'. Needs the ``export`` extra (torch, onnx).
"""

from __future__ import annotations

from norface_rt.extras import require

require("export", "exporting a model set")

from norface_rt.export.graphs import GRAPH_KINDS, export_onnx  # noqa: E402  (after the check)
from norface_rt.export.untrained import init_untrained, synthetic_target_image  # noqa: E402
from norface_rt.export.writer import save_model_set  # noqa: E402

__all__ = ["GRAPH_KINDS", "export_onnx", "init_untrained", "save_model_set",
           "synthetic_target_image"]
