"""One entry point that turns whatever the user typed (path, URL, device) into a source.

Dispatch order: ``rtsp://`` / ``rtsps://`` -> :class:`RTSPSource`; ``/dev/video*`` or
``webcam:N`` -> :class:`WebcamSource`; an existing folder or an image extension ->
:class:`ImageSource`; any other URL scheme is refused (rather than guessed); everything else ->
:class:`FileSource`. ``file://`` URLs are accepted as paths.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from norface_rt.sources.base import Source
from norface_rt.sources.file import FileSource
from norface_rt.sources.images import ImageSource, is_image_path
from norface_rt.sources.live import RTSP_SCHEMES, RTSPSource, WebcamSource

# Files a folder is searched for besides pictures: each becomes a stream of its own.
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg",
                                     ".mpeg", ".ts", ".wmv", ".flv")

_WEBCAM = re.compile(r"^webcam:(\d+)$", re.IGNORECASE)
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


def open_source(uri: str | os.PathLike[str], stream_id: str | None = None,
                **kw: Any) -> Source:
    """Build (not start) the source for ``uri``; ``kw`` goes to that source's constructor.

    ``stream_id`` defaults to the file stem, the folder name, ``<host>-<path>`` for RTSP, or
    ``video0`` / ``webcam0`` for cameras.
    """
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"uri must be a non-empty path, URL or device, got {uri!r}")
    uri = uri.strip()
    match = _URL.match(uri)
    scheme = match.group(1).lower() if match else None
    if scheme in RTSP_SCHEMES:
        return RTSPSource(uri, stream_id, **kw)
    if scheme == "file":
        uri = unquote(urlsplit(uri).path)
    elif scheme is not None:
        raise ValueError(f"unsupported URL scheme {scheme!r} in {uri!r} (expected one of "
                         f"{', '.join(s + '://' for s in RTSP_SCHEMES)}, file://, a path, "
                         "/dev/videoN or webcam:N)")
    webcam = _WEBCAM.match(uri)
    if webcam:
        index = int(webcam.group(1))
        return WebcamSource(index, stream_id or f"webcam{index}", **kw)
    if uri.startswith("/dev/video"):
        return WebcamSource(uri, stream_id, **kw)
    path = Path(uri).expanduser()
    if path.is_dir() or is_image_path(path):
        return ImageSource(path, stream_id, **kw)
    return FileSource(path, stream_id, **kw)


def expand_sources(uris: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The sources a user's list stands for: a folder holding videos stands for each of them (in
    name order), one stream per video; its pictures, if any, stay one stream (the folder).
    Everything else is kept as given."""
    out: list[str] = []
    for uri in uris:
        text = os.fspath(uri)
        path = Path(text).expanduser()
        if not path.is_dir():
            out.append(text)
            continue
        files = sorted(p for p in path.iterdir() if p.is_file())
        videos = [str(p) for p in files if p.suffix.lower() in VIDEO_EXTENSIONS]
        if not videos or any(is_image_path(p) for p in files):
            out.append(text)  # pictures (or nothing usable: ImageSource says what it expected)
        out.extend(videos)
    return out
