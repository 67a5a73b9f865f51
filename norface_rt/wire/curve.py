"""ZeroMQ CURVE security for the publisher, the PUSH hand-off and their consumers.

CURVE (CurveZMQ: Curve25519 keys, every message encrypted and authenticated) protects the
results of facial analysis on the wire, and with an authenticator the publisher accepts only
subscribers whose public key it holds:

* ``norface-rt keys make DIR --name NAME`` writes ``NAME.key`` (public) and ``NAME.key_secret``
  (public + secret, readable by its owner only), pyzmq's certificate format;
* the publisher gets its own secret file (``--curve-secret server.key_secret``) and, to
  authenticate subscribers, a folder of the public keys it accepts (``--curve-clients DIR``);
  without that folder any client that knows the server's public key may connect (encryption
  only);
* a subscriber gets the server's public key (``--curve-server-key server.key``) and its own
  secret file (``--curve-secret client.key_secret``).

A client whose key is not accepted, or that holds the wrong server key, fails the handshake and
receives nothing; the publisher carries on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


def make_keypair(key_dir: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` into ``key_dir`` (created if needed); the
    secret file is made readable by its owner only. Refuses to overwrite existing keys."""
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"--name: expected a plain file name such as 'server', got {name!r}")
    d = Path(key_dir)
    d.mkdir(parents=True, exist_ok=True)
    public, secret = d / f"{name}{PUBLIC_SUFFIX}", d / f"{name}{SECRET_SUFFIX}"
    for p in (public, secret):
        if p.exists():
            raise FileExistsError(f"{p} exists already; remove it or choose another --name")
    pub_file, sec_file = zmq.auth.create_certificates(d, name)
    os.chmod(sec_file, 0o600)
    return Path(pub_file), Path(sec_file)


def _load(path: str | os.PathLike[str], want_secret: bool) -> tuple[bytes, bytes | None]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"CURVE key file not found: {p}")
    try:
        public, secret = zmq.auth.load_certificate(p)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: not a CURVE key file (expected one written by `norface-rt keys "
                         f"make`): {exc}") from exc
    if len(public) != 40 or (secret is not None and len(secret) != 40):
        raise ValueError(f"{p}: expected 40-character Z85 keys, got a public key of "
                         f"{len(public)} characters")
    if want_secret and secret is None:
        raise ValueError(f"{p}: holds no secret key (expected a {SECRET_SUFFIX} file, got a "
                         f"public {PUBLIC_SUFFIX} file)")
    return public, secret


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    return _load(path, want_secret=False)[0]


def load_keypair(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` file."""
    public, secret = _load(path, want_secret=True)
    assert secret is not None
    return public, secret


@dataclass(frozen=True)
class CurveServer:
    """What a binding socket (publisher, PUSH) needs: its own secret file and, to authenticate
    clients, the folder of accepted public keys (None: any client with the server key)."""

    secret_file: Path
    clients_dir: Path | None = None

    def __post_init__(self) -> None:
        load_keypair(self.secret_file)  # fail at start-up, naming the file
        if self.clients_dir is not None:
            d = Path(self.clients_dir)
            if not d.is_dir():
                raise FileNotFoundError(f"--curve-clients: folder of accepted public keys not "
                                        f"found: {d}")
            if not any(d.glob(f"*{PUBLIC_SUFFIX}")):
                raise ValueError(f"--curve-clients: {d} holds no *{PUBLIC_SUFFIX} public key; "
                                 "no subscriber could connect")

    def start_authenticator(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> ThreadAuthenticator | None:
        """Start the ZAP handler of ``ctx`` that admits only the accepted keys (before bind)."""
        if self.clients_dir is None:
            return None
        if not zmq.has("curve"):
            raise RuntimeError("this libzmq was built without CURVE support")
        auth = ThreadAuthenticator(ctx, log=logging.getLogger("norface_rt.zmq.auth"))
        auth.start()
        auth.configure_curve(domain="*", location=str(self.clients_dir))
        return auth

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        public, secret = load_keypair(self.secret_file)
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, secret)


@dataclass(frozen=True)
class CurveClient:
    """What a connecting socket (listener) needs: the server's public key and its own pair."""

    server_key_file: Path
    secret_file: Path

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        server = load_public_key(self.server_key_file)
        public, secret = load_keypair(self.secret_file)
        sock.setsockopt(zmq.CURVE_SERVERKEY, server)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, secret)


def curve_client(server_key: str | os.PathLike[str] | None,
                 secret: str | os.PathLike[str] | None) -> CurveClient | None:
    """The client settings of the CLI options, or None; both or neither must be given."""
    if server_key is None and secret is None:
        return None
    if server_key is None or secret is None:
        raise ValueError("--curve-server-key and --curve-secret go together (the server's public "
                         f"key and this client's secret file), got only "
                         f"{'--curve-server-key' if server_key else '--curve-secret'}")
    client = CurveClient(Path(server_key), Path(secret))
    load_public_key(client.server_key_file)
    load_keypair(client.secret_file)
    return client
