"""The live view (``--http``): a page any browser opens to watch the annotated video, each
face's AU and emotion bars and their timelines as they are computed, with the results as
Server-Sent Events and a health endpoint (docs/live_view.md).

:mod:`norface_rt.sinks.web.sink` is the sink; :mod:`norface_rt.sinks.web.server` the HTTP
server on its own thread; ``static/`` the page, its script and its style sheet (hand-written,
no third-party code, nothing fetched from elsewhere).
"""

from __future__ import annotations

from norface_rt.sinks.web.server import ServerLimits
from norface_rt.sinks.web.sink import HttpViewSink, message_json, parse_http_address

__all__ = ["HttpViewSink", "ServerLimits", "message_json", "parse_http_address"]
