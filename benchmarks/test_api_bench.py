"""What a photo costs through the Python API: one ``analyze_image`` call on a warm analyzer,
``analyze_images`` over a list, and the same photos as a folder stream (``analyze_video``).

Issue 21 measured 114 ms per photo through ``analyze_image`` (a pipeline built per call) against
35 ms through a folder; the analyzer now keeps its still pipeline running between calls.
docs/benchmarks.md ("Python API: a photo at a time") has the figures before and after, side by
side; the code before the change has no ``analyze_images``, so its run deselects that test.

Run: python -m pytest benchmarks/test_api_bench.py -q -s --benchmark-columns=median,min,rounds
(before: the same file in a checkout of the older code, with ``-k "not analyze_images"``)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from bench_helpers import median_seconds, timed

PHOTOS = 16  # copies of single_face.jpg (572x562, one face)


@pytest.fixture(scope="module")
def analyzer(default_model_dir: Path, landmarker_path: Path):  # noqa: ANN201
    import norface_rt

    with norface_rt.Analyzer(default_model_dir, landmarker_path) as a:
        yield a


@pytest.fixture(scope="module")
def photos(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i in range(PHOTOS):
        shutil.copy(media_dir / "single_face.jpg", folder / f"{i:02d}.jpg")
    return folder


def test_analyze_image_per_photo(benchmark, analyzer, photos: Path) -> None:
    """One call per photo on a warm analyzer (the first call, which starts the still pipeline,
    is the warm-up)."""
    paths = sorted(photos.iterdir())
    analyzer.analyze_image(paths[0])
    times: list[float] = []

    def once() -> None:
        for p in paths:
            assert len(analyzer.analyze_image(p)) == 1

    benchmark.pedantic(timed(once, times), rounds=5, iterations=1, warmup_rounds=1)
    per = median_seconds(benchmark, times) / len(paths) * 1000
    benchmark.extra_info["ms_per_photo"] = round(per, 1)
    print(f"\nanalyze_image: {per:.1f} ms per photo")


def test_analyze_images_per_photo(benchmark, analyzer, photos: Path) -> None:
    paths = sorted(photos.iterdir())
    times: list[float] = []

    def once() -> None:
        assert sum(len(f.faces) for f in analyzer.analyze_images(paths)) == len(paths)

    benchmark.pedantic(timed(once, times), rounds=5, iterations=1, warmup_rounds=1)
    per = median_seconds(benchmark, times) / len(paths) * 1000
    benchmark.extra_info["ms_per_photo"] = round(per, 1)
    print(f"\nanalyze_images: {per:.1f} ms per photo")


def test_folder_stream_per_photo(benchmark, analyzer, photos: Path) -> None:
    """The folder as one stream, pipeline start-up included (what `run FOLDER` does)."""
    times: list[float] = []

    def once() -> None:
        assert sum(len(f.faces) for f in analyzer.analyze_video(photos)) == PHOTOS

    benchmark.pedantic(timed(once, times), rounds=5, iterations=1, warmup_rounds=1)
    per = median_seconds(benchmark, times) / PHOTOS * 1000
    benchmark.extra_info["ms_per_photo"] = round(per, 1)
    print(f"\nfolder stream: {per:.1f} ms per photo")
