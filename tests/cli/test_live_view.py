"""``run --http`` end to end: the page in a real headless browser (Debian's Chromium, driven
through its own chromedriver by selenium; nothing is downloaded), the Python API's live view
(``Analyzer(http=...)``), and the address rules.

The browser test opens the page while ``single_face.mp4`` loops at its frame rate, waits for
the overlay and the charts, checks that the images shown advance and that the event stream
delivered every frame's results in order, and leaves a screenshot in the artifact folder.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(240)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "t0ken-for-the-test"


class LiveRun:
    """``norface-rt run ... --http 127.0.0.1:0`` in a child process; its URL read from stderr."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "norface_rt", "run", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._url = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True).start()
        if not self._url.wait(120):
            self.stop()
            raise AssertionError("no live view URL on stderr:\n" + "".join(self.lines)[-3000:])

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.match(r"norface-rt: live view on (http://\S+)", line)
            if m:
                self.url = m.group(1)
                self._url.set()

    def get(self, path: str) -> tuple[int, Any]:
        host, port = self.url[len("http://"):].rstrip("/").rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, json.loads(r.read() or b"null")
        finally:
            c.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                    "(pip install -e '.[test]')")
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.skip(f"{path} not found: `apt-get install {pkg}` "
                        "(.ci/install-test-deps.sh does)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # selenium never looks for a driver or browser online
    profile = tempfile.mkdtemp(prefix="norface-chromium-")
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1280,1000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver: Any, script: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {script}")


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.int16)


STATE = """
const s = window.norfaceLive && window.norfaceLive.streams['single_face'];
if (!s) return null;
return {received: s.received, missed: s.missed, seqs: s.seqs, frame: s.frameIndex,
        events: window.norfaceLive.events, gaps: window.norfaceLive.missed,
        shown: s.shown, synced: s.synced, unsynced: s.unsynced,
        src: document.querySelector('.video img').src};
"""
# Pixels drawn on every chart canvas of the stream (the background is transparent).
CHARTS = """
const cs = [...document.querySelectorAll('.track canvas')];
if (cs.length < 2) return 0;
return Math.min(...cs.map((c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;
}));
"""


