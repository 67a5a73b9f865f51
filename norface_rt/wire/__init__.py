"""The wire: everything another program sees of norface-rt's results, owned in one package.

* :mod:`norface_rt.wire.messages` -- the ``frame``, ``eos`` and ``stats`` messages as frozen
  types with ``to_dict`` / ``from_dict`` (what sinks receive);
* :mod:`norface_rt.wire.schema` -- the schema version and the validator (the rules of
  ``docs/schema/*.json``);
* :mod:`norface_rt.wire.codec` -- msgpack payloads and ZeroMQ's ``[topic, payload]`` framing,
  and the messages' one JSON form (``to_json``: JSONL files, the live view's events);
* :mod:`norface_rt.wire.names` -- endpoints, topics, NATS and Triton names peers agree on;
* :mod:`norface_rt.wire.exits` -- the commands' exit codes;
* :mod:`norface_rt.wire.listen` and :mod:`norface_rt.wire.curve` -- the subscribing side and
  CURVE keys (they import pyzmq: import them by name).

It sits just above the model config (:mod:`norface_rt.config`, whose label names it checks) and
below the pipeline's types (:mod:`norface_rt.types` converts its results into messages); nothing
below the types imports it.
"""

from __future__ import annotations

from norface_rt.wire.codec import (
    MAX_PAYLOAD_BYTES,
    decode,
    decode_message,
    decode_multipart,
    encode,
    encode_multipart,
    to_json,
    topic_for,
    wire_dict,
)
from norface_rt.wire.exits import ExitCode, exit_epilog
from norface_rt.wire.messages import (
    EosMessage,
    FaceMessage,
    FrameMessage,
    Message,
    Pose,
    StatsMessage,
    WireMessage,
    as_message,
    message_from_dict,
)
from norface_rt.wire.names import (
    DEFAULT_ENDPOINT,
    NATS_STREAM,
    NATS_SUBJECT_PREFIX,
    STATS_TOPIC,
    TRITON_MODEL,
    TRITON_URL,
)
from norface_rt.wire.schema import (
    MESSAGE_TYPES,
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    ProtocolError,
    validate,
)

__all__ = ["DEFAULT_ENDPOINT", "MAX_PAYLOAD_BYTES", "MESSAGE_TYPES", "NATS_STREAM",
           "NATS_SUBJECT_PREFIX", "SCHEMA_VERSION", "STATS_TOPIC", "SUPPORTED_SCHEMA_VERSIONS",
           "TRITON_MODEL", "TRITON_URL", "EosMessage", "ExitCode", "FaceMessage", "FrameMessage",
           "Message", "Pose", "ProtocolError", "StatsMessage", "WireMessage", "as_message",
           "decode", "decode_message", "decode_multipart", "encode", "encode_multipart",
           "exit_epilog", "message_from_dict", "to_json", "topic_for", "validate", "wire_dict"]
