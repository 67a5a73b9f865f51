"""``--http``: the live view as one more sink (docs/live_view.md).

The sink runs on its own thread behind its bounded buffer like every other output
(:class:`~norface_rt.sinks.worker.SinkWorker`), but that thread takes in what came once per
image interval rather than waking for every frame (:attr:`HttpViewSink.gather_s`): on a machine
whose cores the pipeline keeps busy, each wake-up takes the interpreter lock and a core from the
pipeline. :meth:`HttpViewSink.write_many` hands the batch to the server's thread in one go (each
message's JSON is made there when the first event client reads it, :func:`message_json`) and
keeps a reference to the newest frame of each stream. A JPEG is drawn and encoded from it only
when a viewer waits for a newer image, at most ``max_fps`` times a second per stream, and shared
by every viewer of that stream: a stalled browser makes the server do nothing for it, and twenty
make it do what one does, plus the sending.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from functools import partial
from importlib import resources
from typing import Any

import numpy as np

from norface_rt.config import EMOTION_COLORS, SERIES_COLORS, ModelConfig
from norface_rt.sinks.base import Probe, Sink
from norface_rt.sinks.web.address import (
    DEFAULT_HOST,
    DEFAULT_MAX_FPS,
    TOKEN_ENV,
    HttpAddress,
    parse_http_address,
)
from norface_rt.sinks.web.server import (
    EVENT_INTERVAL,
    STATS_STREAM,
    Published,
    ServerLimits,
    ViewServer,
)
from norface_rt.wire.codec import to_json
from norface_rt.wire.messages import FrameMessage, Message, StatsMessage, as_message
from norface_rt.wire.schema import SCHEMA_VERSION

log = logging.getLogger(__name__)

DEFAULT_MAX_WIDTH = 960
DEFAULT_QUALITY = 75
# The page's files, served from memory: path -> (package file, content type).
_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
          "/live.js": ("live.js", "text/javascript; charset=utf-8"),
          "/live.css": ("live.css", "text/css; charset=utf-8")}


def message_json(msg: Message) -> bytes:
    """An event's data: the message's one JSON form (:func:`~norface_rt.wire.codec.to_json`,
    its wire dict, what ZeroMQ subscribers decode and the JSONL file holds), UTF-8."""
    return to_json(msg).encode()


def json_size_hint(msg: Message) -> int:
    """What a message kept for the event ring costs before its JSON exists: an upper estimate
    of the memory its fields hold (a landmark point is three Python floats in a list, about
    150 bytes, where its JSON is about 20), so the ring's byte bound holds either way."""
    size = 1024
    for face in getattr(msg, "faces", ()):
        size += 1024 + 128 * (len(face.emotions) + len(face.au_occurrence)
                              + len(face.au_intensity) + len(face.blendshapes or ()))
        size += 160 * len(face.landmarks or ())
    return size


def _page_files() -> dict[str, tuple[str, bytes]]:
    root = resources.files("norface_rt.sinks.web") / "static"
    return {path: (ctype, (root / name).read_bytes()) for path, (name, ctype) in _FILES.items()}