def test_the_page_in_a_real_browser_shows_the_live_overlay_and_charts(
        browser: Any, media_dir: Path, landmarker_path: Path, artifact_dir: Path) -> None:
    run = LiveRun(str(media_dir / "single_face.mp4"), "--landmarker", str(landmarker_path),
                  "--realtime", "--loop", "--http", "127.0.0.1:0", "--http-token", TOKEN,
                  "--no-progress")
    try:
        # Without the token the page loads but says what it needs; the data routes refuse.
        browser.get(run.url)
        _wait(browser, "return document.getElementById('conn').textContent.includes('token')")
        assert run.get("/health")[0] == 401
        browser.get(run.url + "?token=" + TOKEN)
        _wait(browser, "const i = document.querySelector('.video img');"
                       "return i && i.complete && i.naturalWidth > 0")
        _wait(browser, "const s = window.norfaceLive.streams['single_face'];"
                       "return s && s.received >= 60")
        _wait(browser, "return (() => {" + CHARTS + "})() > 2000")  # the charts are drawn
        img = browser.find_element("css selector", ".video img")
        first = _png(img.screenshot_as_png)
        state0 = browser.execute_script(STATE)
        # (the clip loops every 2.4 s: look a few times rather than once, a loop later)
        changes = []
        for _ in range(6):
            time.sleep(0.35)
            second = _png(img.screenshot_as_png)
            changes.append(float(np.abs(first - second).mean()))
        state1 = browser.execute_script(STATE)
        browser.save_screenshot(str(artifact_dir / "live_view.png"))
        status, health = run.get(f"/health?token={TOKEN}")
    finally:
        code = run.stop()
    # The images shown advance: the face moves between looks a third of a second apart.
    assert first.shape == second.shape and first.shape[0] > 100
    assert sum(c > 1.0 for c in changes) >= 3, changes
    assert state1["frame"] > state0["frame"]
    # The page reads the images itself (each part names its frame) and shows one once that
    # frame's results are in: the bars beside the picture are the picture's frame's.
    assert state1["src"].startswith("blob:") and state1["shown"]["seq"] > state0["shown"]["seq"]
    assert state1["synced"] >= 20, state1
    assert state1["unsynced"] <= max(2, state1["synced"] // 20), state1
    # Every frame's results, in order, none missed (the sequence numbers are consecutive).
    seqs = state1["seqs"]
    assert len(seqs) >= 100 and state1["received"] == len(seqs)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "results missing or out of order"
    assert state1["missed"] == 0 and state1["gaps"] == 0
    assert status == 200 and health["streams"]["single_face"]["state"] == "running"
    assert health["streams"]["single_face"]["viewers"] >= 1
    assert health["view"]["rejected"].get("401", 0) >= 1
    assert code == 130, "".join(run.lines)[-3000:]  # stopped by SIGINT, cleanly
    assert "output(s) lost messages" not in "".join(run.lines)


def test_a_browser_without_streaming_fetch_gets_the_images_through_the_img_itself(
        browser: Any, media_dir: Path, landmarker_path: Path) -> None:
    """The page's fallback: where fetch cannot stream a response body, the <img> reads the
    MJPEG stream itself (the bars are then the newest results). Chromium is made such a
    browser by removing ReadableStream before the page's script runs."""
    run = LiveRun(str(media_dir / "single_face.mp4"), "--landmarker", str(landmarker_path),
                  "--realtime", "--loop", "--http", "127.0.0.1:0", "--no-progress")
    try:
        browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                {"source": "delete window.ReadableStream;"})
        browser.get(run.url)
        _wait(browser, "const i = document.querySelector('.video img');"
                       "return i && i.complete && i.naturalWidth > 0")
        _wait(browser, "const s = window.norfaceLive.streams['single_face'];"
                       "return s && s.received >= 30")
        src = browser.execute_script("return document.querySelector('.video img').src")
        shown = browser.execute_script("return window.norfaceLive.streams['single_face'].shown")
        status, health = run.get("/health")
    finally:
        code = run.stop()
    assert src.endswith("/stream/single_face.mjpg") and shown is None
    assert status == 200 and health["streams"]["single_face"]["viewers"] == 1
    assert code == 130, "".join(run.lines)[-3000:]


def test_more_streams_than_a_browser_has_connections_keep_their_results_coming(
        browser: Any, media_dir: Path, landmarker_path: Path, artifact_dir: Path) -> None:
    """A browser opens at most 6 connections to one server: six MJPEG images would hold them
    all and starve the results and the health polls. The page reads the images of at most 4
    streams, the first cards on screen, says so on the others, and every stream's results
    keep coming."""
    clip = str(media_dir / "single_face.mp4")
    ids = [f"cam{i}" for i in range(6)]
    run = LiveRun(*[clip] * len(ids), *[a for i in ids for a in ("--stream-id", i)],
                  "--landmarker", str(landmarker_path), "--realtime", "--loop",
                  "--http", "127.0.0.1:0", "--no-progress")
    try:
        browser.set_window_size(1280, 6 * 620)  # every card on screen at once
        browser.get(run.url)
        _wait(browser, "const s = window.norfaceLive.streams;"
                       "return ['cam0','cam1','cam2','cam3','cam4','cam5']"
                       ".every((id) => s[id] && s[id].received >= 10)", timeout=120)
        counts0 = browser.execute_script(
            "return Object.fromEntries(Object.values(window.norfaceLive.streams)"
            ".map((s) => [s.id, s.received]))")
        _wait(browser, "return [...document.querySelectorAll('.video img')]"
                       ".filter((i) => i.complete && i.naturalWidth > 0).length >= 4")
        time.sleep(3)
        counts1 = browser.execute_script(
            "return Object.fromEntries(Object.values(window.norfaceLive.streams)"
            ".map((s) => [s.id, s.received]))")
        paused = browser.execute_script(
            "return [...document.querySelectorAll('.card')].map((c) => "
            "!c.querySelector('[data-role=paused]').hidden)")
        shown = browser.execute_script(
            "return [...document.querySelectorAll('.video img')].map((i) => i.naturalWidth > 0)")
        health_polled = browser.execute_script("return !!window.norfaceLive.health")
        status, health = run.get("/health")
        browser.save_screenshot(str(artifact_dir / "live_view_six_streams.png"))
    finally:
        code = run.stop()
    # every stream's results kept coming while four image streams were open
    assert all(counts1[i] > counts0[i] for i in ids), (counts0, counts1)
    assert health_polled and status == 200
    assert sum(shown) == 4 and shown[:4] == [True] * 4, shown
    assert paused == [False] * 4 + [True] * 2, paused
    viewers = {i: health["streams"][i]["viewers"] for i in ids}
    assert viewers == {i: int(n < 4) for n, i in enumerate(ids)}, viewers
    assert code == 130, "".join(run.lines)[-3000:]


