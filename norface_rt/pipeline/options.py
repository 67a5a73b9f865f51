"""Everything a user can choose about a run, declared once and validated in one place.

Each field carries its default, its ``norface-rt run`` flag, help and group (:mod:`norface_rt.flags`):
the CLI's parser is generated from these classes, the Python API's ``Analyzer(**options)``
builds the same :class:`PipelineOptions`, and everything below (the factory, the pipeline, the
stages) is handed the values explicitly. Errors name the option's flag.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from norface_rt.backends.registry import BACKENDS, DEFAULT_BACKEND, backend_spec
from norface_rt.backends.triton_backend import DEFAULT_RETRY_S, DEFAULT_TIMEOUT_S
from norface_rt.files import (
    DEFAULT_MAX_PIXELS,
    MAX_PIXELS_LIMIT,
    check_output_file,
    stream_file,
)
from norface_rt.flags import (
    api_options,
    check_options,
    nonneg_float,
    option,
    options_of,
    port,
    positive_float,
    positive_int,
)
from norface_rt.sinks.base import BufferPolicy
from norface_rt.sinks.files import CSV_STYLES
from norface_rt.sinks.metrics import DEFAULT_HOST as METRICS_HOST
from norface_rt.sinks.web.address import DEFAULT_MAX_FPS as HTTP_MAX_FPS
from norface_rt.sinks.web.address import TOKEN_ENV as HTTP_TOKEN_ENV
from norface_rt.sinks.web.address import parse_http_address
from norface_rt.sinks.worker import DEFAULT_CAPACITY, DEFAULT_STALL_TIMEOUT
from norface_rt.wire.names import (
    DEFAULT_ENDPOINT,
    DEFAULT_PUSH_HWM,
    DEFAULT_PUSH_TIMEOUT,
    DEFAULT_SNDHWM,
    NATS_STREAM,
    NATS_SUBJECT_PREFIX,
    TRITON_MODEL,
    check_endpoint,
    check_stream_id,
)

if TYPE_CHECKING:
    from norface_rt.sources.base import Source

# The --help groups of `norface-rt run`, in the order they are listed (an option names its group
# in its field's metadata; cli/run.py lays the groups out in this order).
INPUT = "input"
FACES = "faces"
MODEL = "model"
OUTPUTS = "outputs"
TRANSPORT = "transport"
LIVE = "live sources"
GPU = "GPU"
SERVING = "serving"
GROUPS: tuple[str, ...] = (INPUT, FACES, MODEL, OUTPUTS, TRANSPORT, LIVE, GPU, SERVING)

# Faces kept per frame when --max-faces is not given: a video's latency grows with every face, a
# still has none to keep, so it keeps every face up to the most a frame may hold.
VIDEO_MAX_FACES = 4
MAX_FACES = 64


def max_faces_for(max_faces: int | None, *, video: bool) -> int:
    """The faces a stream keeps: ``max_faces`` when given, else the default of its kind."""
    if max_faces is not None:
        return max_faces
    return VIDEO_MAX_FACES if video else MAX_FACES


def check_stream_ids(flag: str, ids: Sequence[str]) -> None:
    """Each id usable as a topic (:func:`~norface_rt.wire.names.check_stream_id`), and each once
    (two streams with one id would mix their messages and files)."""
    for sid in ids:
        check_stream_id(flag, sid)
    twice = sorted({sid for sid in ids if list(ids).count(sid) > 1})
    if twice:
        raise ValueError(f"{flag}: expected a different id for each source, got {twice} more "
                         "than once")


def check_port(flag: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"{flag}: expected a port in 1..65535, got {value!r}")


def check_zmq_endpoint(flag: str, value: str) -> None:
    if value.strip().lower() != "none":
        check_endpoint(flag, value)


def check_seekable_file(flag: str, value: str | os.PathLike[str]) -> None:
    check_output_file(flag, value, regular=True)


@dataclass
class PipelineOptions:
    """What to analyse and how (the ``norface-rt run`` options that shape the pipeline)."""

    # Paths, URLs or devices as the CLI takes them; the Python API may pass Source objects.
    sources: Sequence[str | os.PathLike[str] | Source] = option(
        flag="sources", group=INPUT, nargs="+", metavar="SOURCE",
        help="video file, image file or folder, rtsp://..., /dev/videoN or webcam:N")
    stream_ids: Sequence[str] | None = option(
        None, flag="--stream-id", group=INPUT, append=True, metavar="ID", check=check_stream_ids,
        help="stream id per source, in order (default: derived from the source; ids starting "
             "with _ are reserved)")
    model_dir: str | os.PathLike[str] | None = option(
        None, flag="--model-dir", group=MODEL, api=True,
        help="Norface model set (default: $NORFACE_RT_MODEL_DIR, the user cache, then the "
             "packaged model)")
    landmarker: str | os.PathLike[str] | None = option(
        None, flag="--landmarker", group=MODEL, api=True,
        help="MediaPipe face_landmarker .task (default: $NORFACE_RT_LANDMARKER, the user cache, "
             "then the bundle shipped with norface-rt)")
    backend: str = option(
        DEFAULT_BACKEND, flag="--backend", group=MODEL, choices=tuple(BACKENDS), api=True,
        help="inference backend (torch / torch-cuda need the 'torch' extra, tensorrt the "
             "'tensorrt' extra)")
    # --backend triton: the server's gRPC endpoint, the ensemble's name, one request's timeout
    # and how long one batch is retried while the server is away (seconds).
    triton_url: str | None = option(
        None, flag="--triton-url", group=SERVING, metavar="grpc://HOST:PORT",
        help="with --backend triton: the Triton server's gRPC endpoint (the model and its "
             "config come from the server; docs/scaling.md)")
    triton_model: str = option(
        TRITON_MODEL, flag="--triton-model", group=SERVING,
        help="with --backend triton: the ensemble's name (default %(default)s)")
    triton_timeout: float = option(
        DEFAULT_TIMEOUT_S, flag="--triton-timeout", group=SERVING, parse=nonneg_float,
        help="with --backend triton: seconds one request may take (default %(default)g)")
    triton_retry: float = option(
        DEFAULT_RETRY_S, flag="--triton-retry", group=SERVING, parse=nonneg_float,
        help="with --backend triton: seconds a batch is retried while the server is down, "
             "restarting or overloaded, before its frames are flagged (default %(default)g)")
    # None: the backend's natural device (its row of the backend table).
    device: str | None = option(
        None, flag="--device", group=GPU, api=True,
        help="cpu, cuda or cuda:N: onnxruntime (cuda needs ONNX Runtime's CUDA build instead of "
             "the CPU build: README, 'GPU'; default: that build's GPU when installed, else cpu), "
             "torch (default cpu), torch-cuda and tensorrt (default cuda)")
    # Warp faces on the backend's device from the uploaded frame (torch-cuda) instead of on the CPU.
    device_align: bool = option(
        False, flag="--device-align", group=GPU,
        help="with --backend torch-cuda: upload each frame once and warp its faces on the GPU "
             "instead of copying aligned crops")
    threads: int | None = option(
        None, flag="--threads", group=MODEL, parse=positive_int, api=True,
        help="ONNX Runtime intra-op / torch threads (default: the library's choice)")
    # None: VIDEO_MAX_FACES for videos and cameras (latency grows with every face), no cap for
    # stills (MAX_FACES, the most a frame may ask for).
    max_faces: int | None = option(
        None, flag="--max-faces", parse=positive_int, group=FACES, api=True,
        help=f"most faces per frame: the largest are kept, and messages count the faces left out "
             f"(faces_cut) with a warning (default: {VIDEO_MAX_FACES} for videos and cameras, "
             f"none for photos and image folders, up to {MAX_FACES})")
    # MediaPipe's bundled detector is short-range: faces in wide/group shots are found only when the
    # frame is also scanned in square tiles (side = tiling * min(width, height)). Costs ~3x per frame,
    # so it is on by default only for still images.
    tiling: float | None = option(
        None, flag="--tiling", group=FACES, parse=float, api=True,
        help="also scan square tiles of this fraction of the short side for small faces (group "
             "shots; default 1.0 for images, off for video)")
    # Models with a geometry input: remove each tracked person's resting-face offset in videos
    # (norface_rt.faces.geometry.TrackBaseline). Stills never have one.
    baseline: bool = option(
        True, flag="--no-baseline", group=FACES, inverted=True, api=True,
        help="models with a geometry input: do not remove each tracked person's resting-face "
             "offset in videos (default: removed, bounded; see docs/training.md)")
    # Time constant (seconds) of per-track exponential smoothing of AU and emotion outputs
    # (norface_rt.smoothing); None or 0 = off.
    smooth: float | None = option(
        None, flag="--smooth", group=FACES, parse=nonneg_float, metavar="SECONDS", api=True,
        help="smooth each tracked face's AU and emotion outputs over time with this time "
             "constant (exponential; videos only; default: off)")
    # Image files: the most pixels one may declare (checked from its header before decoding;
    # the file-size cap follows from it, norface_rt.images.max_file_bytes).
    max_image_pixels: int = option(
        DEFAULT_MAX_PIXELS, flag="--max-image-pixels", group=INPUT, parse=positive_int, metavar="N", api=True,
        help="image files declaring more pixels than this (or larger than such an image can be) "
             "are refused as unreadable, before decoding")
    max_batch: int = option(
        16, flag="--max-batch", group=MODEL, parse=positive_int, api=True,
        help="faces per inference call across all streams")
    queue_size: int = option(
        8, flag="--queue-size", group=MODEL, parse=positive_int, api=True,
        help="frames each pipeline queue holds (bounds memory and latency)")
    # Optional face fields of frame messages (FaceResult always holds them): MediaPipe's 478
    # landmarks and its 52 blendshape scores; the CSV's columns follow them.
    landmarks: bool = option(
        False, flag="--landmarks", group=OUTPUTS,
        help="add MediaPipe's 478 landmarks to messages and CSV rows")
    blendshapes: bool = option(
        False, flag="--blendshapes", group=OUTPUTS,
        help="add MediaPipe's 52 blendshape scores to messages and CSV rows")
    stats_interval: float = option(
        0.0, flag="--stats-interval", parse=nonneg_float, group=OUTPUTS,
        help="publish a stats message every S seconds (0 = only at the end)")
    # Each sink's buffer (messages) and how long a lossless run waits for room in a full one
    # before that sink is marked stalled and loses messages instead of stalling the rest.
    sink_buffer: int = option(
        DEFAULT_CAPACITY, flag="--sink-buffer", parse=positive_int, metavar="N", group=OUTPUTS,
        help="messages buffered per output (JSONL, CSV, ZeroMQ, overlay, ...); what a stalled "
             "output cannot take is dropped and counted")
    sink_timeout: float = option(
        DEFAULT_STALL_TIMEOUT, flag="--sink-timeout", parse=positive_float, metavar="S",
        group=OUTPUTS,
        help="file runs: how long to wait for a full output before marking it stalled")
    realtime: bool = option(
        False, flag="--realtime", group=LIVE,
        help="pace file sources at their frame rate and treat them as live (drop-oldest)")
    loop: bool = option(False, flag="--loop", group=INPUT, help="loop file sources forever")
    # Files: skip undecodable frames and carry on (False: end the stream at the first one).
    skip_corrupt: bool = option(
        True, flag="--stop-on-decode-error", group=INPUT, inverted=True,
        help="end a file at its first undecodable frame (exit 1) instead of skipping it, "
             "counting it and carrying on (the default)")
    # RTSP: give up reconnecting after this many seconds without frames / failed attempts in a
    # row (None: retry forever, for unattended cameras that may reboot).
    reconnect_timeout: float | None = option(
        None, flag="--reconnect-timeout", group=LIVE, parse=nonneg_float, metavar="S",
        help="RTSP: give up after S seconds without frames (default: keep retrying)")
    reconnect_tries: int | None = option(
        None, flag="--reconnect-tries", group=LIVE, parse=positive_int, metavar="N",
        help="RTSP: give up after N failed attempts in a row (default: keep retrying)")
    # Constructor options for the sources that accept them (e.g. open_timeout for RTSP).
    source_kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        check_options(self)
        if not self.sources:
            raise ValueError("sources: expected at least one SOURCE (file, folder, rtsp:// URL or "
                             "/dev/videoN)")
        if self.stream_ids is not None and len(self.stream_ids) != len(self.sources):
            raise ValueError(f"--stream-id: expected one per source ({len(self.sources)}), "
                             f"got {len(self.stream_ids)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {list(BACKENDS)}, got {self.backend!r}")
        spec = backend_spec(self.backend)
        if self.max_faces is not None and not 1 <= self.max_faces <= MAX_FACES:
            raise ValueError(f"--max-faces must be in [1, {MAX_FACES}], got {self.max_faces}")
        if not 1 <= self.max_image_pixels <= MAX_PIXELS_LIMIT:
            raise ValueError(f"--max-image-pixels must be in [1, {MAX_PIXELS_LIMIT}], got "
                             f"{self.max_image_pixels}")
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
        if spec.remote != (self.triton_url is not None):
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
        if self.device_align and not spec.aligns_on_device:
            aligning = " or ".join(n for n, s in BACKENDS.items() if s.aligns_on_device)
            raise ValueError(f"--device-align needs --backend {aligning}, got --backend "
                             f"{self.backend}")

    @classmethod
    def api_options(cls) -> tuple[str, ...]:
        """The run options the Python API's ``Analyzer`` takes (besides the sources it is given
        call by call)."""
        return api_options(cls)


def zmq_endpoint(zmq: str | None, *, files: bool) -> str | None:
    """The endpoint to publish on: the one given (``none``: nowhere), else the default only when
    nothing else receives the results (a run with a file, window, NATS or PUSH output binds no
    PUB port, so a busy port cannot fail it and a listener on the default port never receives a
    job it did not ask for)."""
    if zmq is not None:
        return None if zmq.strip().lower() == "none" else zmq
    return None if files else DEFAULT_ENDPOINT


@dataclass
class SinkOptions:
    """Where results go (the ``norface-rt run`` output options).

    Without ``zmq``, results are published on :data:`~norface_rt.wire.names.DEFAULT_ENDPOINT`
    only when no other output receives them (:attr:`endpoint`): the rule is the options', so the
    CLI and the library agree."""

    zmq: str | None = option(
        None, flag="--zmq", metavar="ENDPOINT", group=TRANSPORT, check=check_zmq_endpoint,
        help=f"ZeroMQ PUB endpoint, or 'none' (default: {DEFAULT_ENDPOINT} when no other output "
             "is given, else none)")
    allow_remote: bool = option(
        False, flag="--allow-remote", group=TRANSPORT, api=True,
        help="allow binding a non-loopback address such as tcp://*:5556 (--zmq, --push) or "
             "0.0.0.0:8080 (--http)")
    sndhwm: int = option(
        DEFAULT_SNDHWM, flag="--sndhwm", parse=positive_int, group=TRANSPORT,
        help="ZeroMQ send high-water mark (messages kept per slow subscriber)")
    jsonl: str | os.PathLike[str] | None = option(
        None, flag="--jsonl", group=OUTPUTS, receives=True, check=check_output_file,
        help="write every message as JSON lines to this file")
    csv: str | os.PathLike[str] | None = option(
        None, flag="--csv", group=OUTPUTS, receives=True, check=check_output_file,
        help="write one row per face per frame to this file (columns: --csv-style)")
    # CSV layout (norface_rt.sinks.files.CSV_STYLES); its optional columns follow the messages'
    # (PipelineOptions.landmarks / blendshapes).
    csv_style: str = option(
        CSV_STYLES[0], flag="--csv-style", choices=CSV_STYLES, group=OUTPUTS,
        help="default: py-feat-like columns; openface: OpenFace 2.2's columns, order and "
             "decimals, with gaze, head position and the 68 iBUG points (docs/protocol.md "
             "compares them)")
    overlay: str | os.PathLike[str] | None = option(
        None, flag="--overlay", group=OUTPUTS, receives=True, check=check_seekable_file,
        help="write the frames annotated: a video (.mp4; one file per stream if several) or, for "
             "photos and image folders, a picture per input (.png, .jpg, .webp; named after "
             "each input unless the input is one image)")
    # The overlay's side panel (emotions, AU bars per face) widens the picture; without it the
    # output has the source's size, with boxes, tags and gaze only.
    overlay_panel: bool = option(
        True, flag="--no-panel", inverted=True, group=OUTPUTS,
        help="overlay: draw on the frame only, at the source's size, without the side panel of "
             "emotions and AU bars (default: with the panel, wider than the source)")
    show: bool = option(
        False, flag="--show", group=OUTPUTS, receives=True,
        help="show the annotated frames in a window (q or Esc ends the run; needs a display and "
             "an OpenCV with GUI)")
    # The live view (sinks/web): [HOST:]PORT to serve on (None: off; loopback unless
    # allow_remote), the token every request must carry (None: $NORFACE_RT_HTTP_TOKEN or none),
    # and the most images per second sent per stream. The Python API takes them too
    # (Analyzer(http=...) serves every video analysis).
    http: str | None = option(
        None, flag="--http", metavar="[HOST:]PORT", group=OUTPUTS, receives=True, api=True,
        help="serve a live view on http://HOST:PORT/ (the annotated video, each face's bars and "
             "timelines, results as Server-Sent Events, /health; docs/live_view.md); HOST "
             "defaults to 127.0.0.1, other addresses need --allow-remote; port 0 picks a free "
             "one (default: off)")
    http_token: str | None = option(
        None, flag="--http-token", metavar="TOKEN", group=OUTPUTS, api=True,
        help=f"with --http: every request must carry ?token=TOKEN (or Authorization: Bearer "
             f"TOKEN); default: ${HTTP_TOKEN_ENV}, else none")
    http_fps: float = option(
        HTTP_MAX_FPS, flag="--http-fps", parse=positive_float, group=OUTPUTS, api=True,
        help="with --http: most images per second sent per stream (the results stream carries "
             "every frame; default %(default)g)")
    # NATS JetStream results feed (sinks/nats_js.py): server URL, stream, subject prefix.
    nats: str | None = option(
        None, flag="--nats", metavar="URL", group=TRANSPORT, receives=True,
        help="also publish every message to NATS JetStream (nats://HOST:4222), acknowledged and "
             "replayable")
    nats_stream: str = option(
        NATS_STREAM, flag="--nats-stream", group=TRANSPORT,
        help="JetStream stream name (created if missing; default %(default)s)")
    nats_prefix: str = option(
        NATS_SUBJECT_PREFIX, flag="--nats-subject-prefix", group=TRANSPORT,
        help="subjects are PREFIX.<stream id> (default %(default)s)")
    # Prometheus endpoint (sinks/metrics.py): port (None: off) and address.
    metrics_port: int | None = option(
        None, flag="--metrics-port", parse=port, metavar="PORT", group=SERVING, check=check_port,
        help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics (default: off)")
    metrics_host: str = option(
        METRICS_HOST, flag="--metrics-host", group=SERVING,
        help="address of the metrics endpoint (default loopback)")
    # Lossless hand-off: a PUSH socket bound here (consumers connect PULL), its queue and what
    # happens when it is full (block: back-pressure for up to push_timeout s; drop).
    push: str | None = option(
        None, flag="--push", metavar="ENDPOINT", group=TRANSPORT, receives=True,
        check=check_endpoint,
        help="hand-off with back-pressure: bind a ZeroMQ PUSH socket here (consumers connect "
             "PULL, e.g. `norface-rt listen --pull ENDPOINT`); lossless across consumer crashes "
             "with --push-ack")
    push_ack: str | None = option(
        None, flag="--push-ack", metavar="ENDPOINT", group=TRANSPORT, check=check_endpoint,
        help="with --push: consumers confirm each message to a PULL socket bound here; what a "
             "consumer that dies held is sent again, what none confirmed by the end is counted "
             "as lost (`norface-rt listen --pull ENDPOINT --ack ACK_ENDPOINT`; default: "
             "unconfirmed)")
    push_hwm: int = option(
        DEFAULT_PUSH_HWM, flag="--push-hwm", parse=positive_int, metavar="N", group=TRANSPORT,
        help="messages queued for the PULL consumers")
    push_policy: BufferPolicy = option(
        BufferPolicy.BLOCK, flag="--push-policy", choices=tuple(p.value for p in BufferPolicy),
        parse=BufferPolicy, group=TRANSPORT,
        help="when the PUSH queue is full: block (back-pressure, up to --push-timeout per "
             "message) or drop (counted)")
    push_timeout: float = option(
        DEFAULT_PUSH_TIMEOUT, flag="--push-timeout", parse=positive_float, metavar="S",
        group=TRANSPORT, help="longest wait for a PULL consumer before dropping")
    # CURVE for --zmq and --push: this server's secret key file, and the folder of subscriber
    # public keys it accepts (None: encryption only).
    curve_secret: str | os.PathLike[str] | None = option(
        None, flag="--curve-secret", metavar="FILE", group=TRANSPORT,
        help="encrypt --zmq/--push with CURVE using this server secret key file (`norface-rt "
             "keys make`; default: no encryption)")
    curve_clients: str | os.PathLike[str] | None = option(
        None, flag="--curve-clients", metavar="DIR", group=TRANSPORT,
        help="with --curve-secret: accept only consumers whose public key (*.key) is in DIR "
             "(default: any consumer that knows the server's public key)")

    def validate(self) -> None:
        check_options(self)
        if self.curve_clients is not None and self.curve_secret is None:
            raise ValueError("--curve-clients needs --curve-secret (the publisher's own secret "
                             "key file, from `norface-rt keys make`)")
        if self.push_ack is not None and self.push is None:
            raise ValueError("--push-ack needs --push (it receives the confirmations of the PULL "
                             "consumers of that endpoint)")
        BufferPolicy.parse(self.push_policy, "--push-policy")
        if not 1 <= self.push_hwm <= 10_000_000:
            raise ValueError(f"--push-hwm must be in [1, 10000000], got {self.push_hwm}")
        if not self.push_timeout > 0:
            raise ValueError(f"--push-timeout must be > 0 seconds, got {self.push_timeout}")
        if self.http is not None:
            parse_http_address(self.http, allow_remote=self.allow_remote)
        if not 0 < self.http_fps <= 1000:
            raise ValueError(f"--http-fps must be in (0, 1000], got {self.http_fps}")

    @classmethod
    def api_options(cls) -> tuple[str, ...]:
        """The output options the Python API's ``Analyzer`` takes: the live view's (its other
        outputs are the caller's loop)."""
        return api_options(cls)

    def output_files(self, stream_ids: Sequence[str]) -> list[tuple[str, str | os.PathLike[str]]]:
        """Every file the outputs will write for these streams, with the flag that asks for it
        (per-stream files for overlay videos and the OpenFace CSV of several streams)."""
        files: list[tuple[str, str | os.PathLike[str]]] = []
        several = len(stream_ids) > 1
        for flag, path, per_stream in (
                ("--jsonl", self.jsonl, False), ("--csv", self.csv, self.csv_style != "default"),
                ("--overlay", self.overlay, True)):
            if not path:
                continue
            if per_stream and several:
                files.extend((f"{flag} (stream {sid!r})", stream_file(path, sid))
                             for sid in stream_ids)
            else:
                files.append((flag, path))
        return files

    @classmethod
    def receivers(cls) -> tuple[str, ...]:
        """The flags of the outputs that receive the results besides ZeroMQ."""
        return tuple(opt.flag for _, opt in options_of(cls) if opt.receives)

    @property
    def endpoint(self) -> str | None:
        """Where results are published on ZeroMQ (None: nowhere): ``zmq`` when given, else the
        default endpoint only when no other output receives them (:func:`zmq_endpoint`)."""
        others = any(getattr(self, f.name) for f, opt in options_of(type(self)) if opt.receives)
        return zmq_endpoint(self.zmq, files=others)

    @property
    def publishes(self) -> bool:
        return self.endpoint is not None

    @property
    def chosen(self) -> bool:
        """Whether any output was asked for (``--zmq`` included). A run without one still
        publishes on the default endpoint; the CLI also shows it on the terminal (or writes JSON
        lines to stdout when that is a pipe), so results never go only where nobody looks."""
        return self.zmq is not None or any(
            getattr(self, f.name) for f, opt in options_of(type(self)) if opt.receives)
