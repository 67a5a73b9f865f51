"""Where the live view listens and the defaults its options declare.

Kept apart from the server (asyncio, the page's files) because the run options import it: every
command validates ``--http`` and shows its defaults without loading the server.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_MAX_FPS = 30.0  # images per second sent per stream (the results stream carries every frame)
TOKEN_ENV = "NORFACE_RT_HTTP_TOKEN"


@dataclass(frozen=True)
class HttpAddress:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host in ("localhost", "lo"):
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host or interface name: may be reachable from outside
            return False


def parse_http_address(text: str, *, allow_remote: bool = False) -> HttpAddress:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` (port 0: a free one). A bare port, or an empty
    host, means loopback; ``*`` means every interface, which, like any other address that is not
    loopback, needs ``allow_remote``."""
    raw = str(text).strip()
    host, port_text = DEFAULT_HOST, raw
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0 or raw[end + 1:end + 2] != ":":
            raise ValueError(f"--http: expected [IPv6]:PORT, got {text!r}")
        host, port_text = raw[1:end], raw[end + 2:]
    elif ":" in raw:
        host, _, port_text = raw.rpartition(":")
        host = host or DEFAULT_HOST
    if host == "*":
        host = "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"--http: expected [HOST:]PORT such as 127.0.0.1:8080, got "
                         f"{text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"--http: port must be in 0..65535, got {port}")
    addr = HttpAddress(host, port)
    if not addr.loopback and not allow_remote:
        raise ValueError(f"--http {text}: {host} is not a loopback address; serving there would "
                         "show the video to the network. Use 127.0.0.1:PORT, or pass "
                         "--allow-remote (and --http-token) to do it deliberately.")
    return addr
