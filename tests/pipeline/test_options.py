"""Run options are declared once: each is a field of an options class carrying its default, flag
and help; the CLI's parser is generated from the fields and the Python API forwards to the same
class, so neither can hold a default of its own."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from typing import Any

import pytest

from norface_rt.api import Analyzer
from norface_rt.cli import build_parser
from norface_rt.cli.run import RunOptions
from norface_rt.flags import OPTION, Option, default_of, options_of
from norface_rt.pipeline.options import PipelineOptions, SinkOptions, zmq_endpoint
from norface_rt.wire.names import DEFAULT_ENDPOINT

RUN_CLASSES = (PipelineOptions, SinkOptions, RunOptions)


def _command(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]  # type: ignore[no-any-return]


def _options(*args: str) -> tuple[PipelineOptions, SinkOptions, RunOptions]:
    from norface_rt.cli.args import options_from

    ns = build_parser().parse_args(["run", *args])
    return (options_from(PipelineOptions, ns), options_from(SinkOptions, ns),
            options_from(RunOptions, ns))


def test_every_flag_of_run_is_exactly_one_field() -> None:
    flags = [opt.flag for cls in RUN_CLASSES for _, opt in options_of(cls)]
    assert len(flags) == len(set(flags)), sorted(f for f in flags if flags.count(f) > 1)
    names = [f.name for cls in RUN_CLASSES for f, _ in options_of(cls)]
    assert len(names) == len(set(names)), "a field declared in two options classes"
    parsed = {s for a in _command("run")._actions for s in a.option_strings} | {
        a.dest for a in _command("run")._actions if not a.option_strings}
    assert parsed - {"-h", "--help", "-v", "--verbose"} == set(flags)


def test_the_parser_reads_each_default_from_its_field() -> None:
    pipeline, sinks, cli = _options("clip.mp4")
    assert pipeline == PipelineOptions(sources=["clip.mp4"])
    assert sinks == SinkOptions() and cli == RunOptions()
    # and every option's --help states the field's default, not a copy of it
    actions = {a.dest: a for a in _command("run")._actions}
    for cls in RUN_CLASSES:
        for f, opt in options_of(cls):
            if opt.positional or opt.inverted or f.type == "bool":
                continue
            assert actions[f.name].default == default_of(f), f.name


def test_a_changed_default_reaches_the_cli_without_touching_it(monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    field = next(f for f, _ in options_of(PipelineOptions) if f.name == "max_faces")
    monkeypatch.setattr(field, "default", 7)
    ns = _command("run").parse_args(["clip.mp4"])
    assert ns.max_faces == 7
    assert _command("normalize").parse_args(["x", "--out", "o"]).max_faces == 7


def test_switches_and_inverted_switches() -> None:
    pipeline, sinks, cli = _options("a.mp4", "b.mp4", "--no-baseline", "--stop-on-decode-error",
                                    "--no-progress", "--landmarks", "--show", "--stream-id", "x",
                                    "--stream-id", "y", "--push-policy", "drop", "--smooth", "0.5")
    assert (pipeline.baseline, pipeline.skip_corrupt, cli.progress) == (False, False, False)
    assert pipeline.landmarks and sinks.show and pipeline.stream_ids == ["x", "y"]
    assert sinks.push_policy == "drop" and pipeline.smooth == 0.5
    assert list(pipeline.sources) == ["a.mp4", "b.mp4"]


def test_the_api_forwards_to_the_same_class() -> None:
    code = Analyzer.__init__.__code__
    # (self, model_dir, landmarker, **options): no option default of its own
    assert code.co_argcount == 3 and code.co_flags & inspect.CO_VARKEYWORDS
    shown = dict(inspect.signature(Analyzer).parameters)
    # the analyzer's own switches (what it shows and keeps on stderr), not run options
    own = {name: shown.pop(name) for name in ("progress", "native_logs")}
    assert all(p.default is False and p.kind is p.KEYWORD_ONLY for p in own.values())
    api = {f.name: f for cls in (PipelineOptions, SinkOptions) for f, opt in options_of(cls)
           if opt.api}
    assert set(shown) == set(api) == {*PipelineOptions.api_options(), *SinkOptions.api_options()}
    for name, p in shown.items():
        assert p.default == default_of(api[name]), name
    assert {"backend", "device", "threads", "max_faces", "max_batch", "queue_size", "tiling",
            "baseline", "smooth"} <= set(api)
    # of the outputs, only the live view: the caller's loop receives the results
    assert set(SinkOptions.api_options()) == {"http", "http_token", "http_fps", "allow_remote"}


def test_the_api_refuses_an_option_it_does_not_take() -> None:
    with pytest.raises(TypeError, match=r"unexpected option\(s\) \['realtime'\]"):
        Analyzer(realtime=True)
    with pytest.raises(ValueError, match="--max-faces must be in"):  # the options' own check
        Analyzer(max_faces=100)
    # the live view's options are checked by the same class, before the model is loaded
    with pytest.raises(ValueError, match="not a loopback address.*--allow-remote"):
        Analyzer(http="0.0.0.0:8080")
    with pytest.raises(ValueError, match=r"--http-fps must be in \(0, 1000\], got 0"):
        Analyzer(http="127.0.0.1:0", http_fps=0)
    with pytest.raises(TypeError, match=r"unexpected option\(s\) \['jsonl'\]"):
        Analyzer(jsonl="out.jsonl")


def test_the_default_output_rule_is_the_options() -> None:
    assert SinkOptions().endpoint == DEFAULT_ENDPOINT
    assert SinkOptions(jsonl="r.jsonl").endpoint is None  # a file run opens no PUB socket
    assert SinkOptions(push="tcp://127.0.0.1:6001").endpoint is None
    assert SinkOptions(metrics_port=9400).endpoint == DEFAULT_ENDPOINT  # metrics receive nothing
    assert SinkOptions(jsonl="r.jsonl", zmq="tcp://127.0.0.1:6000").endpoint == "tcp://127.0.0.1:6000"
    assert SinkOptions(zmq="None").endpoint is None and not SinkOptions(zmq="none").publishes
    assert SinkOptions.receivers() == ("--jsonl", "--csv", "--overlay", "--show", "--http",
                                       "--nats", "--push")
    assert zmq_endpoint(None, files=False) == DEFAULT_ENDPOINT


def _field_options(cls: type) -> list[tuple[str, Any]]:
    return [(f.name, f.metadata.get(OPTION)) for f in dataclasses.fields(cls)]


def test_every_field_but_the_api_only_ones_is_an_option() -> None:
    for cls in RUN_CLASSES:
        bare = [name for name, opt in _field_options(cls) if not isinstance(opt, Option)]
        assert bare == (["source_kwargs"] if cls is PipelineOptions else []), (cls, bare)


def test_bench_reads_its_defaults_from_bench_options() -> None:
    from pathlib import Path

    from norface_rt.cli.args import options_from
    from norface_rt.tools.bench import BenchOptions

    ns = _command("bench").parse_args(["--out", "o"])
    assert options_from(BenchOptions, ns, model_dir=Path(".")) == BenchOptions(model_dir=Path("."))
