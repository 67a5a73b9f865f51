"""Output sinks: ZeroMQ publisher and PUSH hand-off, JSONL/CSV files, overlay video / window,
the live view in a browser (``web``), NATS JetStream, the metrics endpoint, and the per-sink
thread + buffer the pipeline runs each one behind (``SinkWorker``). Sinks receive the typed
messages of :mod:`norface_rt.wire`; the subscribing side (``subscribe``, ``run_listen``) lives in
:mod:`norface_rt.wire.listen` and is also reachable here.

Submodules are imported lazily (PEP 562) so that, for example, ``norface-rt listen`` does not pay
for importing OpenCV and PyAV.
"""

from __future__ import annotations

import importlib
from typing import Any

from norface_rt.sinks.base import Sink

_LAZY = {
    "ZmqPublisher": "norface_rt.sinks.zmq_pub",
    "ZmqPush": "norface_rt.sinks.zmq_pub",
    "SinkWorker": "norface_rt.sinks.worker",
    "JsonlSink": "norface_rt.sinks.files",
    "CsvSink": "norface_rt.sinks.files",
    "OverlayVideoSink": "norface_rt.sinks.overlay",
    "MultiStreamOverlaySink": "norface_rt.sinks.overlay",
    "ShowSink": "norface_rt.sinks.overlay",
    "HttpViewSink": "norface_rt.sinks.web.sink",
    "draw": "norface_rt.sinks.overlay",
    "subscribe": "norface_rt.wire.listen",
    "run_listen": "norface_rt.wire.listen",
}

__all__ = ["Sink", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'norface_rt.sinks' has no attribute {name!r}")
