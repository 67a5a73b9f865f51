"""Serving a model set from NVIDIA Triton Inference Server: the repository writer
(:mod:`~norface_rt.serving.repository`, ``norface-rt triton-repo``), the server's own Python
environment (:mod:`~norface_rt.serving.env`) and a launcher for the ``tritonserver`` bundled in
``nvidia-pytriton`` (:mod:`~norface_rt.serving.server`, ``norface-rt triton-server``).

These are builders and tools: they depend on the runtime (the names a repository uses are owned by
:mod:`norface_rt.backends.triton_backend`), never the reverse, and only the CLI imports them.
"""
