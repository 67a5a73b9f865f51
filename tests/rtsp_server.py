#!/usr/bin/python3
"""A real RTSP server on loopback for the source tests (GStreamer's gst-rtsp-server).

Run with the *system* python (``/usr/bin/python3``, which has python3-gi), not the project's:

    /usr/bin/python3 tests/rtsp_server.py --media single_face.mp4 --port 8554 --mount /cam

The media file is decoded once at start-up into memory (scaled to ``--width``), then looped
forever in real time: an ``appsrc`` pushes one frame every 1/fps seconds into ``x264enc``
(zerolatency, a keyframe every second so a (re)connecting client starts decoding quickly) and
``rtph264pay``, served as H.264 over RTP. Looping from memory keeps timestamps monotonic, which a
seek-based loop of a demuxer would not. When the server listens it prints one line
``READY rtsp://127.0.0.1:PORT/MOUNT`` to stdout; failures print ``ERROR ...`` and exit with 2.
SIGTERM / SIGINT stop it cleanly.

Needs: gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,ugly} (x264enc),
gstreamer1.0-libav (decoders); ``.ci/install-test-deps.sh`` installs them.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def fail(message: str) -> None:
    print(f"ERROR {message}", flush=True)
    sys.exit(2)


def load_frames(media: str, width: int, max_frames: int) -> tuple[list[bytes], Gst.Caps]:
    """Decode ``media`` to I420 frames of ``width`` pixels (height keeps the aspect ratio)."""
    pipeline = Gst.parse_launch(
        "filesrc name=src ! decodebin ! videoconvert ! videoscale ! "
        f"video/x-raw,format=I420,width={width},pixel-aspect-ratio=1/1 ! "
        "appsink name=sink sync=false")
    pipeline.get_by_name("src").set_property("location", media)
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    frames: list[bytes] = []
    caps = None
    while len(frames) < max_frames:
        sample = sink.emit("try-pull-sample", 10 * Gst.SECOND)
        if sample is None:
            break
        caps = caps or sample.get_caps()
        buf = sample.get_buffer()
        frames.append(buf.extract_dup(0, buf.get_size()))
    bus = pipeline.get_bus()
    msg = bus.pop_filtered(Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    if msg is not None:
        err, _ = msg.parse_error()
        fail(f"cannot decode {media}: {err.message}")
    if not frames or caps is None:
        fail(f"no video frames decoded from {media}")
    return frames, caps


class LoopingFactory(GstRtspServer.RTSPMediaFactory):
    """Each media gets an appsrc fed by a GLib timer from the shared in-memory frames."""

    def __init__(self, frames: list[bytes], caps: Gst.Caps, fps: float, bitrate: int) -> None:
        super().__init__()
        self.frames = frames
        self.caps = caps
        self.fps = fps
        gop = max(1, int(round(fps)))
        self.set_launch(
            "( appsrc name=src is-live=true format=time do-timestamp=true "
            "! queue max-size-buffers=4 leaky=downstream "
            f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} "
            f"bitrate={bitrate} threads=1 "
            "! video/x-h264,profile=constrained-baseline "
            "! rtph264pay name=pay0 pt=96 config-interval=-1 )")
        self.set_shared(True)
        self.connect("media-configure", self.on_media_configure)

    def on_media_configure(self, _factory: Any, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_child_by_name("src")
        appsrc.set_property("caps", self.caps)
        state = {"i": 0, "timer": 0}
        duration = int(Gst.SECOND / self.fps)

        def push() -> bool:
            data = self.frames[state["i"] % len(self.frames)]
            buf = Gst.Buffer.new_wrapped(data)
            buf.duration = duration
            state["i"] += 1
            ret = appsrc.emit("push-buffer", buf)
            if ret != Gst.FlowReturn.OK:  # media torn down (client left): stop this timer
                state["timer"] = 0
                return False
            return True

        def on_unprepared(_media: Any) -> None:
            if state["timer"]:
                GLib.source_remove(state["timer"])
                state["timer"] = 0

        media.connect("unprepared", on_unprepared)
        state["timer"] = GLib.timeout_add(max(1, int(round(1000 / self.fps))), push)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", required=True, help="video file to loop")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mount", default="/stream", help="mount path, e.g. /cam")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--width", type=int, default=320, help="served width (even)")
    parser.add_argument("--fps", type=float, default=0.0, help="0: the file's frame rate")
    parser.add_argument("--max-frames", type=int, default=150, help="frames kept in memory")
    parser.add_argument("--bitrate", type=int, default=600, help="kbit/s")
    args = parser.parse_args()
    if not args.mount.startswith("/"):
        fail(f"--mount must start with '/', got {args.mount!r}")

    Gst.init(None)
    frames, caps = load_frames(args.media, args.width, args.max_frames)
    fps = args.fps
    if fps <= 0:
        ok, num, den = caps.get_structure(0).get_fraction("framerate")
        fps = num / den if ok and num > 0 and den > 0 else 25.0

    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.mount, LoopingFactory(frames, caps, fps,
                                                                     args.bitrate))
    try:
        source_id = server.attach(None)
    except GLib.Error as exc:
        fail(f"cannot listen on {args.address}:{args.port}: {exc.message}")
    if not source_id:
        fail(f"cannot listen on {args.address}:{args.port}")

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY rtsp://{args.address}:{args.port}{args.mount} frames={len(frames)} "
          f"fps={fps:g}", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
