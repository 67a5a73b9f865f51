"""The sink interface: everything that consumes published messages implements it.

Sinks are called from the pipeline's single publish thread, so they need not be thread-safe; they
must not block for long either, because a slow sink delays every other sink and, through the
bounded publish queue, the whole pipeline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, ClassVar

import numpy as np

from norface_rt.config import ModelConfig
from norface_rt.types import FrameResult


class Sink(ABC):
    """Receives protocol message dicts (``frame``, ``eos``, ``stats``): the one contract of the
    pipeline's last stage.

    Capabilities are declared, not guessed: a sink that draws pixels sets ``needs_image = True``;
    the pipeline then keeps the frame image and calls ``write(msg, image)`` for ``frame`` messages
    only (RGB uint8, HxWx3), and ``write(msg)`` for the rest. A sink that lets a person end the run
    (a window) sets ``quit_requested`` when asked to.
    """

    needs_image: ClassVar[bool] = False
    quit_requested: bool = False

    @abstractmethod
    def write(self, msg: dict[str, Any], image: np.ndarray | None = None) -> None:
        """Consume one message; ``image`` is only given to sinks with ``needs_image``."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release resources; calling it twice is harmless."""

    def bind_model(self, config: ModelConfig) -> None:  # noqa: B027  (optional hook)
        """Called once by the pipeline, before any message, with the model's configuration:
        a sink whose layout depends on the label names (a CSV header) learns them here, so it
        never has to guess from the first face. Default: nothing."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class ResultSink(Sink):
    """A sink that takes the typed :class:`~norface_rt.types.FrameResult` of each frame instead
    of its message dict (the Python API hands results to its caller as they are): the pipeline
    calls :meth:`write_result` for frames and :meth:`write` for ``eos`` and ``stats`` messages."""

    @abstractmethod
    def write_result(self, result: FrameResult) -> None:
        """Consume one frame's result (its ``seq`` and ``emit_time`` are set)."""
