"""The live view (``--http``): a page any browser opens to watch the annotated video, each
face's AU and emotion bars and their timelines as they are computed, with the results as
Server-Sent Events and a health endpoint (docs/live_view.md).

:mod:`norface_rt.sinks.web.sink` is the sink; :mod:`norface_rt.sinks.web.server` the HTTP
server on its own thread; :mod:`norface_rt.sinks.web.address` the address rule and the defaults
the run options declare; ``static/`` the page, its script and its style sheet (hand-written,
no third-party code, nothing fetched from elsewhere). Names are imported lazily (PEP 562), so
the options can read the address rule without loading the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from norface_rt.sinks.web.address import HttpAddress, parse_http_address
    from norface_rt.sinks.web.server import ServerLimits
    from norface_rt.sinks.web.sink import HttpViewSink, message_json

_LAZY = {
    "HttpAddress": "norface_rt.sinks.web.address",
    "parse_http_address": "norface_rt.sinks.web.address",
    "ServerLimits": "norface_rt.sinks.web.server",
    "HttpViewSink": "norface_rt.sinks.web.sink",
    "message_json": "norface_rt.sinks.web.sink",
}

__all__ = ["HttpAddress", "HttpViewSink", "ServerLimits", "message_json", "parse_http_address"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'norface_rt.sinks.web' has no attribute {name!r}")
