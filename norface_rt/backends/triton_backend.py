"""Triton backend: the model runs on an NVIDIA Triton Inference Server, the edge sends uint8 crops.

The server holds the repository ``norface-rt triton-repo`` writes (:mod:`norface_rt.serving`): an
ensemble ``<name>`` (uint8 crops [+ geometry] in, the model's outputs out) over three models,
``<name>_preprocess`` (crops -> network input, generated from the model's own config),
``<name>_normalizer`` and ``<name>_classifier``. The names, tensors and the config parameter
are defined here, once, and the repository writer takes them from here (the builder depends on
the runtime, never the reverse).

Why the crops travel as uint8: 37.6 KB per 112x112 face instead of 150 KB of float32, and no
lossy compression (JPEG moved AU probabilities by up to 0.08 in a check). The model's config
comes from the server (the ensemble's ``norface_config`` parameter), so an edge cannot label
outputs with another model's names.

One request per batch: the pipeline's inference thread already batches the faces of every stream
(up to ``--max-batch``) and calls :meth:`TritonBackend.infer` synchronously, so per-stream order
is kept and the pipeline's queues apply back-pressure (files) or drop the oldest frames (live
sources) while the server is slow or away. Batches larger than the server's ``max_batch_size``
are cut into consecutive chunks. The server's dynamic batcher merges requests of several edges.

A server that is down, restarting or overloaded: every request is retried with exponential
backoff for at most ``retry_s`` seconds (connection refused, server shutting down, model not
ready, queue full, per-request timeout), re-creating the connection and re-registering shared
memory (a restarted server has forgotten it); then :class:`TritonUnavailable` names the server,
the model and the last error, and the pipeline flags the batch's frames with it (never dropped in
silence). Errors a retry cannot fix (a shape the model refuses) are raised at once.

System shared memory carries the tensors when the server is on this machine (a loopback URL),
saving the gRPC payload copies; if the server cannot map it (another container, another /dev/shm)
the backend falls back to sending the bytes over gRPC.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np

from norface_rt.backends.base import Backend, ModelOutput, Outputs
from norface_rt.backends.batching import chunk_slices
from norface_rt.config import ModelConfig
from norface_rt.model_set import (
    GEOMETRY_NAME,
    INPUT_NAME,
    META_CONFIG,
    NORMALIZED_NAME,
    PROBABILITY_NAMES,
    classifier_spec,
    config_diff,
)
from norface_rt.preprocess import validate_crops, validate_geometry
from norface_rt.types import Stage, Timings
from norface_rt.wire.names import TRITON_MODEL, TRITON_URL

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- repository layout (one owner)
CROPS_NAME = "crops"  # the ensemble's and the preprocess model's uint8 (B, S, S, C) input
CONFIG_PARAMETER = META_CONFIG  # ensemble parameter holding the ModelConfig JSON
# How long one request may take, and how long one batch is retried while the server is away
# (seconds): the defaults of `run`'s --triton-timeout and --triton-retry.
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRY_S = 30.0
# Statuses that mean "not now" rather than "never": the server is away, restarting, overloaded
# or the request timed out.
RETRYABLE_STATUS = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED",
                    "StatusCode.RESOURCE_EXHAUSTED", "StatusCode.CANCELLED",
                    "StatusCode.ABORTED")
# Messages of a restarting server (models still loading) or of one that lost our shared memory.
RETRYABLE_TEXT = ("unknown model", "not ready", "no available version", "shared memory region",
                  "socket closed", "failed to connect", "connection refused", "shutting down",
                  "exceeds maximum queue size")

T = TypeVar("T")


@dataclass(frozen=True)
class TritonNames:
    """The model names of one model set in a repository (``name`` is the ensemble's)."""

    name: str = TRITON_MODEL

    @property
    def ensemble(self) -> str:
        return self.name

    @property
    def preprocess(self) -> str:
        return f"{self.name}_preprocess"

    @property
    def normalizer(self) -> str:
        return f"{self.name}_normalizer"

    @property
    def classifier(self) -> str:
        return f"{self.name}_classifier"


class TritonUnavailable(RuntimeError):
    """The Triton server could not answer within the retry budget; says which and why."""


def parse_triton_url(url: str) -> str:
    """``grpc://host:port`` (or ``host:port``) -> ``host:port`` for tritonclient's gRPC client."""
    text = str(url).strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "grpc", text
    if scheme != "grpc":
        raise ValueError(f"--triton-url: expected grpc://HOST:PORT (the gRPC endpoint, default port "
                         f"8001), got {url!r}")
    host, colon, port = rest.rstrip("/").rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--triton-url: expected grpc://HOST:PORT with a port in 1..65535, "
                         f"got {url!r}")
    return f"{host}:{int(port)}"


