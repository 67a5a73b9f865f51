"""Small file-level facts every part of the project agrees on: content hashes, safe names, the
file of each stream of a per-stream output, and what an output path may be.

One place so that a model set, an engine cache entry and a downloaded landmarker are hashed the
same way, a stream id, an overlay file name and a cache directory are made safe the same way, and
two outputs that would write one file are recognised as such before either is opened.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import time
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 1 << 20

# The most pixels an image file may declare (`run --max-image-pixels`, read by
# norface_rt.images.read_rgb): 100 megapixels, more than any camera's photo; OpenCV's own limit
# is 2^30.
DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_LIMIT = 2**30


def max_file_bytes(max_pixels: int) -> int:
    """The largest image file read for a pixel cap: an uncompressed 24-bit image of that many
    pixels plus 16 MiB of headers and metadata (compressed formats are far smaller)."""
    return 3 * max_pixels + 16 * 2**20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (model files are tens of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of an in-memory buffer (e.g. an image's pixels, recorded in provenance)."""
    return hashlib.sha256(data).hexdigest()


def slug(text: str, *, sep: str = "-", fallback: str = "stream", lower: bool = False,
         max_len: int | None = None) -> str:
    """``text`` reduced to letters, digits, ``.``, ``_`` and ``-`` (runs of anything else become
    one ``sep``), without leading or trailing punctuation: safe in file names, ZeroMQ topics and
    CSV cells on every platform. ``fallback`` when nothing is left."""
    s = _UNSAFE.sub(sep, text).strip("-._")
    if lower:
        s = s.lower()
    if max_len is not None:
        s = s[:max_len].rstrip("-._")
    return s or fallback


def display_path(path: str | os.PathLike[str] | bytes) -> str:
    """A file name as text that always encodes as UTF-8: bytes that are not UTF-8 (a Latin-1 name
    on a UTF-8 system) are written ``\\xNN`` the way Python's ``backslashreplace`` does, so the
    name reaches messages, JSON and CSV losslessly instead of failing to encode there."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def read_capped(path: str | os.PathLike[str], max_bytes: int, what: str) -> bytes:
    """The bytes of a small file (a config, a manifest), refused with a ValueError naming it when
    it is larger than ``max_bytes``: checked before reading, and again while reading (a file that
    grows meanwhile, or a device that reports no size), so a huge file is never read whole."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(max_bytes + 1) if size <= max_bytes else b""
    if size > max_bytes or len(data) > max_bytes:
        got = f"{size} bytes" if size > max_bytes else f"more than {max_bytes} bytes"
        raise ValueError(f"{display_path(path)}: expected {what} of at most {max_bytes} bytes, "
                         f"got {got}")
    return data


def stream_file(path: str | os.PathLike[str], stream_id: str) -> Path:
    """The file of one stream of an output that writes one file per stream (overlay videos, the
    OpenFace CSV): ``<stem>-<stream id made safe><suffix>`` beside ``path``."""
    p = Path(path)
    return p.with_name(f"{p.stem}-{slug(stream_id, sep='_')}{p.suffix}")


def check_output_file(flag: str, value: str | os.PathLike[str], *, regular: bool = False) -> None:
    """Refuse an output path that cannot be written as a file, naming ``flag``: a directory, a
    path under a file, or (``regular``: outputs that must seek, such as an mp4) anything that
    exists and is not a regular file (``/dev/null``, a FIFO)."""
    p = Path(value).expanduser()
    shown = display_path(p)
    if p.is_dir():
        raise ValueError(f"{flag}: expected a file to write, got the directory {shown}")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{flag}: {display_path(parent)} is a file, not a directory "
                                 f"(for {shown})")
            break
    if regular and p.exists() and not p.is_file():
        raise ValueError(f"{flag}: expected a regular file (the output seeks while it writes), "
                         f"got {shown}, which is a {_kind(p)}")


def _kind(p: Path) -> str:
    mode = p.stat().st_mode
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _identity(p: Path) -> tuple[object, ...]:
    """What makes two paths one file: device and inode when it exists, else its absolute path
    with symbolic links resolved."""
    try:
        st = p.stat()
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.realpath(p.expanduser()))


def check_distinct_files(outputs: Iterable[tuple[str, str | os.PathLike[str]]]) -> None:
    """Refuse two outputs that would write the same file (the same path given twice, a link to
    it, or two stream ids that are made safe to the same file name): ValueError naming both
    flags and the file, before either is opened."""
    seen: dict[tuple[object, ...], tuple[str, Path]] = {}
    for flag, value in outputs:
        p = Path(value).expanduser()
        key = _identity(p)
        if key in seen:
            other, q = seen[key]
            raise ValueError(f"{flag}: {display_path(p)} is also written by {other} "
                             f"({display_path(q)}); two outputs cannot share a file")
        seen[key] = (flag, p)


# How long opening an output FIFO waits for a reader before giving up.
FIFO_OPEN_TIMEOUT_S = 5.0


def open_for_writing(path: str | os.PathLike[str], *, append: bool = False,
                     fifo_timeout: float = FIFO_OPEN_TIMEOUT_S) -> int:
    """A file descriptor of ``path`` opened for writing, without ever blocking: a FIFO is opened
    non-blocking (which fails at once while nobody reads it) and retried for ``fifo_timeout``
    seconds, then refused with a TimeoutError that says so; once open, writes block as usual (the
    output's own thread and buffer deal with a reader that stops)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    p = Path(path)
    try:
        is_fifo = stat.S_ISFIFO(p.stat().st_mode)
    except OSError:
        is_fifo = False
    if not is_fifo:
        return os.open(p, flags, 0o666)
    deadline = time.monotonic() + fifo_timeout
    while True:
        try:
            fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            if time.monotonic() >= deadline:
                raise TimeoutError(f"output FIFO {display_path(p)} has no reader (waited "
                                   f"{fifo_timeout:g} s for a process to open it)") from None
            time.sleep(0.05)
            continue
        os.set_blocking(fd, True)
        return fd
