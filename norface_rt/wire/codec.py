"""Bytes on the wire: msgpack payloads and ZeroMQ's two-frame ``[topic, payload]`` framing.

Every message is one msgpack map (``use_bin_type``) of its wire dict; the topic is the stream id
(UTF-8) for ``frame``/``eos`` and :data:`~norface_rt.wire.names.STATS_TOPIC` for ``stats``.
Encoding validates first unless told not to, so a producer bug shows up as a clear error at the
publisher, not as a stream of rejected messages in every consumer; decoding validates what it
reads, and anything malformed raises :class:`~norface_rt.wire.schema.ProtocolError`.

msgpack (msgpack-python) stays the codec: ``msgspec`` encodes the same bytes several times
faster, but either is a few microseconds of a frame's 10 ms or more (docs/protocol.md,
"Validation"), and validation, which costs more than encoding, stays hand-written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

from norface_rt.wire.messages import Message, WireMessage, read_message
from norface_rt.wire.names import STATS_TOPIC
from norface_rt.wire.schema import ProtocolError, fail, validate

# A payload larger than this is refused by decode() before unpacking (a frame with 64 faces is ~40 KB).
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024


def wire_dict(msg: WireMessage | Mapping[str, Any]) -> dict[str, Any]:
    """The dict that goes on the wire: a typed message's :meth:`~WireMessage.to_dict`, or a
    message dict as it is."""
    if isinstance(msg, WireMessage):
        return msg.to_dict()
    return msg  # type: ignore[return-value]  # validate() names a non-dict as such


def to_json(msg: WireMessage | Mapping[str, Any]) -> str:
    """A message as one compact line of JSON: its wire dict (:func:`wire_dict`), the fields a
    ZeroMQ subscriber decodes, in their order. Non-ASCII text is kept as it is; NaN and
    infinities, which JSON lacks and the protocol never produces, raise ValueError. The JSONL
    file and the live view's event stream both write this."""
    return json.dumps(wire_dict(msg), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode(msg: WireMessage | Mapping[str, Any], *, check: bool = True) -> bytes:
    """msgpack-encode a message (typed, or its dict), validating it first unless ``check=False``."""
    d = wire_dict(msg)
    if check:
        validate(d)
    try:
        return msgpack.packb(d, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"message: cannot be encoded as msgpack: {exc}") from exc


def decode(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Decode and validate one payload into its message dict (unknown fields kept)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        fail("payload", "bytes", data)
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"payload: expected at most {MAX_PAYLOAD_BYTES} bytes, got {len(data)}")
    try:
        msg = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"payload: expected one msgpack map, got undecodable bytes "
                            f"({type(exc).__name__}: {exc}; {len(data)} bytes)") from exc
    return validate(msg)


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """:func:`decode` into the typed message."""
    return read_message(decode(data))


def topic_for(msg: WireMessage | Mapping[str, Any]) -> str:
    """The ZeroMQ topic of a message: its stream id, or :data:`STATS_TOPIC` for stats."""
    if isinstance(msg, WireMessage):
        return msg.topic
    if msg.get("type") == "stats":
        return STATS_TOPIC
    sid = msg.get("stream_id")
    if not isinstance(sid, str) or not sid:
        fail("stream_id", "non-empty string (the topic)", sid)
    return sid


def encode_multipart(msg: WireMessage | Mapping[str, Any], *, check: bool = True) -> list[bytes]:
    """``[topic, payload]`` ready for ``socket.send_multipart``."""
    payload = encode(msg, check=check)
    return [topic_for(msg).encode("utf-8"), payload]


def decode_multipart(parts: Sequence[bytes]) -> tuple[str, dict[str, Any]]:
    """Inverse of :func:`encode_multipart`; also checks that the topic matches the message."""
    if len(parts) != 2:
        raise ProtocolError(f"framing: expected 2 frames [topic, payload], got {len(parts)}")
    try:
        topic = bytes(parts[0]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"topic: expected UTF-8 text, got {bytes(parts[0])[:40]!r}") from exc
    msg = decode(parts[1])
    expected = topic_for(msg)
    if topic != expected:
        fail("topic", f"{expected!r} (the message's stream_id, or {STATS_TOPIC!r} for stats)", topic)
    return topic, msg
