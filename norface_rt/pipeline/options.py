"""Everything a user can choose about a run, validated in one place so errors name the option."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from norface_rt.model_set import JOINED_GRAPH_GONE
from norface_rt.protocol import DEFAULT_ENDPOINT
from norface_rt.sources.base import Source

FUSED_REMOVED = f"--fused is no longer available: {JOINED_GRAPH_GONE}; drop the flag"


@dataclass
class PipelineOptions:
    """What to analyse and how (the ``norface-rt run`` options that shape the pipeline)."""

    # Paths, URLs or devices as the CLI takes them; the Python API may pass Source objects.
    sources: Sequence[str | os.PathLike[str] | Source]
    stream_ids: Sequence[str] | None = None
    model_dir: str | os.PathLike[str] | None = None
    landmarker: str | os.PathLike[str] | None = None
    backend: str = "onnxruntime"
    # None: the backend's natural device (cpu for onnxruntime/torch, cuda for torch-cuda/tensorrt).
    device: str | None = None
    threads: int | None = None
    max_faces: int = 4
    max_batch: int = 16
    queue_size: int = 8
    realtime: bool = False
    loop: bool = False
    stats_interval: float = 0.0
    # MediaPipe's bundled detector is short-range: faces in wide/group shots are found only when the
    # frame is also scanned in square tiles (side = tiling * min(width, height)). Costs ~3x per frame,
    # so it is on by default only for still images.
    tiling: float | None = None
    # Warp faces on the backend's device from the uploaded frame (torch-cuda) instead of on the CPU.
    device_align: bool = False
    # Models with a geometry input: remove each tracked person's resting-face offset in videos
    # (norface_rt.faces.geometry.TrackBaseline). Stills never have one.
    baseline: bool = True
    # Files: skip undecodable frames and carry on (False: end the stream at the first one).
    skip_corrupt: bool = True
    # RTSP: give up reconnecting after this many seconds without frames / failed attempts in a
    # row (None: retry forever, for unattended cameras that may reboot).
    reconnect_timeout: float | None = None
    reconnect_tries: int | None = None
    # Each sink's buffer (messages) and how long a lossless run waits for room in a full one
    # before that sink is marked stalled and loses messages instead of stalling the rest.
    sink_buffer: int = 1024
    sink_timeout: float = 2.0
    # Constructor options for the sources that accept them (e.g. open_timeout for RTSP).
    source_kwargs: dict[str, Any] = field(default_factory=dict)
    # Optional face fields of frame messages (FaceResult always holds them): MediaPipe's 478
    # landmarks and its 52 blendshape scores.
    landmarks: bool = False
    blendshapes: bool = False
    # Time constant (seconds) of per-track exponential smoothing of AU and emotion outputs
    # (norface_rt.smoothing); None or 0 = off.
    smooth: float | None = None
    # --backend triton: the server's gRPC endpoint, the ensemble's name, one request's timeout
    # and how long one batch is retried while the server is away (seconds).
    triton_url: str | None = None
    triton_model: str = "norface"
    triton_timeout: float = 10.0
    triton_retry: float = 30.0

    def validate(self) -> None:
        from norface_rt.backends import BACKEND_NAMES

        if not self.sources:
            raise ValueError("sources: expected at least one SOURCE (file, folder, rtsp:// URL or "
                             "/dev/videoN)")
        if self.stream_ids is not None and len(self.stream_ids) != len(self.sources):
            raise ValueError(f"--stream-id: expected one per source ({len(self.sources)}), "
                             f"got {len(self.stream_ids)}")
        if self.backend not in BACKEND_NAMES:
            raise ValueError(f"--backend must be one of {list(BACKEND_NAMES)}, got {self.backend!r}")
        if not 1 <= self.max_faces <= 64:
            raise ValueError(f"--max-faces must be in [1, 64], got {self.max_faces}")
        if not 1 <= self.max_batch <= 1024:
            raise ValueError(f"--max-batch must be in [1, 1024], got {self.max_batch}")
        if not 1 <= self.queue_size <= 1024:
            raise ValueError(f"--queue-size must be in [1, 1024], got {self.queue_size}")
        if self.threads is not None and not 1 <= self.threads <= 256:
            raise ValueError(f"--threads must be in [1, 256], got {self.threads}")
        if self.tiling is not None and not 0.2 <= self.tiling <= 1.0:
            raise ValueError(f"--tiling must be in [0.2, 1.0], got {self.tiling}")
        if self.stats_interval < 0:
            raise ValueError(f"--stats-interval must be >= 0 seconds, got {self.stats_interval}")
        if self.smooth is not None and not (math.isfinite(self.smooth) and 0 <= self.smooth <= 3600):
            raise ValueError(f"--smooth must be in [0, 3600] seconds (0 = off), got {self.smooth}")
        if (self.backend == "triton") != (self.triton_url is not None):
            raise ValueError("--triton-url is needed with --backend triton and only there (got "
                             f"--backend {self.backend}, --triton-url {self.triton_url})")
        if self.triton_url is not None:
            from norface_rt.backends.triton_backend import parse_triton_url

            parse_triton_url(self.triton_url)
        if not self.triton_timeout > 0 or not self.triton_retry >= 0:
            raise ValueError(f"--triton-timeout must be > 0 and --triton-retry >= 0 seconds, got "
                             f"{self.triton_timeout} and {self.triton_retry}")
        if self.reconnect_timeout is not None and not self.reconnect_timeout >= 0:
            raise ValueError(f"--reconnect-timeout must be >= 0 seconds, got "
                             f"{self.reconnect_timeout}")
        if self.reconnect_tries is not None and not 1 <= self.reconnect_tries <= 1_000_000:
            raise ValueError(f"--reconnect-tries must be in [1, 1000000], got "
                             f"{self.reconnect_tries}")
        if not 1 <= self.sink_buffer <= 1_000_000:
            raise ValueError(f"--sink-buffer must be in [1, 1000000], got {self.sink_buffer}")
        if not 0 < self.sink_timeout <= 3600:
            raise ValueError(f"--sink-timeout must be in (0, 3600] seconds, got {self.sink_timeout}")
        if self.device_align and self.backend != "torch-cuda":
            raise ValueError(f"--device-align needs --backend torch-cuda, got --backend {self.backend}")


@dataclass
class SinkOptions:
    """Where results go (the ``norface-rt run`` output options)."""

    zmq: str | None = DEFAULT_ENDPOINT  # None or "none": no publisher
    allow_remote: bool = False
    sndhwm: int = 1000
    jsonl: str | os.PathLike[str] | None = None
    csv: str | os.PathLike[str] | None = None
    overlay: str | os.PathLike[str] | None = None
    show: bool = False
    # CSV layout (norface_rt.sinks.files.CSV_STYLES) and its optional columns, which need the
    # same PipelineOptions fields set (the messages must carry landmarks / blendshapes).
    csv_style: str = "default"
    landmarks: bool = False
    blendshapes: bool = False
    # NATS JetStream results feed (sinks/nats_js.py): server URL, stream, subject prefix.
    nats: str | None = None
    nats_stream: str = "NORFACE"
    nats_prefix: str = "norface"
    # Prometheus endpoint (sinks/metrics.py): port (None: off) and address.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # Lossless hand-off: a PUSH socket bound here (consumers connect PULL), its queue and what
    # happens when it is full ("block": back-pressure for up to push_timeout s, "drop").
    push: str | None = None
    push_hwm: int = 1000
    push_policy: str = "block"
    push_timeout: float = 30.0
    # CURVE for --zmq and --push: this server's secret key file, and the folder of subscriber
    # public keys it accepts (None: encryption only).
    curve_secret: str | os.PathLike[str] | None = None
    curve_clients: str | os.PathLike[str] | None = None
    # The live view (sinks/web): [HOST:]PORT to serve on (None: off; loopback unless
    # allow_remote), the token every request must carry (None: $NORFACE_RT_HTTP_TOKEN or none),
    # and the most images per second sent per stream.
    http: str | None = None
    http_token: str | None = None
    http_fps: float = 30.0

    def validate(self) -> None:
        if self.curve_clients is not None and self.curve_secret is None:
            raise ValueError("--curve-clients needs --curve-secret (the publisher's own secret "
                             "key file, from `norface-rt keys make`)")
        if self.push_policy not in ("block", "drop"):
            raise ValueError(f"--push-policy must be 'block' or 'drop', got {self.push_policy!r}")
        if not 1 <= self.push_hwm <= 10_000_000:
            raise ValueError(f"--push-hwm must be in [1, 10000000], got {self.push_hwm}")
        if not self.push_timeout > 0:
            raise ValueError(f"--push-timeout must be > 0 seconds, got {self.push_timeout}")
        if self.http is not None:
            from norface_rt.sinks.web.sink import parse_http_address

            parse_http_address(self.http, allow_remote=self.allow_remote)
        if not 0 < self.http_fps <= 1000:
            raise ValueError(f"--http-fps must be in (0, 1000], got {self.http_fps}")

    @property
    def publishes(self) -> bool:
        return bool(self.zmq) and str(self.zmq).lower() != "none"
