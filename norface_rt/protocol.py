"""The wire protocol as message dicts: the stable import path of consumers and tools that read
and write dicts (``from norface_rt import protocol``). Everything here is owned by
:mod:`norface_rt.wire` (messages, schema, codec, names); the two builders below return the dicts
of its typed messages.

Every ZeroMQ message is two frames: ``[topic, payload]``; the topic is the stream id (UTF-8) for
``frame``/``eos`` and :data:`STATS_TOPIC` for ``stats``; the payload is one msgpack map. See
``docs/protocol.md`` and ``docs/schema/*.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from norface_rt.types import EndOfStream
from norface_rt.wire import schema
from norface_rt.wire.codec import (
    MAX_PAYLOAD_BYTES,
    decode,
    decode_multipart,
    encode,
    encode_multipart,
    topic_for,
    wire_dict,
)
from norface_rt.wire.messages import StatsMessage, WireMessage
from norface_rt.wire.names import DEFAULT_ENDPOINT, STATS_TOPIC
from norface_rt.wire.schema import MESSAGE_TYPES, ProtocolError


def validate(msg: Any) -> dict[str, Any]:
    """Check a message (a dict, or a typed message's dict) against the protocol; return the dict
    or raise :class:`ProtocolError` (see :func:`norface_rt.wire.schema.validate`)."""
    return schema.validate(wire_dict(msg) if isinstance(msg, WireMessage) else msg)


def eos_message(eos: EndOfStream, seq: int, *, emit_time: float | None = None,
                sink_losses: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The ``eos`` message dict for a stream (validated); ``seq`` continues the stream's frame
    sequence. ``sink_losses``: messages each output has lost so far (buffer full or write
    failed)."""
    msg = eos.to_wire(seq, emit_time=emit_time, sink_losses=sink_losses)
    return schema.validate(dict(msg.to_dict()))


def stats_message(payload: Mapping[str, Any], *, emit_time: float | None = None) -> dict[str, Any]:
    """The ``stats`` message dict of a collector's payload ``{"stages": {...}, "fps": float,
    "streams": {...}, ...}`` (copied, numbers made plain, validated)."""
    return dict(StatsMessage.from_snapshot(payload, emit_time=emit_time).to_dict())


__all__ = ["DEFAULT_ENDPOINT", "MAX_PAYLOAD_BYTES", "MESSAGE_TYPES", "STATS_TOPIC",
           "ProtocolError", "decode", "decode_multipart", "encode", "encode_multipart",
           "eos_message", "stats_message", "topic_for", "validate"]
