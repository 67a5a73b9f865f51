#!/usr/bin/env bash
# Installs the system packages the tests need: the RTSP source tests (tests/rtsp_server.py runs under the
# system python3 with GStreamer's RTSP server), the synthetic renderer (headless EGL), the --show
# window test (an X server and XTEST) and the live view's browser test (Chromium and its driver;
# the tests never download a browser). Debian/Ubuntu only; idempotent: apt is skipped when
# everything is already installed. Called by .ci/run; safe to run by hand (uses sudo if not root).
set -euo pipefail

PACKAGES=(
  python3-gi                      # GObject introspection for /usr/bin/python3
  gir1.2-gst-rtsp-server-1.0      # GstRtspServer typelib (+ libgstrtspserver)
  gstreamer1.0-rtsp               # RTSP plugin
  gstreamer1.0-plugins-base       # appsrc, videoconvert, videoscale, decodebin
  gstreamer1.0-plugins-good       # rtph264pay, qtdemux (mp4/mov)
  gstreamer1.0-plugins-bad        # h264parse, matroska/mpegts demuxers
  gstreamer1.0-plugins-ugly       # x264enc
  gstreamer1.0-libav              # avdec_h264 / avdec_h265 to decode the test media
  libegl1 libgl1-mesa-dri libegl-mesa0  # headless EGL + llvmpipe for the synthetic renderer (moderngl)
  xvfb libxtst6                   # a real X server and key presses for the --show test
  chromium chromium-driver        # a real browser for the --http live view test (selenium drives it)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
else
  echo "system test dependencies already installed"
fi

/usr/bin/python3 - <<'PY'
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer  # noqa: F401
Gst.init(None)
missing = [e for e in ("x264enc", "rtph264pay", "appsrc", "decodebin", "videoscale")
           if Gst.ElementFactory.find(e) is None]
if missing:
    raise SystemExit(f"GStreamer elements missing after install: {missing}")
print(f"GStreamer {Gst.version_string()} with RTSP server: OK")
PY