class HttpViewSink(Sink):
    """Serves the live view on ``address`` (``[HOST:]PORT``; see :func:`parse_http_address`)
    while it is open: the page, each stream's annotated images as MJPEG, the results as
    Server-Sent Events and a health endpoint (docs/live_view.md lists the routes).

    ``token`` (default ``$NORFACE_RT_HTTP_TOKEN``): every request must carry it. ``max_fps``:
    most images per second sent per stream (the results stream always carries every frame);
    ``max_width``: images wider than this are scaled down before encoding. The socket is bound
    at construction, so a busy port fails before the pipeline starts.
    """

    name = "http"
    needs_image = True
    every_message = True
    # Enough room that the publish thread never waits for it in practice, whatever --sink-buffer
    # says (the Python API runs with a buffer of 1 per sink).
    min_buffer = 256

    def __init__(self, address: str | HttpAddress = f"{DEFAULT_HOST}:0", *,
                 token: str | None = None, allow_remote: bool = False,
                 max_fps: float = DEFAULT_MAX_FPS, max_width: int = DEFAULT_MAX_WIDTH,
                 quality: int = DEFAULT_QUALITY, limits: ServerLimits | None = None) -> None:
        addr = address if isinstance(address, HttpAddress) else \
            parse_http_address(address, allow_remote=allow_remote)
        if not addr.loopback and not allow_remote:
            raise ValueError(f"--http: {addr.host} is not a loopback address (pass allow_remote)")
        if not (isinstance(max_fps, (int, float)) and 0 < max_fps <= 1000):
            raise ValueError(f"--http-fps: expected a number in (0, 1000], got {max_fps!r}")
        if not (isinstance(max_width, int) and 32 <= max_width <= 16384):
            raise ValueError(f"max_width: expected an integer in [32, 16384], got {max_width!r}")
        if not (isinstance(quality, int) and 1 <= quality <= 100):
            raise ValueError(f"quality: expected an integer in [1, 100], got {quality!r}")
        token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        if token is not None and not (1 <= len(token) <= 256 and token.isprintable()
                                      and " " not in token):
            raise ValueError("--http-token: expected 1 to 256 printable characters without "
                             "spaces")
        if not addr.loopback and token is None:
            log.warning("--http on %s without a token: anyone who can reach this address can "
                        "watch (set --http-token or $%s)", addr.host, TOKEN_ENV)
        self.max_fps = float(max_fps)
        # Messages are taken in once per image interval (1 / max_fps), and at least every 40 ms
        # as the server's loop takes them in (EVENT_INTERVAL): one wake-up of the sink's thread
        # per interval instead of one per frame, and one image drawn per stream, from the
        # newest frame of the batch.
        self.gather_s = min(EVENT_INTERVAL, 1.0 / self.max_fps)
        self.max_width = max_width
        self.quality = quality
        self.token_required = token is not None
        self._model: dict[str, Any] = {}
        self._status: Probe | None = None
        self._latest: dict[str, tuple[FrameMessage, np.ndarray]] = {}
        self._encoded: dict[str, int] = {}  # stream -> seq of the last image encoded
        self._last_encode: dict[str, float] = {}
        self.images = 0  # JPEGs encoded
        self.server = ViewServer(addr.host, addr.port, token=token, limits=limits,
                                 files=_page_files(), info=self.info, health=self._pipeline)
        self.server.start()

    @property
    def url(self) -> str:
        return self.server.url

    def destination(self) -> str:
        return f"live view {self.url}"

    # ------------------------------------------------------------------ hooks
    def bind_model(self, config: ModelConfig) -> None:
        self._model = {"model_id": str(config.model_id), "trained": bool(config.trained),
                       "au_names": list(config.au_names),
                       "emotion_names": list(config.emotion_names),
                       "au_intensity_max": float(config.au_intensity_max)}

    def watch(self, *, queue_depths: Probe | None = None, reconnects: Probe | None = None,
              status: Probe | None = None) -> None:
        """The pipeline's status (stream states, outputs' counters) for ``/health`` and the
        page's list of streams."""
        self._status = status

    def _pipeline(self) -> dict[str, Any]:
        if self._status is None:
            return {}
        try:
            return dict(self._status())
        except Exception:  # the view must not fail because a probe did
            log.exception("live view: reading the pipeline's status failed")
            return {}

    def info(self) -> dict[str, Any]:
        """What the page needs to draw (``/api/info``)."""
        from norface_rt.sinks.overlay import PALETTE, UNTRACKED

        def hex_rgb(c: tuple[int, int, int]) -> str:
            return "#{:02x}{:02x}{:02x}".format(*c)

        streams = list((self._pipeline().get("streams") or {}).keys())
        for sid in list(self._latest):  # (written by the sink's thread meanwhile)
            if sid not in streams:
                streams.append(sid)
        return {"streams": streams, "schema_version": SCHEMA_VERSION, "model": self._model,
                "emotion_colors": EMOTION_COLORS, "series_colors": list(SERIES_COLORS),
                "track_colors": [hex_rgb(c) for c in PALETTE],
                "untracked_color": hex_rgb(UNTRACKED),
                "max_fps": self.max_fps, "token_required": self.token_required}

    # ------------------------------------------------------------------ messages
    def write(self, msg: Message, image: np.ndarray | None = None) -> None:
        self.write_many([(msg, image)])

    def write_many(self, items: Sequence[tuple[Message, np.ndarray | None]]) -> None:
        """Hands the batch to the server in one go. A message's JSON is made by the server's
        loop when the first event client reads it (:func:`message_json`, once, shared by all):
        with no reader, or only stalled ones, no message is ever serialised."""
        batch: list[Published] = []
        fresh: set[str] = set()  # streams with a newer frame to draw from
        for m, image in items:
            msg = as_message(m)
            if isinstance(msg, StatsMessage):  # one a second: its JSON now
                batch.append(Published(STATS_STREAM, msg.kind, None, message_json(msg)))
                continue
            data = partial(message_json, msg)
            # frame or eos: the counters /health shows beside the stream's state
            batch.append(Published(msg.stream_id, msg.kind, msg.seq, data, json_size_hint(msg),
                                   msg.dropped_frames, msg.skipped_frames, msg.lost_frames,
                                   msg.frame_index if isinstance(msg, FrameMessage) else None,
                                   msg.error))
            if isinstance(msg, FrameMessage) and image is not None:
                self._latest[msg.stream_id] = (msg, image)
                fresh.add(msg.stream_id)
        self.server.publish_many(batch)
        for sid in fresh:
            self._maybe_encode(sid)

    def tick(self) -> None:
        """A viewer that arrives while no frame comes (a paused or ended stream) still gets
        the newest image."""
        for sid in list(self._latest):
            self._maybe_encode(sid)

    def _maybe_encode(self, sid: str) -> None:
        if not self.server.wants_image(sid):
            return
        msg, image = self._latest[sid]
        seq = msg.seq
        if self._encoded.get(sid) == seq:
            return
        now = time.monotonic()
        if now - self._last_encode.get(sid, -1e9) < 1.0 / self.max_fps:
            return  # the next frame (or tick) after the interval gets it
        self._last_encode[sid] = now
        self._encoded[sid] = seq
        self.server.publish_jpeg(sid, seq, msg.frame_index, self._jpeg(msg, image))
        self.images += 1

    def _jpeg(self, msg: FrameMessage, image: np.ndarray) -> bytes:
        import cv2

        from norface_rt.sinks.overlay import draw

        h, w = image.shape[:2]
        if w > self.max_width:  # boxes are scaled by draw() to the smaller image
            image = cv2.resize(image, (self.max_width, max(1, round(h * self.max_width / w))),
                               interpolation=cv2.INTER_AREA)
        drawn = draw(image, msg, panel=False)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return buf.tobytes()

    def stats(self) -> dict[str, Any]:
        return {"images": self.images, **self.server.stats()}

    def close(self) -> None:
        self.server.stop()
        self._latest.clear()
