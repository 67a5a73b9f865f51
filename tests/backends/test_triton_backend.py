"""--backend triton against a real Triton server (the one bundled in nvidia-pytriton, started on
loopback by the session fixture) serving a generated python-platform repository: the same numbers
as the in-process ONNX Runtime backend, on real faces."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from norface_rt.backends.onnx_backend import OrtBackend
from norface_rt.backends.triton_backend import (
    TritonBackend,
    TritonUnavailable,
    is_loopback_host,
    is_retryable,
    parse_triton_url,
)
from norface_rt.paths import packaged_model_dir
from norface_rt.preprocess import preprocess
from norface_rt.serving.server import free_port

TOL = 1e-5


@pytest.fixture(scope="module")
def real_faces(media_dir: Path, shared_dir: Path, landmarker_path: Path
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """Aligned crops of every face MediaPipe finds in the shared photos (group shot included), and
    their geometry input when the packaged model takes one (None otherwise)."""
    from norface_rt.model_set import load_config
    from norface_rt.pipeline.factory import build_face_stage
    from norface_rt.types import FramePacket

    cfg = load_config(packaged_model_dir())
    stage = build_face_stage(landmarker_path, cfg, video=False, max_faces=8)
    paths = [media_dir / n for n in ("multi_face.jpg", "single_face.jpg", "grace_hopper_512x512.jpg")]
    paths += sorted((shared_dir / "faces" / "zoom_cc0").glob("*.jpg"))
    crops, geometry = [], []
    try:
        for i, p in enumerate(paths):
            bgr = cv2.imread(str(p))
            if bgr is None:
                continue
            rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            ff = stage.process(FramePacket(stream_id="img", frame_index=i, image=rgb, pts=None,
                                           capture_time=0.0))
            crops.append(ff.crops)
            geometry.append(ff.geometry)
    finally:
        stage.close()
    out = np.concatenate(crops)
    assert len(out) >= 8, f"expected real faces in the shared photos, found {len(out)}"
    geo = np.concatenate(geometry) if cfg.geometry_dim else None
    return out, geo


@pytest.fixture(scope="module")
def real_crops(real_faces: tuple[np.ndarray, np.ndarray | None]) -> np.ndarray:
    return real_faces[0]


@pytest.fixture(scope="module")
def real_geometry(real_faces: tuple[np.ndarray, np.ndarray | None]) -> np.ndarray | None:
    return real_faces[1]


def _first(geometry: np.ndarray | None, n: int) -> np.ndarray | None:
    return None if geometry is None else geometry[:n]


@pytest.fixture(scope="module")
def ort() -> OrtBackend:
    return OrtBackend(packaged_model_dir())


def _max_err(a, b) -> float:  # noqa: ANN001
    return max(float(np.abs(getattr(a, k) - getattr(b, k)).max())
               for k in ("au_prob", "au_intensity", "emotion_prob"))


@pytest.mark.parametrize("shared_memory", ["on", "off"])
def test_results_equal_the_in_process_backend_on_real_faces(triton_server, real_crops, ort,
                                                            real_geometry,
                                                            shared_memory: str) -> None:
    with TritonBackend(triton_server.grpc_url, shared_memory=shared_memory) as be:
        assert be.shared_memory is (shared_memory == "on")
        assert be.config == ort.config  # the config came from the server
        # 40+ faces: more than the repository's max batch (32), so chunking is exercised too
        reps = 1 + 40 // len(real_crops)
        crops = np.concatenate([real_crops] * reps)
        geo = None if real_geometry is None else np.concatenate([real_geometry] * reps)
        got, want = be.infer(crops, geometry=geo), ort.infer(crops, geometry=geo)
        assert len(got) == len(crops)
        assert _max_err(got, want) <= TOL
        assert not np.allclose(got.au_prob[0], got.au_prob[1])  # different faces, different rows


def test_normalized_faces_come_from_the_normalizer_model(triton_server, real_crops, ort,
                                                          real_geometry) -> None:
    geo = _first(real_geometry, 3)
    with TritonBackend(triton_server.grpc_url) as be:
        got = be.infer(real_crops[:3], geometry=geo, want_normalized=True)
        want = ort.infer(real_crops[:3], geometry=geo, want_normalized=True)
        assert got.normalized is not None and want.normalized is not None
        assert np.abs(got.normalized.astype(int) - want.normalized).max() <= 1
        assert _max_err(got, want) <= TOL
        # the float path times the two halves apart, like the in-process backend
        _, timings = be._forward_timed(preprocess(real_crops[:2], be.config),
                                       _first(real_geometry, 2))
        assert set(map(str, timings)) == {"normalize", "classify"}


def test_a_model_with_a_geometry_input(triton_server, geometry_model_dir, real_crops) -> None:
    local = OrtBackend(geometry_model_dir)
    geometry = np.random.default_rng(0).uniform(0, 1, (len(real_crops), local.config.geometry_dim))
    with TritonBackend(triton_server.grpc_url, model_name="geo") as be:
        assert be.config.geometry_dim == 5
        got = be.infer(real_crops, geometry=geometry)
        assert _max_err(got, local.infer(real_crops, geometry=geometry)) <= TOL
        # geometry changes the output: it really travelled to the classifier
        other = be.infer(real_crops, geometry=geometry + 0.5)
        assert _max_err(got, other) > 1e-4
        with pytest.raises(ValueError, match="geometry"):
            be.infer(real_crops)


def test_a_local_model_set_must_match_the_served_one(triton_server, tiny_model_dir) -> None:
    from norface_rt.model_set import load_config

    with pytest.raises(ValueError, match="differs from the one .* serves as 'norface' in fields"):
        TritonBackend(triton_server.grpc_url, expected=load_config(tiny_model_dir))
    with pytest.raises(TritonUnavailable, match="'nope' is not ready"):
        TritonBackend(triton_server.grpc_url, model_name="nope", connect_s=0.5)


def test_a_server_that_is_not_there_is_a_clear_error() -> None:
    url = f"grpc://127.0.0.1:{free_port()}"
    with pytest.raises(TritonUnavailable, match=f"--triton-url {url}: Triton server not usable "
                                                "within 0.5 s .*UNAVAILABLE"):
        TritonBackend(url, connect_s=0.5)


def test_urls_and_error_kinds() -> None:
    from tritonclient.utils import InferenceServerException

    assert parse_triton_url("grpc://127.0.0.1:8001") == "127.0.0.1:8001"
    assert parse_triton_url("triton.local:9001") == "triton.local:9001"
    for bad in ("http://127.0.0.1:8000", "grpc://host", "grpc://host:99999", "grpc://:80"):
        with pytest.raises(ValueError, match="--triton-url: expected grpc://HOST:PORT"):
            parse_triton_url(bad)
    assert is_loopback_host("127.0.0.1:8001") and is_loopback_host("localhost:1")
    assert is_loopback_host("[::1]:8001") and not is_loopback_host("10.0.0.5:8001")
    assert is_retryable(InferenceServerException("gone", status="StatusCode.UNAVAILABLE"))
    assert is_retryable(InferenceServerException("Request for unknown model: 'norface' has no "
                                                 "available versions", status="StatusCode.NOT_FOUND"))
    assert not is_retryable(InferenceServerException("unexpected shape for input 'crops'",
                                                     status="StatusCode.INVALID_ARGUMENT"))


def test_an_overloaded_server_is_retried_and_nothing_is_lost(start_triton, real_crops, ort,
                                                            real_geometry, tmp_path) -> None:
    """A server that queues at most one request per model refuses the rest (UNAVAILABLE): edges
    retry with backoff and every batch still gets its results; with no retry budget the refusal
    is a clear error naming the server and the cause."""
    import threading

    server = start_triton(tmp_path, {"norface": packaged_model_dir()}, max_queue_size=1,
                          queue_delay_us=20000, max_batch=4, preferred_batch=(4,))
    try:
        geo = _first(real_geometry, 4)
        want = ort.infer(real_crops[:4], geometry=geo)
        backends = [TritonBackend(server.grpc_url, shared_memory="off", retry_s=60) for _ in range(6)]
        errors: list[BaseException] = []
        results = []

        def hammer(be: TritonBackend) -> None:
            try:
                for _ in range(4):
                    results.append(be.infer(real_crops[:4], geometry=geo))
            except BaseException as e:  # noqa: BLE001  (reported below)
                errors.append(e)

        threads = [threading.Thread(target=hammer, args=(be,)) for be in backends]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert len(results) == 24 and all(_max_err(r, want) <= TOL for r in results)
        assert sum(be.retries for be in backends) > 0, "the queue limit never refused a request"
        assert sum(be.reconnects for be in backends) > 0
        impatient = [TritonBackend(server.grpc_url, shared_memory="off", retry_s=0) for _ in range(6)]
        refused: list[BaseException] = []

        def once(be: TritonBackend) -> None:
            try:
                be.infer(real_crops[:4], geometry=geo)
            except TritonUnavailable as e:
                refused.append(e)

        threads = [threading.Thread(target=once, args=(be,)) for be in impatient]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert refused and "maximum queue size" in str(refused[0])
        assert f"Triton at {server.grpc_url} (inference on 'norface') failed" in str(refused[0])
        for be in backends + impatient:
            be.close()
    finally:
        server.stop()
