"""train.evaluate_real scoring helpers and argument parsing, on values computed by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from norface_rt.config import AU_NAMES, EMOTION_NAMES
from train.evaluate_real import (
    AU_PATTERNS,
    DEFAULT_CLASSES,
    auc,
    classification_scores,
    discover_labelled,
    parse_segment,
    restricted_argmax,
)
from train.evaluate_real.labelled import check_classes, resolve_video
from train.evaluate_real.render_gap import BlendshapeSet, class_means
from train.evaluate_real.scoring import fraction

# ---- metrics ---------------------------------------------------------------------------------


def test_classification_scores_by_hand() -> None:
    # a: 3 images (1 right, 1 read as b, 1 without a face); b: 2 right; c: 1 without a face
    s = classification_scores([0, 0, 0, 1, 1, 2], [0, 1, -1, 1, 1, -1], ["a", "b", "c", "d"])
    assert s["n"] == 6 and s["n_no_face"] == 2
    assert s["accuracy"] == pytest.approx(3 / 6)
    assert s["per_class"]["a"] == {"n": 3, "recall": pytest.approx(1 / 3), "no_face": 1}
    assert s["per_class"]["b"]["recall"] == 1.0 and s["per_class"]["c"]["recall"] == 0.0
    assert s["per_class"]["d"] == {"n": 0, "recall": None, "no_face": 0}  # absent: no recall
    assert s["balanced_accuracy"] == pytest.approx((1 / 3 + 1 + 0) / 3)  # over a, b, c only
    conf = s["confusion"]
    assert conf["columns"] == ["a", "b", "c", "d", "none"] and conf["rows"] == ["a", "b", "c", "d"]
    assert conf["matrix"] == [[1, 1, 0, 0, 1], [0, 2, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]


def test_balanced_accuracy_matches_scikit_learn_without_missing_faces() -> None:
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(3)
    true = rng.integers(0, 5, 300)
    pred = np.where(rng.random(300) < 0.6, true, rng.integers(0, 5, 300))
    s = classification_scores(true, pred, list("abcde"))
    assert s["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(true, pred))
    assert s["accuracy"] == pytest.approx(float((true == pred).mean()))


def test_classification_scores_edge_cases() -> None:
    empty = classification_scores([], [], ["a", "b"])
    assert empty["n"] == 0 and empty["accuracy"] is None and empty["balanced_accuracy"] is None
    with pytest.raises(ValueError, match="same length"):
        classification_scores([0, 1], [0], ["a", "b"])
    with pytest.raises(ValueError, match="true labels"):
        classification_scores([2], [0], ["a", "b"])
    with pytest.raises(ValueError, match="predictions"):
        classification_scores([0], [-2], ["a", "b"])


def test_auc_by_hand_and_undefined() -> None:
    assert auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert auc([1.0, 1.0, 0.0], [True, False, False]) == pytest.approx(0.75)  # a tie counts 1/2
    assert auc([0.9, 0.1], [False, True]) == 0.0
    assert auc([0.3, 0.5], [True, True]) is None  # no negatives
    assert auc([], []) is None
    assert auc([math.nan, 0.2, 0.9], [True, False, True]) == 1.0  # NaN scores dropped first
    assert auc([math.nan, 0.2], [True, False]) is None  # ... which can empty one side
    with pytest.raises(ValueError, match="same length"):
        auc([0.1, 0.2], [True])


def test_restricted_argmax_leaves_other_classes_out() -> None:
    prob = np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2], [np.nan, np.nan, np.nan]])
    assert restricted_argmax(prob, [0, 1]).tolist() == [1, 0, -1]
    assert restricted_argmax(prob, [2, 0]).tolist() == [0, 1, -1]  # positions in the column list
    assert fraction([True, False, False, True]) == 0.5 and fraction([]) is None


# ---- the AU-pattern table and the classes ---------------------------------------------------


def test_au_patterns_name_real_aus_and_emotions() -> None:
    assert [au for au, _ in AU_PATTERNS] == ["AU12", "AU06", "AU04", "AU09", "AU01", "AU02",
                                             "AU26", "AU15"]
    for au, emotions in AU_PATTERNS:
        assert au in AU_NAMES and set(emotions) <= set(DEFAULT_CLASSES)
    assert dict(AU_PATTERNS)["AU04"] == ("anger", "sad")
    assert "contempt" not in DEFAULT_CLASSES and len(DEFAULT_CLASSES) == 7


def test_check_classes() -> None:
    assert check_classes(["Happiness", "angry", "neutral", "happy"]) == ("happy", "anger",
                                                                         "neutral")
    with pytest.raises(ValueError, match="--classes: 'joy' is not an emotion"):
        check_classes(["neutral", "joy"])
    with pytest.raises(ValueError, match="at least two"):
        check_classes(["neutral"])


# ---- folders, segments, videos --------------------------------------------------------------


def _touch(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def test_discover_labelled_folders(tmp_path: Path) -> None:
    _touch(tmp_path / "Happiness", ["b.jpg", "a.png", "notes.txt"])
    _touch(tmp_path / "angry", ["x.jpg"])
    _touch(tmp_path / "contempt", ["c1.jpg", "c2.jpg"])
    _touch(tmp_path / "misc", ["m.jpg"])
    (tmp_path / "labels.csv").write_text("path,emotion\n")
    s = discover_labelled(tmp_path, DEFAULT_CLASSES, name="tiny")
    assert s.name == "tiny"
    assert [p.name for p in s.images] == ["a.png", "b.jpg", "x.jpg"]  # folders, files by name
    assert s.labels == ["happy", "happy", "anger"]
    assert s.skipped == {"contempt": 2, "misc": 1}
    assert "not among --classes" in s.skipped_why["contempt"]
    limited = discover_labelled(tmp_path, DEFAULT_CLASSES, limit=1)
    assert limited.labels == ["happy", "anger"]
    with_contempt = discover_labelled(tmp_path, (*DEFAULT_CLASSES, "contempt"))
    assert with_contempt.labels.count("contempt") == 2
    with pytest.raises(FileNotFoundError, match="--labelled: no such folder"):
        discover_labelled(tmp_path / "nope", DEFAULT_CLASSES)
    with pytest.raises(ValueError, match="no images in subfolders"):
        discover_labelled(tmp_path / "misc", DEFAULT_CLASSES)
    with pytest.raises(ValueError, match="--labelled-limit"):
        discover_labelled(tmp_path, DEFAULT_CLASSES, limit=0)


def test_parse_segment() -> None:
    s = parse_segment("WolfgangLanger_Pexels.mp4@0-5.5=sad")
    assert (s.video, s.start_s, s.end_s, s.label) == ("WolfgangLanger_Pexels.mp4", 0.0, 5.5, "sad")
    t = parse_segment("dir@x/clip 1.mov@9.9-20=Happiness")  # '@' in the path: the last one counts
    assert (t.video, t.start_s, t.end_s, t.label) == ("dir@x/clip 1.mov", 9.9, 20.0, "happy")
    for bad, msg in (("clip.mp4=sad", "expected VIDEO@START-END=LABEL"),
                     ("clip.mp4@5-2=sad", "END must be after START"),
                     ("clip.mp4@1.2.3-4=sad", "numbers of seconds"),
                     ("clip.mp4@0-2=joy", "LABEL must be an emotion")):
        with pytest.raises(ValueError, match=msg):
            parse_segment(bad)
    assert EMOTION_NAMES.index(s.label) >= 0


def test_resolve_video(tmp_path: Path) -> None:
    media = tmp_path / "media"
    _touch(media, ["clip.mp4"])
    other = tmp_path / "other.mp4"
    other.write_bytes(b"")
    assert resolve_video("clip.mp4", [media]) == media / "clip.mp4"
    assert resolve_video("other.mp4", [other]) == other  # a --media file matched by name
    assert resolve_video(str(other), []) == other  # taken as given
    with pytest.raises(FileNotFoundError, match="--segment: video 'gone.mp4' not found"):
        resolve_video("gone.mp4", [media])


# ---- render gap statistics -------------------------------------------------------------------


def test_class_means_skip_missing_faces_and_unscored_labels() -> None:
    x = np.array([[0.2] * 51, [0.4] * 51, [np.nan] * 51, [0.9] * 51])
    s = BlendshapeSet("real", x, ["happy", "happy", "happy", None])
    means = class_means([s], ["neutral", "happy"])["real"]
    assert list(means) == ["happy"] and means["happy"]["n"] == 2  # no neutral face at all
    assert len(means["happy"]["mean"]) == 51
    assert all(v == pytest.approx(0.3) for v in means["happy"]["mean"].values())
