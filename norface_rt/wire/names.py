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

# NATS JetStream results feed (--nats): the stream, and the subject prefix of its subjects
# (PREFIX.<stream id>).
NATS_STREAM = "NORFACE"
NATS_SUBJECT_PREFIX = "norface"

# Triton: the ensemble `norface-rt triton-repo` writes and `run --backend triton` calls (its
# models are <name>_preprocess, <name>_normalizer and <name>_classifier), and where a server on
# this machine listens for gRPC.
TRITON_MODEL = "norface"
TRITON_URL = "grpc://127.0.0.1:8001"