def _sse(url: str, out: list[dict[str, Any]], n: int) -> None:
    host, port = url[len("http://"):].rstrip("/").rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    c.request("GET", "/events?from=oldest")
    r = c.getresponse()
    event: dict[str, Any] = {}
    while len(out) < n:
        line = r.fp.readline().decode()
        if not line:
            break
        line = line.rstrip("\n")
        if not line and "data" in event:
            out.append(event)
            event = {}
        elif line.startswith(("event: ", "data: ")):
            k, _, v = line.partition(": ")
            event[k] = json.loads(v) if k == "data" else v
    c.close()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return False
    return True


def test_the_analyzer_serves_each_video_analysis_on_its_address(media_dir: Path,
                                                                 landmarker_path: Path) -> None:
    import norface_rt
    from norface_rt.serving.server import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with norface_rt.Analyzer(landmarker=landmarker_path, http=f"127.0.0.1:{port}") as analyzer:
        assert len(analyzer.analyze_image(media_dir / "single_face.jpg")) == 1
        assert not _listening(port)  # one picture: no view
        for _ in range(2):  # one analysis after the other, at the same address (a notebook's tab)
            analysis = analyzer.analyze_video(media_dir / "single_face.mp4", buffer=4)
            assert analysis.live_url == url
            got: list[dict[str, Any]] = []
            reader = threading.Thread(target=_sse, args=(url, got, 73))
            reader.start()
            frames = [f.frame_index for f in analysis]
            reader.join(30)
            assert frames == list(range(72))
            assert [e["data"]["frame_index"] for e in got[:72]] == frames
            assert got[72]["event"] == "eos" and got[72]["data"]["frames"] == 72
            assert not _listening(port)  # closed with its analysis
        # one call may serve elsewhere
        with analyzer.analyze_video(media_dir / "single_face.mp4", http="127.0.0.1:0") as other:
            assert other.live_url is not None and other.live_url != url
            host, other_port = other.live_url[len("http://"):].rstrip("/").rsplit(":", 1)
            c = http.client.HTTPConnection(host, int(other_port), timeout=10)
            c.request("GET", "/health")
            assert c.getresponse().status == 200
            c.close()
        assert not _listening(int(other_port))


def test_a_non_loopback_address_needs_allow_remote(media_dir: Path, landmarker_path: Path
                                                  ) -> None:
    res = subprocess.run([sys.executable, "-m", "norface_rt", "run",
                          str(media_dir / "single_face.jpg"), "--landmarker", str(landmarker_path),
                          "--http", "0.0.0.0:0"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "not a loopback address" in res.stderr and "--allow-remote" in res.stderr
