"""open_source dispatch and default stream ids (sources are built, not started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from norface_rt.sources import FileSource, ImageSource, RTSPSource, WebcamSource, open_source


def test_files_folders_and_images(media_dir: Path) -> None:
    video = open_source(str(media_dir / "single_face.mp4"))
    assert isinstance(video, FileSource) and video.stream_id == "single_face"
    assert video.policy == "lossless"
    live = open_source(media_dir / "single_face.mp4", "cam-sim", realtime=True, queue_size=3)
    assert isinstance(live, FileSource) and live.stream_id == "cam-sim" and live.live
    uri = (media_dir / "single_face.mp4").as_uri()
    assert isinstance(open_source(uri), FileSource)
    image = open_source(str(media_dir / "astronaut.png"))
    assert isinstance(image, ImageSource) and image.stream_id == "astronaut"
    folder = open_source(str(media_dir))
    assert isinstance(folder, ImageSource) and folder.stream_id == "media"
    for src in (video, live, image, folder):
        assert src.stop(1.0)


def test_rtsp_urls_and_redaction() -> None:
    src = open_source("rtsp://admin:s3cret@10.0.0.5:554/live/main")
    assert isinstance(src, RTSPSource)
    assert src.stream_id == "10.0.0.5-live-main"
    assert src.url == "rtsp://admin:***@10.0.0.5:554/live/main"
    assert "s3cret" not in repr(src)
    assert src.ffmpeg_options()["rtsp_transport"] == "tcp"
    assert isinstance(open_source("RTSPS://cam.local/x", "door"), RTSPSource)


def test_webcams() -> None:
    with pytest.raises(FileNotFoundError, match=r"webcam device not found: /dev/video97"):
        open_source("webcam:97")
    with pytest.raises(FileNotFoundError, match=r"webcam device not found: /dev/video98"):
        open_source("/dev/video98")


def test_unsupported_or_empty_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unsupported URL scheme 'http' .*rtsp://"):
        open_source("http://example.com/video.mp4")
    with pytest.raises(ValueError, match=r"uri must be a non-empty path, URL or device"):
        open_source("  ")
    with pytest.raises(FileNotFoundError, match=r"video file not found"):
        open_source(str(tmp_path / "nothing.mkv"))
    with pytest.raises(TypeError):
        open_source(str(tmp_path), no_such_option=1)


def test_webcam_class_is_what_webcam_uris_build() -> None:
    # the class itself validates its arguments before touching the device
    with pytest.raises(ValueError, match=r"width and height must be given together"):
        WebcamSource("/dev/video0", width=640)
    with pytest.raises(ValueError, match=r"fps must be a number > 0 or None, got 0"):
        WebcamSource("/dev/video0", fps=0)


@pytest.mark.parametrize("module", ["norface_rt.sources.factory", "norface_rt.sources.live",
                                    "norface_rt.video", "norface_rt.cli.run"])
def test_opencv_loads_before_pyav_whatever_is_imported_first(module: str) -> None:
    """PyAV's bundled libxcb, loaded before OpenCV's, makes --show's first cv2.imshow wait on
    the X server forever (norface_rt.pyav): each module using PyAV must bring OpenCV in first.
    (`run` imported sources.factory first and --show hung under Xvfb.)"""
    import subprocess
    import sys

    code = (f"import sys, {module}\n"
            "names = list(sys.modules)\n"
            "print(names.index('cv2') < names.index('av') if 'av' in names else 'no av')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("True", "no av"), (module, out.stdout)
