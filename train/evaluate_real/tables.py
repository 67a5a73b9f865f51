"""Markdown of the labelled sections (sets, London, segments, renders vs real), written to be
pasted into a model card as they are, and the side-by-side table of two reports."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from train.evaluate_real.labelled import LONDON_AUS
from train.evaluate_real.scoring import NO_FACE

AU_PATTERN_SOURCE = ("docs/au_mapping.md (EMFACS prototypes): AU12 and AU06 rise for happy, AU04 "
                     "for anger and sad, AU09 for disgust, AU01, AU02 and AU26 for surprise, AU15 "
                     "for sad")


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a table: ``–`` for undefined (None/NaN)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _head(names: list[str], align_first: int = 1) -> list[str]:
    return [_row(names), "|" + "---|" * align_first + "---:|" * (len(names) - align_first)]


def _skipped(s: Mapping[str, Any]) -> str:
    if not s["skipped"]:
        return "none"
    return ", ".join(f"`{k}/` {v} ({s['skipped_why'][k]})" for k, v in s["skipped"].items())


# ---- labelled sets ------------------------------------------------------------------------------

def labelled_markdown(sets: list[Mapping[str, Any]]) -> list[str]:
    if not sets:
        return []
    classes = sets[0]["classes"]
    lines = ["", "## Labelled real faces", "",
             f"Emotions scored {len(classes)}-way over {', '.join(classes)} (only these outputs "
             "compete for the top emotion); the largest face of each image is scored and an image "
             "where no face is found counts as wrong (prediction *none*). Balanced accuracy = mean "
             "recall over the classes present.", ""]
    teachers = list(dict.fromkeys(t for s in sets for t in s.get("teachers", {})))
    if teachers:
        lines += ["Teachers (`--teachers`, train/teachers) are scored on the very same faces: "
                  "each crops its own box from the face's MediaPipe landmarks; a teacher without a "
                  "class gives it no probability.", ""]
        lines += _head(["set", "scored by", "images", "no face", "accuracy",
                        "balanced accuracy"], align_first=2)
        for s in sets:
            lines.append(_row([s["name"], "**model**", s["n"], s["n_no_face"],
                               fmt(s["accuracy"]), fmt(s["balanced_accuracy"])]))
            for t, v in s.get("teachers", {}).items():
                lines.append(_row([s["name"], f"teacher `{t}`", v["n"], v["n_no_face"],
                                   fmt(v["accuracy"]), fmt(v["balanced_accuracy"])]))
    else:
        lines += _head(["set", "images", "no face", "accuracy", "balanced accuracy"])
        for s in sets:
            lines.append(_row([s["name"], s["n"], s["n_no_face"], fmt(s["accuracy"]),
                               fmt(s["balanced_accuracy"])]))
    for s in sets:
        lines += ["", f"### `{s['name']}`", "",
                  f"Skipped folders: {_skipped(s)}. Unreadable images: {s['n_unreadable']}.", ""]
        st = s.get("teachers", {})
        lines += _head(["class", "images", "recall", *(f"recall `{t}`" for t in st), "no face"])
        for c, v in s["per_class"].items():
            lines.append(_row([c, v["n"], fmt(v["recall"]),
                               *(fmt(tv["per_class"][c]["recall"]) for tv in st.values()),
                               v["no_face"]]))
        conf = s["confusion"]
        lines += ["", "Confusion matrix (rows: true class, columns: top emotion; *none* = no face "
                  "found):", ""]
        lines += _head(["true \\ predicted", *conf["columns"]])
        for r, counts in zip(conf["rows"], conf["matrix"]):
            lines.append(_row([r, *counts]))
        if s.get("confusion_png"):
            lines += ["", f"![confusion matrix of {s['name']}]({Path(s['confusion_png']).name})"]
        lines += ["", "AU patterns: AUC of each AU separating the images of the emotions it rises "
                  f"for from all other scored images with a face ({AU_PATTERN_SOURCE}). MediaPipe "
                  "= its blendshapes on the same face through the synthetic-label rules "
                  "(train/synth/labels.py); *flat* = MediaPipe barely moves that AU here (this "
                  "bundle scores cheekSquint and noseSneer, hence AU06 and AU09, at about 0), so "
                  "its AUC is about 0.5 by construction.", ""]
        lines += _head(["AU", "rises for", "n+", "n−", "ours (probability)", "ours (intensity)",
                        "MediaPipe"], align_first=2)
        for au, v in s["au_patterns"].items():
            mp = fmt(v["auc_mediapipe"]) + (" (flat)" if v["mediapipe_flat"] else "")
            lines.append(_row([au, " + ".join(v["rises_for"]), v["n_pos"], v["n_neg"],
                               fmt(v["auc_prob"]), fmt(v["auc_intensity"]), mp]))
    return lines


# ---- London -------------------------------------------------------------------------------------

def _london_row(label: str, g: Mapping[str, Any]) -> str:
    cells: list[Any] = [label, g["people"], g["n_neutral"], fmt(g["neutral_as_neutral"], 2),
                        g["n_smiling"], fmt(g["smiling_as_happy"], 2), g["n_no_face"]]
    for au in LONDON_AUS:
        v = g["aus"][au]
        cells += [f"{fmt(v['auc_prob'], 2)} / {fmt(v['auc_intensity'], 2)}",
                  fmt(v["auc_mediapipe"], 2) + (" (flat)" if v["mediapipe_flat"] else "")]
    return _row(cells)


def london_markdown(lon: Mapping[str, Any] | None) -> list[str]:
    if not lon:
        return []
    lines = ["", "## London set, held-out people", "",
             f"The {lon['people']} people of the Face Research Lab London Set (CC BY 4.0) held out "
             "from every use (ids divisible by 3: never textures, calibration or training), "
             f"{lon['n_images']} photos: each person's neutral and smiling photo. Top emotion "
             f"{len(lon['classes'])}-way over {', '.join(lon['classes'])}; a photo where no face "
             "is found counts as wrong. AUCs: smiling vs neutral photos with a face; ours as "
             "probability / intensity, MediaPipe through the label rules (AU12 from mouthSmile, "
             "AU06 from cheekSquint, which this bundle scores at about 0: *flat*).", ""]
    heads = ["group", "people", "neutral photos", "read neutral", "smiling photos", "read happy",
             "no face"]
    for au in LONDON_AUS:
        heads += [f"{au} AUC ours", f"{au} AUC MediaPipe"]
    lines += _head(heads)
    lines.append(_london_row("**all**", lon["all"]))
    for key, groups in lon["groups"].items():
        for name, g in groups.items():
            lines.append(_london_row(f"{key.replace('_', ' ')}: {name}", g))
    teachers = list(lon["all"].get("teachers", {}))
    if teachers:
        lines += ["", "Model and teachers on the same photos: neutral read neutral / smiling read "
                  "happy.", ""]
        lines += _head(["group", "model", *(f"teacher `{t}`" for t in teachers)])
        groups = [("**all**", lon["all"])] + [(f"{key.replace('_', ' ')}: {name}", g)
                                               for key, gs in lon["groups"].items()
                                               for name, g in gs.items()]
        for label, g in groups:
            lines.append(_row([label, _pair(g), *(_pair(g["teachers"][t]) for t in teachers)]))
    return lines


def _pair(g: Mapping[str, Any]) -> str:
    return f"{fmt(g['neutral_as_neutral'], 2)} / {fmt(g['smiling_as_happy'], 2)}"


# ---- segments -----------------------------------------------------------------------------------

def segments_markdown(seg: Mapping[str, Any] | None) -> list[str]:
    if not seg or not seg["segments"]:
        return []
    rows = seg["segments"]
    classes = [c for c in rows[0]["read_as"] if c != NO_FACE]
    lines = ["", "## Labelled video segments", "",
             "Video mode with the per-track baseline, as `norface-rt run` reads the whole video "
             "from its start; the frames inside each segment are scored (largest face per frame). "
             "Columns: share of the segment's frames whose top emotion "
             f"({len(classes)}-way) is each class; *none* = no face found.", ""]
    lines += _head(["segment", "label", "frames", "with face", "read as label", *classes,
                    NO_FACE], align_first=2)
    for s in rows:
        lines.append(_row([f"`{s['segment']}`", s["label"], s["frames"], s["frames_with_face"],
                           fmt(s["read_as_label"], 2),
                           *(fmt(s["read_as"][c], 2) for c in [*classes, NO_FACE])]))
    teachers = list(rows[0].get("teachers", {}))
    if teachers:
        lines += ["", "Model and teachers on the same frames: share read as the label / read as "
                  "happy.", ""]
        lines += _head(["segment", "label", "model", *(f"teacher `{t}`" for t in teachers)],
                       align_first=2)
        for s in rows:
            def cell(v: Mapping[str, Any]) -> str:
                return f"{fmt(v['read_as_label'], 2)} / {fmt(v['read_as'].get('happy'), 2)}"

            lines.append(_row([f"`{s['segment']}`", s["label"], cell(s),
                               *(cell(s["teachers"][t]) for t in teachers)]))
    emos = list(rows[0]["mean_prob"])
    lines += ["", "Mean emotion probabilities over the segment's frames with a face:", ""]
    lines += _head(["segment", *emos])
    for s in rows:
        lines.append(_row([f"`{s['segment']}`", *(fmt(s["mean_prob"][e], 2) for e in emos)]))
    if seg["happy_vs_sad"]:
        lines += ["", "Smile separating the happy frames from the sad frames of the same video "
                  "(AUC; MediaPipe = mean of mouthSmileLeft and mouthSmileRight):", ""]
        lines += _head(["video", "happy frames", "sad frames", "AU12 ours (intensity)",
                        "AU12 ours (probability)", "MediaPipe mouthSmile"])
        for v in seg["happy_vs_sad"]:
            lines.append(_row([Path(v["video"]).name, v["n_happy"], v["n_sad"],
                               fmt(v["auc_au12_intensity"]), fmt(v["auc_au12_prob"]),
                               fmt(v["auc_mediapipe_smile"])]))
    return lines


# ---- renders vs real faces ----------------------------------------------------------------------

def render_gap_markdown(gap: Mapping[str, Any] | None) -> list[str]:
    if not gap:
        return []
    r = gap["renders"]
    cols = gap["summary_blendshapes"]
    lines = ["", "## Renders vs real faces, as MediaPipe sees them", "",
             f"Renders: `{r['path']}`, {r['n']} samples, {r['n_usable']} used ({r['n_no_face']} "
             f"not found by MediaPipe, {r['n_left_out']} labelled ambiguous or outside the "
             "classes). Real sets: " + ", ".join(f"{s['name']} ({s['n_usable']} faces)"
                                                for s in gap["real_sets"]) + ".", "",
             "Class means of MediaPipe blendshapes (left side; report.json has all 51):", ""]
    lines += _head(["class", "domain", "n", *(c.removesuffix("Left") for c in cols)],
                   align_first=2)
    for c in gap["classes"]:
        for domain, per in gap["class_means"].items():
            if c in per:
                lines.append(_row([c, domain, per[c]["n"],
                                   *(fmt(per[c]["mean"][b], 2) for b in cols)]))
    t = gap["transfer"]
    trained = ", ".join(f"{k} {v}" for k, v in t["trained_on"]["classes"].items())
    lines += ["", f"Transfer score: {t['model']} on the renders' {t['features']} blendshapes "
              f"({t['trained_on']['n']} renders: {trained}), scored on each real set (faces "
              "MediaPipe found). A generator change should raise the balanced accuracy.", ""]
    classes = gap["classes"]
    lines += _head(["real set", "faces", "no face", "accuracy", "balanced accuracy",
                    *(f"recall {c}" for c in classes)])
    for name, v in t["per_set"].items():
        lines.append(_row([name, v["n"], v["n_no_face"], fmt(v["accuracy"]),
                           fmt(v["balanced_accuracy"]),
                           *(fmt(v["per_class_recall"][c], 2) for c in classes)]))
    return lines


# ---- two reports side by side ------------------------------------------------------------------

def figures(report: Mapping[str, Any]) -> dict[str, str]:
    """The labelled figures of one report, keyed by what they measure (for side by side)."""
    out: dict[str, str] = {}
    for s in report.get("labelled") or []:
        k = s["name"]
        out[f"{k}: images (no face)"] = f"{s['n']} ({s['n_no_face']})"
        out[f"{k}: accuracy"] = fmt(s["accuracy"])
        out[f"{k}: balanced accuracy"] = fmt(s["balanced_accuracy"])
        for c, v in s["per_class"].items():
            out[f"{k}: recall {c}"] = fmt(v["recall"], 2)
        for au, v in s["au_patterns"].items():
            out[f"{k}: AUC {au} ({' + '.join(v['rises_for'])}), probability / intensity"] = \
                f"{fmt(v['auc_prob'], 2)} / {fmt(v['auc_intensity'], 2)}"
        for t, v in s.get("teachers", {}).items():
            out[f"{k}: teacher {t}: accuracy / balanced accuracy"] = \
                f"{fmt(v['accuracy'])} / {fmt(v['balanced_accuracy'])}"
    lon = report.get("london")
    if lon:
        groups = [("all", lon["all"])] + [(f"{key.replace('_', ' ')} {name}", g)
                                          for key, gs in lon["groups"].items()
                                          for name, g in gs.items()]
        for label, g in groups:
            k = f"London held-out, {label}"
            out[f"{k}: people (no face)"] = f"{g['people']} ({g['n_no_face']})"
            out[f"{k}: neutral read neutral / smiling read happy"] = \
                f"{fmt(g['neutral_as_neutral'], 2)} / {fmt(g['smiling_as_happy'], 2)}"
            for au in LONDON_AUS:
                v = g["aus"][au]
                out[f"{k}: AUC {au} smiling vs neutral, probability / intensity"] = \
                    f"{fmt(v['auc_prob'], 2)} / {fmt(v['auc_intensity'], 2)}"
            for t, v in g.get("teachers", {}).items():
                out[f"{k}: teacher {t}: neutral read neutral / smiling read happy"] = _pair(v)
    seg = report.get("segments")
    if seg:
        for s in seg["segments"]:
            k = f"segment `{s['segment']}`"
            out[f"{k}: read as {s['label']}"] = fmt(s["read_as_label"], 2)
            if s["label"] != "happy" and "happy" in s["read_as"]:
                out[f"{k}: read as happy"] = fmt(s["read_as"]["happy"], 2)
            for t, v in s.get("teachers", {}).items():
                out[f"{k}: teacher {t}: read as {s['label']}"] = fmt(v["read_as_label"], 2)
        for v in seg["happy_vs_sad"]:
            out[f"{Path(v['video']).name}: AUC AU12 happy vs sad frames, intensity"] = \
                fmt(v["auc_au12_intensity"])
    return out


def side_by_side(a: Mapping[str, Any], b: Mapping[str, Any], *, titles: tuple[str, str] | None = None
                 ) -> str:
    """One markdown table with both reports' labelled, London and segment figures; a figure only
    one report has shows – on the other side."""
    ta, tb = titles or (a["model"]["model_id"], b["model"]["model_id"])
    if ta == tb:
        ta, tb = f"{ta} (A)", f"{tb} (B)"
    fa, fb = figures(a), figures(b)
    keys = list(dict.fromkeys([*fa, *fb]))
    lines = [f"# Real-face evaluation side by side: `{ta}` vs `{tb}`", ""]
    for t, r in ((ta, a), (tb, b)):
        m = r["model"]
        lines.append(f"* `{t}`: model id `{m['model_id']}` (trained: {m['trained']}), backend "
                     f"{m['backend']}, report of {r.get('created', '?')}")
    lines += ["", "Figures as defined in each report.md (no face counts as wrong; AUCs of our "
              "AU outputs).", ""]
    lines += _head(["measure", f"`{ta}`", f"`{tb}`"])
    for k in keys:
        lines.append(_row([k, fa.get(k, "–"), fb.get(k, "–")]))
    if not keys:
        lines.append(_row(["(neither report has labelled figures)", "–", "–"]))
    return "\n".join(lines) + "\n"