def is_loopback_host(hostport: str) -> bool:
    """True when ``host:port`` names this machine (127.0.0.0/8, ::1, localhost)."""
    host = hostport.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_retryable(exc: BaseException) -> bool:
    """True for the failures a later attempt can succeed after (see module docstring)."""
    status = str(getattr(exc, "status", lambda: "")() or "")
    text = str(exc).lower()
    return status in RETRYABLE_STATUS or any(t in text for t in RETRYABLE_TEXT)


def config_from_triton(model_config: Any, where: str) -> ModelConfig:
    """The ModelConfig the repository writer stored in the ensemble's parameters."""
    params = getattr(model_config, "parameters", {})
    if CONFIG_PARAMETER not in params:
        raise ValueError(f"{where}: the model has no {CONFIG_PARAMETER!r} parameter; was its "
                         "repository written by `norface-rt triton-repo`?")
    try:
        return ModelConfig.from_dict(json.loads(params[CONFIG_PARAMETER].string_value))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: invalid {CONFIG_PARAMETER!r} parameter: {e}") from e


class _Region:
    """One system shared-memory region registered with the server (input or output tensor)."""

    def __init__(self, shm: Any, name: str, byte_size: int) -> None:
        self.name = name
        self.key = f"/{name}"
        self.byte_size = byte_size
        self.handle = shm.create_shared_memory_region(name, self.key, byte_size, create_only=True)


