"""TensorRT engine building and the TensorRT runtime backend.

Not implemented yet (tracked as its own issue: "GPU path: TensorRT FP16 engines, a CUDA fallback,
and the benchmark suite"). Until then ``--backend tensorrt`` fails with a clear message, and the GPU
choices are ONNX Runtime's CUDA provider (``pip install norface-rt[gpu]``) or ``--backend torch
--device cuda``.
"""
