"""The Python API's sink: typed results handed to the caller through one bounded queue.

:class:`norface_rt.Analyzer` runs the same :class:`~norface_rt.pipeline.Pipeline` as the CLI and
reads its frames from here, one :class:`~norface_rt.types.FrameResult` at a time. The queue is
lossless and bounded: when the caller reads slowly (or pauses), the publish thread blocks on it
and the pipeline's own bounded queues carry the back-pressure to the decoder, so a long video
never accumulates in memory. :meth:`ResultQueue.cancel` releases a blocked publish thread at once
when the caller stops early.

Like every sink it runs on its own thread behind a buffer
(:class:`~norface_rt.sinks.worker.SinkWorker`), but it asks for ``buffer_policy = "block"``:
the caller's loop may pause for as long as it likes, and nothing is ever dropped for it (no
stall timeout applies), whether the source is a file or a live stream (a live source then sheds
frames at its own drop-oldest queue, counted in ``dropped``). The API keeps that buffer at one
message, so the output side holds at most ``maxsize`` + 2 results (the pipeline's own bounded
queues hold the rest in flight).
"""

from __future__ import annotations

import numpy as np

from norface_rt.sinks.base import BufferPolicy, ResultSink
from norface_rt.sources.frame_queue import FrameQueue
from norface_rt.types import FrameResult
from norface_rt.wire.messages import EosMessage, Message, as_message

Item = FrameResult | EosMessage  # a frame's result, or its stream's end


class ResultQueue(ResultSink):
    """Frames (and each stream's ``eos`` message) in publish order, at most ``maxsize`` waiting."""

    name = "results"
    # The caller reads at its own pace: back-pressure, never a drop (see the module docstring).
    buffer_policy = BufferPolicy.BLOCK

    def __init__(self, maxsize: int = 16) -> None:
        self._q: FrameQueue[Item] = FrameQueue(maxsize, "lossless")

    def write_result(self, result: FrameResult) -> None:
        self._q.put(result)  # blocks while the caller has not read; False once cancelled

    def write(self, msg: Message, image: np.ndarray | None = None) -> None:
        msg = as_message(msg)
        if isinstance(msg, EosMessage):
            self._q.put_final(msg)  # never blocks: an end must reach the caller

    def get(self, timeout: float) -> Item | None:
        """The next item, or None when nothing arrived within ``timeout`` seconds."""
        return self._q.get(timeout)

    def cancel(self) -> None:
        """Refuse further results and wake a publish thread blocked on a full queue."""
        self._q.close()
        self._q.drain()

    def close(self) -> None:
        self._q.close()


class ImageResultQueue(ResultQueue):
    """A :class:`ResultQueue` whose results keep their frame's pixels (``FrameResult.image``)."""

    needs_image = True