class TritonBackend(Backend):
    """Runs a model set served by Triton (``--backend triton --triton-url grpc://HOST:PORT``).

    ``expected`` (the config of a local model set, when the user named one) must equal the
    server's; ``shared_memory`` is "auto" (on for a loopback server), "on" or "off";
    ``timeout_s`` bounds one request, ``retry_s`` the retries of one batch, ``connect_s`` the
    wait for the server and model to be ready when opening.
    """

    name = "triton"
    reconnects: int = 0

    def __init__(self, url: str = TRITON_URL, model_name: str = TRITON_MODEL, *,
                 expected: ModelConfig | None = None, shared_memory: str = "auto",
                 timeout_s: float = DEFAULT_TIMEOUT_S, retry_s: float = DEFAULT_RETRY_S,
                 connect_s: float = 10.0) -> None:
        from norface_rt.extras import require

        require("triton", "--backend triton")
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        if shared_memory not in ("auto", "on", "off"):
            raise ValueError(f"shared_memory: expected 'auto', 'on' or 'off', got {shared_memory!r}")
        for label, v in (("timeout_s", timeout_s), ("retry_s", retry_s), ("connect_s", connect_s)):
            if not v >= 0:
                raise ValueError(f"{label}: expected >= 0 seconds, got {v}")
        self._grpc = grpcclient
        self._error_type = InferenceServerException
        self.url = url
        self.hostport = parse_triton_url(url)
        self.names = TritonNames(model_name)
        self.timeout_s = float(timeout_s)
        self.retry_s = float(retry_s)
        self.retries = 0  # failed attempts that were retried
        self.reconnects = 0  # outages survived (a request succeeded after failed attempts)
        self._client: Any
        self._client = None
        self._regions: dict[str, _Region] = {}
        self._registered = False
        self._tag = f"norface-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._connect()
        ready = self._wait_ready(connect_s)
        mc = self._client.get_model_config(self.names.ensemble, as_json=False).config
        self.config: ModelConfig = config_from_triton(mc, f"{self.url} model {model_name!r}")
        if expected is not None and expected != self.config:
            raise ValueError(f"--model-dir: the local model set differs from the one {self.url} "
                             f"serves as {model_name!r} in fields {config_diff(expected, self.config)}")
        self.max_batch_size = int(mc.max_batch_size) or 1
        inputs = {i.name for i in mc.input}
        want = {CROPS_NAME} | ({GEOMETRY_NAME} if self.config.geometry_dim else set())
        if inputs != want:
            raise ValueError(f"{self.url} model {model_name!r}: expected inputs {sorted(want)} for "
                             f"model {self.config.model_id!r}, got {sorted(inputs)}")
        self.server_version = ready
        use_shm = shared_memory == "on" or (shared_memory == "auto" and is_loopback_host(self.hostport))
        self.shared_memory = False
        if use_shm:
            try:
                self._register()
                self.shared_memory = True
            except Exception as exc:  # another machine/container: the bytes go over gRPC
                if shared_memory == "on":
                    self.close()
                    raise TritonUnavailable(f"{self.url}: system shared memory was asked for but "
                                            f"the server cannot use it: {exc}") from exc
                log.warning("Triton at %s cannot map this process's shared memory (%s); sending "
                            "tensors over gRPC", self.url, exc)
                self._release_regions()

    # ------------------------------------------------------------------ connection
    def _connect(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                log.debug("closing the old Triton client failed", exc_info=True)
        # Short reconnect backoff: gRPC's default grows to two minutes, longer than a restart.
        self._client = self._grpc.InferenceServerClient(
            self.hostport, channel_args=[("grpc.initial_reconnect_backoff_ms", 100),
                                         ("grpc.min_reconnect_backoff_ms", 100),
                                         ("grpc.max_reconnect_backoff_ms", 1000)])

    def _wait_ready(self, connect_s: float) -> str:
        deadline = time.monotonic() + connect_s
        last = "no answer"
        while True:
            try:
                if self._client.is_server_live() and self._client.is_model_ready(self.names.ensemble):
                    return str(self._client.get_server_metadata().version)
                if self._client.is_server_live():
                    index = self._client.get_model_repository_index().models
                    known = sorted(m.name for m in index)
                    last = (f"model {self.names.ensemble!r} is not ready (the repository has "
                            f"{known})")
                    if self.names.ensemble not in known:
                        break
            except self._error_type as exc:
                last = f"{exc.status() or 'error'}: {exc.message()}"
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        self.close()
        raise TritonUnavailable(f"--triton-url {self.url}: Triton server not usable within "
                                f"{connect_s:g} s ({last})")

    # ------------------------------------------------------------------ shared memory
    def _tensor_sizes(self) -> dict[str, int]:
        cfg, b = self.config, self.max_batch_size
        s, c, a, e = cfg.img_size, cfg.in_chans, len(cfg.au_names), len(cfg.emotion_names)
        sizes = {CROPS_NAME: b * s * s * c, "au_prob": b * a * 4, "au_intensity": b * a * 4,
                 "emotion_prob": b * e * 4}
        if cfg.geometry_dim:
            sizes[GEOMETRY_NAME] = b * cfg.geometry_dim * 4
        return sizes

    def _register(self) -> None:
        import tritonclient.utils.shared_memory as shm

        if not self._regions:
            for tensor, size in self._tensor_sizes().items():
                self._regions[tensor] = _Region(shm, f"{self._tag}-{tensor}", size)
        for r in self._regions.values():
            try:  # a restarted server has forgotten us; one that did not still knows the name
                self._client.unregister_system_shared_memory(r.name)
            except self._error_type:
                pass
            self._client.register_system_shared_memory(r.name, r.key, r.byte_size)
        self._registered = True

    def _release_regions(self) -> None:
        import tritonclient.utils.shared_memory as shm

        for r in self._regions.values():
            try:
                shm.destroy_shared_memory_region(r.handle)
            except Exception:
                log.debug("destroying shared memory %s failed", r.name, exc_info=True)
        self._regions.clear()
        self._registered = False

    # ------------------------------------------------------------------ retries
    def _with_retries(self, what: str, call: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.retry_s
        attempts = 0
        delay = 0.1
        while True:
            try:
                result = call()
            except self._error_type as exc:
                attempts += 1
                if not is_retryable(exc):
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TritonUnavailable(
                        f"Triton at {self.url} ({what} on {self.names.ensemble!r}) failed "
                        f"{attempts} time(s) over {self.retry_s:g} s; last error: "
                        f"{exc.status() or 'error'}: {exc.message()}") from exc
                if attempts == 1:
                    log.warning("Triton at %s: %s failed (%s); retrying for up to %.0f s", self.url,
                                what, exc.message(), self.retry_s)
                self.retries += 1
                time.sleep(min(delay, left))
                delay = min(delay * 2, 2.0)
                try:
                    self._connect()
                    if self.shared_memory:
                        self._register()
                except self._error_type:
                    pass  # still away: the next attempt says so
                continue
            if attempts:
                self.reconnects += 1
                log.warning("Triton at %s answers again after %d failed attempt(s)", self.url,
                            attempts)
            return result

    # ------------------------------------------------------------------ inference
    def infer(self, crops: np.ndarray, *, geometry: np.ndarray | None = None,
              want_normalized: bool = False) -> ModelOutput:
        """Send uint8 crops (the server preprocesses them); chunks of the server's max batch.

        With ``want_normalized`` the normalized faces come from the normalizer model itself (the
        ensemble does not return them; see :func:`norface_rt.serving.repository.ensemble_io`),
        fed with crops preprocessed here."""
        if want_normalized:
            return super().infer(crops, geometry=geometry, want_normalized=True)
        cfg = self.config
        validate_crops(crops, cfg)
        n = crops.shape[0]
        geo = validate_geometry(geometry, cfg, n)
        if n == 0:
            return ModelOutput.empty(cfg, want_normalized)
        t0 = time.perf_counter()
        parts = []
        for sl in chunk_slices(n, self.max_batch_size):
            chunk, g = crops[sl], None if geo is None else geo[sl]
            parts.append(self._with_retries("inference", partial(self._infer_chunk, chunk, g)))
        outs = {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
        return ModelOutput(normalized=None, au_prob=outs["au_prob"],
                           au_intensity=outs["au_intensity"], emotion_prob=outs["emotion_prob"],
                           timings={Stage.INFER: time.perf_counter() - t0})

    def _infer_chunk(self, crops: np.ndarray, geometry: np.ndarray | None
                     ) -> dict[str, np.ndarray]:
        g = self._grpc
        n = crops.shape[0]
        feeds: list[tuple[str, np.ndarray, str]] = [(CROPS_NAME, np.ascontiguousarray(crops), "UINT8")]
        if geometry is not None:
            feeds.append((GEOMETRY_NAME, geometry, "FP32"))
        names = list(PROBABILITY_NAMES)
        inputs, outputs = [], []
        for tname, arr, dtype in feeds:
            inp = g.InferInput(tname, list(arr.shape), dtype)
            if self.shared_memory:
                import tritonclient.utils.shared_memory as shm

                shm.set_shared_memory_region(self._regions[tname].handle, [arr])
                inp.set_shared_memory(self._regions[tname].name, arr.nbytes)
            else:
                inp.set_data_from_numpy(arr)
            inputs.append(inp)
        for oname in names:
            out = g.InferRequestedOutput(oname)
            if self.shared_memory:
                out.set_shared_memory(self._regions[oname].name, self._regions[oname].byte_size)
            outputs.append(out)
        result = self._client.infer(self.names.ensemble, inputs, outputs=outputs,
                                    client_timeout=self.timeout_s or None)
        got: dict[str, np.ndarray] = {}
        for oname in names:
            if self.shared_memory:
                import tritonclient.utils.shared_memory as shm

                meta = result.get_output(oname)
                shape = [int(d) for d in meta.shape]
                arr = shm.get_contents_as_numpy(self._regions[oname].handle, np.float32, shape)
                got[oname] = np.array(arr, dtype=np.float32, copy=True)  # the region is reused
            else:
                got[oname] = np.asarray(result.as_numpy(oname), dtype=np.float32)
            if got[oname].shape[0] != n:
                raise TritonUnavailable(f"Triton at {self.url}: {oname} has {got[oname].shape[0]} "
                                        f"rows for {n} faces")
        return got

    def _forward(self, x: np.ndarray, geometry: np.ndarray | None = None) -> Outputs:
        return self._forward_timed(x, geometry)[0]

    def _forward_timed(self, x: np.ndarray, geometry: np.ndarray | None = None
                       ) -> tuple[Outputs, Timings]:
        """Already preprocessed float input: the normalizer, then the classifier, on the server
        (each chunked to the server's max batch); times them apart like the ONNX Runtime backend."""
        g = self._grpc
        timings: Timings = {Stage.NORMALIZE: 0.0, Stage.CLASSIFY: 0.0}
        norm_parts, prob_parts = [], []
        for sl in chunk_slices(x.shape[0], self.max_batch_size):
            xs = np.ascontiguousarray(x[sl], dtype=np.float32)

            def normalize(xs: np.ndarray = xs) -> np.ndarray:
                inp = g.InferInput(INPUT_NAME, list(xs.shape), "FP32")
                inp.set_data_from_numpy(xs)
                r = self._client.infer(self.names.normalizer, [inp],
                                       client_timeout=self.timeout_s or None)
                return np.asarray(r.as_numpy(NORMALIZED_NAME))

            t0 = time.perf_counter()
            normalized = self._with_retries("normalizer", normalize)
            t1 = time.perf_counter()
            feeds = {NORMALIZED_NAME: normalized, INPUT_NAME: xs}
            if geometry is not None:
                feeds[GEOMETRY_NAME] = np.ascontiguousarray(geometry[sl], dtype=np.float32)

            def classify(feeds: dict[str, np.ndarray] = feeds) -> list[np.ndarray]:
                ins = []
                for k in classifier_spec(self.config).inputs:
                    inp = g.InferInput(k, list(feeds[k].shape), "FP32")
                    inp.set_data_from_numpy(feeds[k])
                    ins.append(inp)
                r = self._client.infer(self.names.classifier, ins,
                                       client_timeout=self.timeout_s or None)
                return [np.asarray(r.as_numpy(k)) for k in PROBABILITY_NAMES]

            probs = self._with_retries("classifier", classify)
            t2 = time.perf_counter()
            timings[Stage.NORMALIZE] += t1 - t0
            timings[Stage.CLASSIFY] += t2 - t1
            norm_parts.append(normalized)
            prob_parts.append(probs)
        au_prob, au_int, emo = (np.concatenate([p[i] for p in prob_parts]) for i in range(3))
        return (np.concatenate(norm_parts), au_prob, au_int, emo), timings

    # ------------------------------------------------------------------ the rest
    def statistics(self, model: str | None = None) -> dict[str, Any]:
        """Triton's statistics extension for ``model`` (default: every model) as a dict."""
        from google.protobuf.json_format import MessageToDict

        stats = self._client.get_inference_statistics(model or "", as_json=False)
        return dict(MessageToDict(stats, preserving_proto_field_name=True))

    def describe(self) -> dict[str, Any]:
        return {"device": "triton", "url": self.url, "model": self.names.ensemble,
                "server_version": self.server_version, "shared_memory": self.shared_memory,
                "max_batch_size": self.max_batch_size}

    def close(self) -> None:
        if self._client is not None and self._registered:
            for r in self._regions.values():
                try:
                    self._client.unregister_system_shared_memory(r.name)
                except Exception:  # the server may be gone: nothing to unregister then
                    log.debug("unregistering %s failed", r.name, exc_info=True)
        if self._regions:
            self._release_regions()
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                log.debug("closing the Triton client failed", exc_info=True)
            self._client = None
