"""``results.json`` (everything) and ``results.md`` (the tables a document quotes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.gpu_kit.part import _plain

ERR_KEYS = ("au_prob", "au_intensity", "emotion_prob")


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _errs(e: dict[str, float] | None) -> list[str]:
    return [_f((e or {}).get(k), ".1e") for k in ERR_KEYS]


def _header(results: dict[str, Any]) -> list[str]:
    kit = results["kit"]
    env = results["sections"].get("environment", {})
    lines = ["# norface-rt GPU kit: results", ""]
    if kit["dry_run"] or not kit["device"].startswith("cuda"):
        lines += [f"> **{'Dry run' if kit['dry_run'] else 'Run'} on `{kit['device']}`: these are "
                  "not GPU figures.** They show that every part of the kit ran; quote only a "
                  "run on an NVIDIA GPU.", ""]
    lines += [f"- date (UTC): {kit['started']}; the kit ran {kit.get('seconds', '?')} s",
              f"- command: `{kit['command']}`"]
    if env.get("status") == "ok":
        torch = env["torch"]
        dev = torch["devices"][0] if torch["devices"] else {}
        gpu = env["gpu"] + (f" ({dev['memory_gib']} GiB, sm {dev['capability']})" if dev else "")
        m, v = env["machine"], env["versions"]
        lines += [
            f"- GPU: {gpu}; driver {env.get('driver') or '-'}; torch {torch['version']} "
            f"(CUDA build {torch['cuda_build'] or 'none'}, cuDNN {torch['cudnn'] or '-'})",
            f"- CPU: {m['cpu']}, {m['cores']} cores; Python {env['python']['version']}; "
            + ", ".join(f"{k} {v[k]}" for k in ("numpy", "onnxruntime") if v.get(k)),
            f"- commit: {env['git'].get('commit') or env['git'].get('note')}",
        ]
    model = results["sections"].get("model", {}).get("model")
    if model:
        lines.append(f"- model: {model['model_id']} (size {model['size']}, {model['img_size']} px)")
    return lines + [""]


def _sections(results: dict[str, Any]) -> list[str]:
    lines = ["| section | status | seconds |", "|---|---|---:|"]
    for name, sec in results["sections"].items():
        lines.append(f"| {name} | {sec.get('status', '-')} | {_f(sec.get('seconds'), '.1f')} |")
    return lines + [""]


def _tests(sec: dict[str, Any]) -> list[str]:
    lines = ["## GPU tests", ""]
    if "command" in sec:
        lines += [f"`{sec['command']}`", ""]
    counts = sec.get("counts")
    if counts is None:
        return lines + [f"No outcomes: {sec.get('status')}", ""]
    errors = sec.get("collection_errors", [])
    lines += [", ".join(f"{k} {v}" for k, v in counts.items())
              + f"; test modules not importable here: {len(errors)}", ""]
    lines += ["| test | outcome | s | message |", "|---|---|---:|---|"]
    for t in sec.get("tests", []):
        msg = t["message"].replace("|", "\\|")
        lines.append(f"| `{t['id']}` | {t['outcome']} | {t['seconds']:.2f} | {msg} |")
    if errors:
        lines += ["", "Not importable here (their tests did not run): "
                  + "; ".join(f"`{e['module']}` ({e['reason']})" for e in errors)]
    return lines + [""]


def _model(sec: dict[str, Any]) -> list[str]:
    lines = ["## Model alone (`torch-cuda`)", ""]
    if "device" in sec:
        lines += [f"Device `{sec['device']}`, {'fp16' if sec['fp16'] else 'fp32'}, buckets "
                  f"{sec['buckets']}. Input: {sec['input']}. Error columns: max abs difference "
                  f"from {sec['reference']} on the same crops. Median ms: the whole `infer` call "
                  "(upload, replay, download); device ms: CUDA events around the two networks "
                  "(on the CPU: wall time).", ""]
    lines += ["| variant | batch | runs | median ms | p90 ms | device ms | faces/s "
              "| max abs err au_prob | au_intensity | emotion_prob |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sec.get("rows", []):
        name = r["variant"] + ("" if r["cuda_graphs"] or r["variant"] == "eager" else " (n/a: eager)")
        lines.append(f"| {name} | {r['batch']} | {r['runs']} | {r['median_ms']:.2f} "
                     f"| {r['p90_ms']:.2f} | {r['device_median_ms']:.2f} | {r['faces_per_s']:.1f} | "
                     + " | ".join(_errs(r["max_abs_err"])) + " |")
    for v in sec.get("variants", []):
        mem = v.get("cuda_max_memory_allocated_mib")
        lines.append(f"\n{v['variant']}: loaded in {v['load_s']} s (graph capture "
                     f"{v.get('capture_s', 0):.2f} s)" + (f", peak CUDA memory {mem} MiB" if mem else ""))
    return lines + [""]


def _end_to_end(sec: dict[str, Any]) -> list[str]:
    lines = ["## End to end (replayed frames and landmarks, aligned on the device, in-process sink)",
             ""]
    inp = sec.get("inputs")
    if inp:
        clips = ", ".join(f"{c['name']} {c['size'][0]}x{c['size'][1]} {c['frames']} frames "
                          f"{c['faces']} faces {c['fps']:.0f} fps" for c in inp["clips"])
        lines += [f"Inputs: {clips}. Streams take the clips in turn (1 stream: the first).",
                  ""]
    check = sec.get("device_align_check")
    if check:
        a, e = check["align_err"], check["max_abs_err"]
        lines += [f"Device alignment check on {check['faces']} faces of {check['frames']} frames. "
                  "Warped on the device vs OpenCV's uint8 crops, same backend: max abs err "
                  f"au_prob {a['au_prob']:.1e}, au_intensity {a['au_intensity']:.1e}, "
                  f"emotion_prob {a['emotion_prob']:.1e}. Whole device path vs OpenCV crops and "
                  f"PyTorch fp32: au_prob {e['au_prob']:.1e}, au_intensity "
                  f"{e['au_intensity']:.1e}, emotion_prob {e['emotion_prob']:.1e}.", ""]
    lines += [f"Latency: capture to arrival in the sink; the first {sec.get('warmup_s', '?')} s "
              "of each run left out. Paced: each stream at its clip's frame rate (drop-oldest); "
              "unpaced: as fast as taken (lossless).", "",
              "| mode | streams | offered frames/s | faces/s | frames/s | p50 ms | p99 ms "
              "| max ms | frames published | dropped | failed |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sec.get("rows", []):
        if "error" in r and "faces_per_s" not in r:
            lines.append(f"| {r['mode']} | {r['streams']} | error: {r['error']} |||||||||")
            continue
        lines.append(
            f"| {r['mode']} | {r['streams']} | {_f(r['offered_frames_per_s'], '.0f')} "
            f"| {r['faces_per_s']:.1f} | {r['frames_per_s']:.1f} | {r['latency_p50_ms']:.1f} "
            f"| {r['latency_p99_ms']:.1f} | {r['latency_max_ms']:.1f} | {r['frames_published']} "
            f"| {r['frames_dropped']} | {r['frames_failed']} |")
    return lines + [""]


def render_markdown(results: dict[str, Any]) -> str:
    s = results["sections"]
    lines = _header(results) + _sections(results)
    if "tests" in s:
        lines += _tests(s["tests"])
    if "model" in s:
        lines += _model(s["model"])
    if "end_to_end" in s:
        lines += _end_to_end(s["end_to_end"])
    return "\n".join(lines)


def write(results: dict[str, Any], out: Path) -> None:
    """Both files, each written whole and renamed into place (a kill leaves the previous one)."""
    for name, text in (("results.json", json.dumps(results, indent=2, default=_plain) + "\n"),
                       ("results.md", render_markdown(results) + "\n")):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)
