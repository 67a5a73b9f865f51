"""The names other programs meet on the wire: endpoints, topics, NATS streams and subjects, the
Triton ensemble, and the ZeroMQ queue defaults. A name a peer must agree on is written here once;
options, sinks, backends and the help texts read it (this module imports nothing, so the options
can read it on a machine without pyzmq)."""

from __future__ import annotations

# Where `norface-rt run` publishes and `norface-rt listen` subscribes unless told otherwise
# (loopback only: binding anything wider is an explicit choice, see sinks/zmq_pub.py).
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"
# The ZeroMQ topic of stats messages. Stream ids starting with "_" are reserved for such service
# topics, so a subscriber to "_stats" never receives a stream's frames by prefix matching.
STATS_TOPIC = "_stats"
RESERVED_TOPIC_PREFIX = "_"
# Messages queued per subscriber (publisher) and for the PULL consumers (PUSH), and how long a
# blocking PUSH waits for a consumer: the defaults of `run`'s --sndhwm, --push-hwm and
# --push-timeout.
DEFAULT_SNDHWM = 1000
DEFAULT_PUSH_HWM = 1000
DEFAULT_PUSH_TIMEOUT = 30.0
# An acknowledged PUSH (--push-ack) sends [topic, payload, delivery id]: 8 bytes naming the run,
# then the message's sequence number (8 bytes, big-endian); consumers send the ids back,
# concatenated, to the ack endpoint.
DELIVERY_ID_BYTES = 16

# NATS JetStream results feed (--nats): the stream, and the subject prefix of its subjects
# (PREFIX.<stream id>).
NATS_STREAM = "NORFACE"
NATS_SUBJECT_PREFIX = "norface"

# Triton: the ensemble `norface-rt triton-repo` writes and `run --backend triton` calls (its
# models are <name>_preprocess, <name>_normalizer and <name>_classifier), and where a server on
# this machine listens for gRPC.
TRITON_MODEL = "norface"
TRITON_URL = "grpc://127.0.0.1:8001"

# A stream id is a ZeroMQ topic, a NATS subject token (escaped) and part of file names.
MAX_STREAM_ID_CHARS = 200


def check_stream_id(flag: str, stream_id: str) -> None:
    """Refuse a stream id no peer could use, naming ``flag``: empty, longer than
    :data:`MAX_STREAM_ID_CHARS`, not encodable as UTF-8 (a topic is UTF-8 bytes), or starting
    with :data:`RESERVED_TOPIC_PREFIX` (service topics such as ``_stats``)."""
    if not isinstance(stream_id, str) or not stream_id:
        raise ValueError(f"{flag}: expected a non-empty stream id, got {stream_id!r}")
    if len(stream_id) > MAX_STREAM_ID_CHARS:
        raise ValueError(f"{flag}: expected at most {MAX_STREAM_ID_CHARS} characters, got "
                         f"{len(stream_id)}")
    try:
        stream_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{flag}: expected text that encodes as UTF-8 (the ZeroMQ topic), got "
                         f"{stream_id!r}") from None
    if stream_id.startswith(RESERVED_TOPIC_PREFIX):
        raise ValueError(f"{flag}: ids starting with {RESERVED_TOPIC_PREFIX!r} are reserved for "
                         f"service topics such as {STATS_TOPIC!r}, got {stream_id!r}")


def check_endpoint(flag: str, endpoint: str) -> None:
    """Refuse a ZeroMQ endpoint that cannot be meant, naming ``flag``: no ``transport://``, or a
    TCP port outside 1..65535 (libzmq would bind port 99999 as 34463: the port modulo 65536).
    ``*`` asks for any free port."""
    transport, sep, address = endpoint.partition("://")
    if not sep or not transport or not address:
        raise ValueError(f"{flag}: expected transport://address such as {DEFAULT_ENDPOINT!r}, "
                         f"got {endpoint!r}")
    if transport != "tcp":
        return
    address = address.rpartition(";")[2]  # (tcp://source;destination)
    host, colon, port = address.rpartition(":")
    if not colon or not host:
        raise ValueError(f"{flag}: expected tcp://HOST:PORT, got {endpoint!r}")
    if port == "*":
        return
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{flag}: expected a port in 1..65535 (or * for any free one), got "
                         f"{port!r} in {endpoint!r}")
