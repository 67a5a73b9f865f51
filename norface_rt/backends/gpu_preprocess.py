"""Face alignment on the inference device: one frame upload, every face warped there.

Why: the CPU path (:class:`norface_rt.faces.align.Aligner`) warps each face with OpenCV, turns the
uint8 crops into float32 NCHW (:func:`norface_rt.preprocess.preprocess`) and copies them to the
GPU. With many faces per frame that is K warps on the CPU plus K crop uploads. :class:`TorchAligner`
uploads the frame once (pinned staging buffer, asynchronous copy on CUDA) and samples all K crops
with one ``grid_sample`` call, directly in the network's normalised float layout, so nothing goes
back to the host before inference.

It reproduces ``Aligner``'s warp exactly in geometry: OpenCV's ``warpAffine`` with an image->crop
matrix ``M`` samples the source at ``M^-1 @ (x, y, 1)`` for every crop pixel centre ``(x, y)``
(pixel-centre convention, see align.py); here the same inverse is composed with the pixel <->
``[-1, 1]`` maps of ``affine_grid`` / ``grid_sample`` (``align_corners=False``: -1 and +1 are the
outer edges of the first and last pixel, so pixel ``i`` sits at ``(2i + 1) / n - 1``). Bilinear
interpolation with ``padding_mode="zeros"`` on the raw [0, 255] values equals OpenCV's
``BORDER_CONSTANT`` with value 0 (black), the border mode ``Aligner`` uses; the mean/std
normalisation is applied after sampling so the border stays black rather than mid-grey. Remaining
differences come from OpenCV's fixed-point interpolation (1/32-pixel weight steps) and its uint8
rounding: well under one grey level on average (measured in tests/backends/test_gpu_preprocess.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from norface_rt.config import ModelConfig
from norface_rt.images import check_rgb_image
from norface_rt.preprocess import input_affine


def _check_matrices(matrices: np.ndarray) -> np.ndarray:
    m = np.asarray(matrices)
    if m.ndim != 3 or m.shape[1:] != (2, 3):
        raise ValueError(f"matrices: expected (K, 2, 3) image->crop affine matrices, got shape "
                         f"{m.shape}")
    if not np.issubdtype(m.dtype, np.floating) and not np.issubdtype(m.dtype, np.integer):
        raise ValueError(f"matrices: expected a real-valued array, got dtype {m.dtype}")
    m = m.astype(np.float64)
    if not np.all(np.isfinite(m)):
        raise ValueError("matrices: expected finite values, got NaN or inf")
    det = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
    bad = np.flatnonzero(np.abs(det) < 1e-12)
    if bad.size:
        raise ValueError(f"matrices: expected invertible matrices, matrix {int(bad[0])} has "
                         f"determinant {det[bad[0]]:.3g}")
    return m


def sampling_theta(matrices: np.ndarray, frame_hw: tuple[int, int], size: int) -> np.ndarray:
    """``affine_grid`` thetas (K, 2, 3) float32 for image->crop matrices (K, 2, 3) in pixel units.

    theta maps the crop's normalised coordinates to the frame's: ``N_frame @ M^-1 @ N_crop^-1``,
    computed in float64 (frame coordinates reach thousands of pixels; float32 inversion would
    move the crop by visible fractions of a pixel) and rounded once at the end.
    """
    m = _check_matrices(matrices)
    h, w = int(frame_hw[0]), int(frame_hw[1])
    k = m.shape[0]
    full = np.zeros((k, 3, 3), np.float64)
    full[:, :2] = m
    full[:, 2, 2] = 1.0
    inv = np.linalg.inv(full)  # crop pixel -> frame pixel
    crop_from_norm = np.array([[size / 2.0, 0.0, (size - 1) / 2.0],
                               [0.0, size / 2.0, (size - 1) / 2.0],
                               [0.0, 0.0, 1.0]])
    frame_to_norm = np.array([[2.0 / w, 0.0, 1.0 / w - 1.0],
                              [0.0, 2.0 / h, 1.0 / h - 1.0],
                              [0.0, 0.0, 1.0]])
    theta = frame_to_norm @ inv @ crop_from_norm
    return np.ascontiguousarray(theta[:, :2], dtype=np.float32)


class TorchAligner:
    """Warps faces of one frame into normalised (K, C, S, S) float32 tensors on ``device``.

    Not thread-safe (it reuses one pinned staging buffer): use one per inference thread.
    """

    def __init__(self, size: int, device: str | torch.device = "cpu", *,
                 mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5)) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size: expected an int >= 1, got {size!r}")
        dev = torch.device(device)
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"device: expected 'cpu' or 'cuda[:N]', got {str(device)!r}")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device={str(device)!r} requested but torch {torch.__version__} has "
                               "no usable CUDA")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean/std: expected 3 values each (RGB), got {len(mean)}/{len(std)}")
        self.size = size
        self.device = dev
        # The serving preprocessing's own float32 scale and shift (norface_rt.preprocess).
        scale, shift = input_affine(mean, std)
        self._scale = torch.from_numpy(scale).reshape(1, 3, 1, 1).to(dev)
        self._shift = torch.from_numpy(shift).reshape(1, 3, 1, 1).to(dev)
        self._staging: torch.Tensor | None = None  # pinned host copy of the last frame (CUDA)
        self._staging_done: torch.cuda.Event | None = None  # its upload has been read

    @classmethod
    def from_config(cls, cfg: ModelConfig, device: str | torch.device = "cpu") -> TorchAligner:
        """The aligner matching a model set: its crop size and input normalisation."""
        if cfg.in_chans != 3:
            raise ValueError(f"cfg.in_chans: TorchAligner warps RGB frames, expected 3, got "
                             f"{cfg.in_chans}")
        return cls(cfg.img_size, device, mean=cfg.mean, std=cfg.std)

    def upload(self, frame: np.ndarray) -> torch.Tensor:
        """The frame as a (H, W, 3) uint8 tensor on the device, copied once.

        On CUDA the copy goes through a reused pinned buffer and is asynchronous; before the
        buffer is overwritten for the next frame we wait for the previous copy to finish reading
        it (normally long done), so a frame is never torn.
        """
        check_rgb_image(frame, "frame")
        if self.device.type == "cpu":
            return torch.from_numpy(np.ascontiguousarray(frame))
        if self._staging is None or tuple(self._staging.shape) != frame.shape:
            if self._staging_done is not None:
                self._staging_done.synchronize()
            self._staging = torch.empty(frame.shape, dtype=torch.uint8, pin_memory=True)
        elif self._staging_done is not None:
            self._staging_done.synchronize()
        np.copyto(self._staging.numpy(), frame)
        with torch.cuda.device(self.device):
            on_device = self._staging.to(self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        self._staging_done = done
        return on_device

    def warp(self, frame: np.ndarray, matrices: np.ndarray) -> torch.Tensor:
        """Frame (H, W, 3) uint8 RGB + image->crop matrices (K, 2, 3) -> (K, 3, S, S) float32
        ``(x/255 - mean)/std`` on the device (K = 0 gives an empty tensor, nothing uploaded)."""
        check_rgb_image(frame, "frame")
        theta_np = sampling_theta(matrices, frame.shape[:2], self.size)
        k, s = theta_np.shape[0], self.size
        if k == 0:
            return torch.zeros((0, 3, s, s), dtype=torch.float32, device=self.device)
        image = self.upload(frame)
        return self.warp_tensor(image, theta_np)

    def warp_tensor(self, image: torch.Tensor, theta: np.ndarray) -> torch.Tensor:
        """Warp an already uploaded (H, W, 3) uint8 frame with :func:`sampling_theta` thetas."""
        k, s = theta.shape[0], self.size
        theta_t = torch.from_numpy(theta).to(self.device, non_blocking=True)
        # (1, 3, H, W) float, then a stride-0 batch view: K faces read one copy of the frame.
        src = image.permute(2, 0, 1).unsqueeze(0).to(torch.float32).expand(k, -1, -1, -1)
        grid = F.affine_grid(theta_t, [k, 3, s, s], align_corners=False)
        crops = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False)
        return crops.mul_(self._scale).add_(self._shift)
