"""Minimal norface-rt subscriber: pyzmq + msgpack only, one JSON line per message on stdout.

usage: python consumer.py [ENDPOINT] [COUNT] [TOPIC]   (defaults: tcp://127.0.0.1:5556, forever, all)
Stops after COUNT messages, or after 10 s without a message.
"""
import json
import sys

import msgpack
import zmq

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:5556"
count = int(sys.argv[2]) if len(sys.argv) > 2 else None
topic = sys.argv[3] if len(sys.argv) > 3 else ""  # a stream id, "_stats", or "" for everything

sock = zmq.Context().socket(zmq.SUB)
sock.setsockopt(zmq.LINGER, 0)
sock.setsockopt_string(zmq.SUBSCRIBE, topic)
sock.connect(endpoint)
received = 0
while count is None or received < count:
    if not sock.poll(10_000):  # never hang on a vanished publisher
        sys.exit(f"no message from {endpoint} for 10 s")
    _topic, payload = sock.recv_multipart()
    msg = msgpack.unpackb(payload, raw=False)
    if msg.get("schema_version") not in (1, 2):
        continue  # written for schema versions 1 and 2 (2 only adds optional fields)
    print(json.dumps(msg), flush=True)  # msg["type"] is "frame", "eos" or "stats"
    received += 1
