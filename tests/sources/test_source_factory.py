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
