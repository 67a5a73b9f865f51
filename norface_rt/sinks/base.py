"""The sink interface: everything that consumes published messages implements it.

Sinks receive the typed wire messages of :mod:`norface_rt.wire.messages` (``FrameMessage``,
``EosMessage``, ``StatsMessage``) and tell them apart with ``isinstance``; a message is also a
read-only mapping of its wire dict, so a sink written against message dicts keeps working. The
package's sinks also accept a message dict in ``write`` (converted and validated at that edge by
:func:`~norface_rt.wire.messages.as_message`).

The pipeline runs each sink on a thread of its own behind a bounded buffer
(:class:`~norface_rt.sinks.worker.SinkWorker`): every call of one sink comes from that one
thread, so sinks need not be thread-safe, and a sink that blocks delays only itself; what its
buffer cannot hold is dropped and counted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from types import TracebackType
from typing import Any, ClassVar

import numpy as np

from norface_rt.config import ModelConfig
from norface_rt.types import FrameResult
from norface_rt.wire.messages import Message


class BufferPolicy(StrEnum):
    """What happens to a message that finds a full buffer (a sink's, or a PUSH socket's queue)."""

    BLOCK = "block"  # wait for room (back-pressure), for as long as the owner allows
    DROP = "drop"  # never wait: the message is dropped and counted

    @classmethod
    def parse(cls, value: str, name: str) -> BufferPolicy:
        """``value`` as a policy; anything else is a ValueError naming ``name`` and the choices."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"{name}: expected one of {[p.value for p in cls]}, got "
                             f"{value!r}") from None


# The pipeline's live figures a sink may show (Sink.watch): queue depths, reconnections of the
# parts that talk to servers, and what every stream and output is doing.
Probe = Callable[[], Mapping[str, Any]]


class MessageDropped(Exception):  # noqa: N818  (a signal, not an error)
    """Raised by ``write`` when the sink gave up on the message by its own policy (a full peer
    queue): the pipeline counts it as dropped, not as a failure."""


class Sink(ABC):
    """Receives the wire messages (``frame``, ``eos``, ``stats``): the one contract of the
    pipeline's last stage.

    Capabilities are declared, not guessed: a sink that draws pixels sets ``needs_image = True``;
    the pipeline then keeps the frame image and calls ``write(msg, image)`` for ``frame`` messages
    only (RGB uint8, HxWx3); with ``every_message`` too it also gets ``write(msg)`` for the rest
    (end-of-stream, stats, and frames without pixels), otherwise only the frames with pixels. A
    sink that lets a person end the run (a window) sets ``quit_requested`` when asked to. A sink
    with ``main_thread`` has work that must run on the process's main thread (a GUI's events):
    its owner calls :meth:`pump` there while the pipeline runs, and once more after it stopped.
    A sink that shows the pipeline's live figures implements :meth:`watch`; one that talks to a
    server counts its ``reconnects``; one whose receivers acknowledge counts what none confirmed
    (:attr:`unconfirmed`).
    """

    needs_image: ClassVar[bool] = False
    every_message: ClassVar[bool] = False
    main_thread: ClassVar[bool] = False
    # The fewest messages its buffer holds, whatever the run's --sink-buffer (a sink that must
    # never make the publish thread wait, such as the live view).
    min_buffer: ClassVar[int] = 1
    quit_requested: bool = False
    # Short name in stats and summaries ("zmq", "jsonl", ...); None: the class name.
    name: str | None = None
    # What the pipeline does when this sink's buffer is full: None its default (wait a little for
    # lossless runs, drop for live ones), "block" wait as long as it takes (back-pressure), "drop"
    # never wait.
    buffer_policy: BufferPolicy | None = None
    # Longest one ``write`` may block by design (a PUSH waiting for its consumer), seconds; the
    # pipeline waits that long for progress at shutdown before it gives the sink up.
    write_timeout: float | None = None
    # Re-connections to its server so far (a network sink); None: it has no server.
    reconnects: int | None = None
    # Seconds its thread lets messages gather before taking them in one go (write_many). A sink
    # whose readers are people (the live view) trades that much latency for one wake-up of its
    # thread per interval instead of one per message: on a machine whose cores the pipeline
    # keeps busy, each wake-up takes the interpreter lock and a core from the pipeline's
    # threads. 0: one message at a time, as soon as it comes.
    gather_s: float = 0.0

    @abstractmethod
    def write(self, msg: Message, image: np.ndarray | None = None) -> None:
        """Consume one message; ``image`` is only given to sinks with ``needs_image``."""

    def write_many(self, items: Sequence[tuple[Message, np.ndarray | None]]) -> None:
        """Consume the messages gathered in one go (sinks with ``gather_s``), in order: a sink
        that only needs the newest of them for some work (an image) does it once here.
        Default: :meth:`write` each."""
        for msg, image in items:
            self.write(msg, image)

    @abstractmethod
    def close(self) -> None:
        """Flush and release resources; calling it twice is harmless."""

    @property
    def unconfirmed(self) -> int:
        """Messages this sink handed on that no receiver confirmed by the time it closed (a
        sink whose receivers acknowledge: PUSH with ``--push-ack``, NATS); the pipeline counts
        them among the sink's losses. Default: none."""
        return 0

    def bind_model(self, config: ModelConfig) -> None:  # noqa: B027  (optional hook)
        """Called once by the pipeline, before any message, with the model's configuration:
        a sink whose layout depends on the label names (a CSV header) learns them here, so it
        never has to guess from the first face. Default: nothing."""

    def tick(self) -> None:  # noqa: B027  (an optional hook: most sinks have nothing to do)
        """Called on the sink's thread about every 0.1 s while no message is waiting (a
        publisher reads subscription notifications here)."""

    def stats(self) -> dict[str, Any]:
        """Sink-specific counters for its entry in the stats message (numbers or booleans)."""
        return {}

    def destination(self) -> str | None:
        """Where this output's results went, for the end-of-run line (files written, an
        endpoint); None: nothing worth naming."""
        return None

    def pump(self, timeout: float) -> None:  # noqa: B027  (an optional hook)
        """``main_thread`` sinks: do the main thread's share of the work, waiting at most
        ``timeout`` seconds for some; after :meth:`close`, release what the main thread owns."""

    def interrupt(self) -> None:  # noqa: B027  (an optional hook)
        """Called from another thread at shutdown when ``write`` may be blocked waiting for a
        peer: make it give up soon. Sinks whose writes cannot block need nothing here."""

    def watch(self, *, queue_depths: Probe, reconnects: Probe,  # noqa: B027  (optional hook)
              status: Probe) -> None:
        """Called once by the pipeline before it starts, with its live figures (read at any
        time, from any thread: the metrics endpoint's scrapes, the live view's server): a sink
        that shows them keeps the callables. Default: nothing."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class ResultSink(Sink):
    """A sink that takes the :class:`~norface_rt.types.FrameResult` of each frame instead of
    its message (the Python API hands results to its caller as they are): the pipeline calls
    :meth:`write_result` for frames and :meth:`write` for ``eos`` and ``stats`` messages."""

    @abstractmethod
    def write_result(self, result: FrameResult) -> None:
        """Consume one frame's result (its ``seq`` and ``emit_time`` are set)."""
