"""``norface-rt keys``: make CURVE key pairs for encrypted, authenticated ZeroMQ output."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from norface_rt.cli.args import add_command, fail
from norface_rt.wire.exits import ExitCode


def add_parser(sub: Any) -> None:
    k = add_command(sub, "keys", help="make CURVE keys for --curve-secret / --curve-clients")
    ksub = k.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    mk = add_command(ksub, "make", help="write NAME.key (public) and NAME.key_secret (secret, "
                                        "owner-only) into DIR")
    mk.add_argument("key_dir", metavar="DIR", help="folder for the key pair (created if needed)")
    mk.add_argument("--name", default="server",
                    help="key pair name (default: server; e.g. one per subscriber: alice, bob)")


def run(args: argparse.Namespace) -> int:
    from norface_rt.wire.curve import make_keypair

    if args.keys_command == "make":
        try:
            public, secret = make_keypair(Path(args.key_dir), args.name)
        except (FileExistsError, ValueError) as exc:
            return fail(str(exc))
        print(f"public key: {public}\nsecret key: {secret} (keep it private)")
        return ExitCode.OK
    raise AssertionError(args.keys_command)
