"""``norface-rt run``: analyse sources and publish every frame's results.

Every option is a field of :class:`~norface_rt.pipeline.options.PipelineOptions`,
:class:`~norface_rt.pipeline.options.SinkOptions` (shared with the Python API) or
:class:`RunOptions` (what only the command line decides): the parser is generated from them.

SIGINT, SIGTERM and SIGHUP end a run from its first instruction: during start-up (loading the
model, opening sources and outputs) what was opened is closed again and the run leaves with
nothing analysed; once it runs, within about 10 s whatever an output is doing: sources stop,
every stream's end-of-stream message goes to each output that can still take it, outputs get a
few seconds to write what they hold, and an output still blocked then (a pipe nobody reads) is
left behind with its losses counted. The exit status is 130 (SIGINT), 143 (SIGTERM) or 129
(SIGHUP, a terminal that closed); a second signal leaves at once. Progress and log lines go to
a stderr that may go away (:mod:`norface_rt.cli.stderr`): that never ends a run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from norface_rt.backends.registry import backend_spec
from norface_rt.cli.args import add_command, add_options, fail, options_from
from norface_rt.files import check_output_file
from norface_rt.flags import check_options, nonneg_float, nonneg_int, option, positive_float
from norface_rt.pipeline.options import (
    FUSED_REMOVED,
    OUTPUTS,
    PipelineOptions,
    SinkOptions,
    zmq_endpoint,
)
from norface_rt.wire.exits import ExitCode, exit_epilog
from norface_rt.wire.names import DEFAULT_ENDPOINT

if TYPE_CHECKING:
    from norface_rt.cli.progress import Progress
    from norface_rt.pipeline.runner import Pipeline
    from norface_rt.sinks.base import Sink

log = logging.getLogger("norface_rt")

RUN_EPILOG = exit_epilog({
    ExitCode.OK: "every stream ended cleanly",
    ExitCode.FAILED: "a stream ended with an error (frames before it were delivered) or an output "
                     "lost messages (dropped or failed: see the summary)",
}, note="Undecodable frames of a file are skipped and counted, not an error, unless "
        "--stop-on-decode-error. MediaPipe's native log lines are silenced unless --verbose.")

# Shutdown budget after a signal (seconds): stages, then outputs; with the final interrupt of
# stuck outputs the process is gone well within 10 s.
STOP_STAGES_S = 3.5
STOP_SINKS_S = 3.5


__all__ = ["RunOptions", "StartupInterrupted", "add_parser", "report", "run", "zmq_endpoint"]


@dataclass
class RunOptions:
    """What only the command line decides about a run: progress output, waiting for
    subscribers, the stats file, and an old flag kept for its error message."""

    fused: bool = option(
        False, flag="--fused",
        help="no longer available (model sets ship the two graphs only); kept so old command "
             "lines get a clear error")
    wait_subscribers: int = option(
        0, flag="--wait-subscribers", parse=nonneg_int, metavar="N", group=OUTPUTS,
        help="wait until N subscribers are connected before reading sources")
    wait_timeout: float = option(
        10.0, flag="--wait-timeout", parse=nonneg_float, group=OUTPUTS,
        help="longest wait for --wait-subscribers, in seconds")
    stats_json: str | None = option(
        None, flag="--stats-json", group=OUTPUTS, check=check_output_file,
        help="write the final per-stage stats to this JSON file")
    progress: bool = option(
        True, flag="--no-progress", inverted=True, help="no progress bar or progress lines")
    progress_interval: float = option(
        10.0, flag="--progress-interval", parse=positive_float, metavar="SECONDS",
        help="when stderr is not a terminal, print a progress line this often")


def _outputs_description() -> str:
    *others, last = SinkOptions.receivers()
    return (f"Without --zmq, a run writing any of {', '.join(others)} or {last} opens no PUB "
            f"socket; a run with none of them publishes on {DEFAULT_ENDPOINT}. Outputs are "
            "opened only once the model and the sources have opened.")


def add_parser(sub: Any) -> None:
    r = add_command(sub, "run", help="analyse video files, image folders, RTSP streams or webcams",
                    epilog=RUN_EPILOG)
    groups = {OUTPUTS: r.add_argument_group(OUTPUTS, _outputs_description())}
    # what to analyse and how, then where results go
    ungrouped: tuple[type, ...] = (PipelineOptions, RunOptions)
    for cls in ungrouped:
        add_options(r, cls, groups=groups, grouped=False)
    for cls in (SinkOptions, PipelineOptions, RunOptions):
        add_options(r, cls, groups=groups, grouped=True)


def _wait_for_subscribers(sinks: list[Sink], n: int, timeout: float, signals: _Signals) -> None:
    """Wait for ``n`` subscriptions on each publisher, in short steps, so a signal ends the
    wait at once."""
    import time

    from norface_rt.sinks.zmq_pub import ZmqPublisher

    for pub in (s for s in sinks if isinstance(s, ZmqPublisher)):
        deadline = time.monotonic() + timeout
        while not pub.wait_for_subscribers(n, min(0.2, max(0.0, deadline - time.monotonic()))):
            if signals.received:
                return
            if time.monotonic() >= deadline:
                log.warning("only some of %d subscribers connected within %.1f s; continuing",
                            n, timeout)
                break


def _open(opts: PipelineOptions, sink_opts: SinkOptions, cli: RunOptions
          ) -> tuple[Pipeline, list[Sink]]:
    """Build the pipeline: every option checked first, model and sources open next (fail
    fast), outputs only then, so a run that cannot start leaves no output files behind (what
    opened is closed again)."""
    from norface_rt.pipeline import create_pipeline, make_sinks

    sinks: list[Sink] = []

    def open_sinks(stream_ids: Sequence[str]) -> list[Sink]:
        also = [("--stats-json", cli.stats_json)] if cli.stats_json else []
        sinks.extend(make_sinks(sink_opts, stream_ids, landmarks=opts.landmarks,
                                blendshapes=opts.blendshapes, also_written=also))
        return sinks

    try:
        check_options(cli)
        opts.validate()
        sink_opts.validate()
        spec = backend_spec(opts.backend)
        if spec.builds_engines:
            from norface_rt.cli.build_engines import ensure_engines
            from norface_rt.paths import resolve_model_dir

            ensure_engines(resolve_model_dir(opts.model_dir), device=opts.device or spec.device or 0)
        return create_pipeline(opts, open_sinks), sinks
    except BaseException:
        for s in sinks:
            s.close()
        raise


def _announce(pipe: Pipeline, sinks: list[Sink], sink_opts: SinkOptions, cli: RunOptions,
              signals: _Signals) -> None:
    """Wait for subscribers when asked (only now: a missing model was reported without the
    wait), then say where results go and whether the model means anything."""
    if cli.wait_subscribers > 0:
        _wait_for_subscribers(sinks, cli.wait_subscribers, cli.wait_timeout, signals)
    if sink_opts.endpoint is not None:
        print(f"norface-rt: publishing on {sink_opts.endpoint}", file=sys.stderr)
    if sink_opts.http is not None:
        from norface_rt.sinks.web.sink import HttpViewSink

        for view in (s for s in sinks if isinstance(s, HttpViewSink)):
            print(f"norface-rt: live view on {view.url}"
                  + (" (add ?token=TOKEN)" if view.token_required else ""), file=sys.stderr)
    if not pipe.backend.config.trained:
        print("norface-rt: WARNING: this model is UNTRAINED (random weights); results are flagged "
              "'untrained' and carry no meaning.", file=sys.stderr)


def _progress(pipe: Pipeline, cli: RunOptions) -> Progress | None:
    if not cli.progress:
        return None
    from norface_rt.cli.progress import Progress, total_frames

    progress = Progress(total_frames([src.expected_frames for src in pipe.sources]),
                        sys.stderr, interval=cli.progress_interval)
    pipe.on_result = lambda _msg: progress.update(1)
    return progress


class StartupInterrupted(BaseException):  # noqa: N818  (a signal, like KeyboardInterrupt)
    """A signal arrived while the run was starting: unwinds start-up like KeyboardInterrupt
    (everything opened so far is closed on the way out)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Signals:
    """SIGINT / SIGTERM / SIGHUP for the whole of a run. Before the pipeline exists (loading
    the model, opening sources and outputs) the first one unwinds start-up
    (:class:`StartupInterrupted`); once :meth:`attach` has handed over the pipeline, it asks the
    pipeline to hurry (bounding the wait for outputs, also when it has begun) and ends the run.
    A second signal leaves at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.pipe: Pipeline | None = None
        self.received: list[int] = []
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for signum in self.SIGNALS:
            self._old[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for signum, old in self._old.items():
            signal.signal(signum, old)

    def attach(self, pipe: Pipeline) -> None:
        self.pipe = pipe
        if self.received:
            pipe.hurry(STOP_SINKS_S)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.received:  # a second signal: leave at once
            with contextlib.suppress(OSError):  # (stderr's reader may be gone)
                os.write(2, b"norface-rt: second signal, leaving at once\n")
            os._exit(ExitCode.for_signal(signum))
        self.received.append(signum)
        if self.pipe is None:
            raise StartupInterrupted(signum)
        self.pipe.hurry(STOP_SINKS_S)


def _drive(pipe: Pipeline, signals: _Signals) -> int:
    """Run until every stream ended, a signal came or the window asked to quit; then stop,
    giving outputs the time they need (or, after a signal, the shutdown budget)."""
    code: int = ExitCode.OK
    try:
        pipe.start()
        # A window's events must be handled on this (the main) thread: pump() does that while
        # it waits; without a window it only waits.
        while not pipe.wait(timeout=0.0):
            if signals.received or pipe.quit_requested:  # (q / Esc, or a closed --show window)
                break
            pipe.pump(0.02 if pipe.pumps else 0.2)
    except Exception as exc:
        code = fail(str(exc), ExitCode.FAILED)
    finally:
        if signals.received:
            pipe.stop(timeout=STOP_STAGES_S, sink_grace=STOP_SINKS_S)
        else:  # ended by itself: outputs write everything they hold while they make progress
            pipe.stop(timeout=5.0)
        if not pipe.alive_threads:  # never under a stage thread that is still inferring
            try:
                pipe.backend.close()  # a remote backend unregisters its shared memory
            except Exception:
                log.exception("closing the backend failed")
        pipe.pump(0.0)  # windows are destroyed on the thread that made them
    return ExitCode.for_signal(signals.received[0]) if signals.received else code


def run(args: argparse.Namespace) -> int:
    with _Signals() as signals:  # from the first instruction: loading the model takes seconds
        cli = options_from(RunOptions, args)
        if cli.fused:
            return fail(FUSED_REMOVED)
        opts = options_from(PipelineOptions, args)
        sink_opts = options_from(SinkOptions, args)
        try:
            pipe, sinks = _open(opts, sink_opts, cli)
            signals.attach(pipe)
        except StartupInterrupted as exc:
            print(f"norface-rt: {exc} during start-up: nothing was analysed",
                  file=sys.stderr)
            return ExitCode.for_signal(exc.signum)
        except (OSError, ValueError, RuntimeError, ImportError) as exc:  # said plainly, exit 2
            return fail(str(exc))
        _announce(pipe, sinks, sink_opts, cli, signals)
        progress = _progress(pipe, cli)
        try:
            code = _drive(pipe, signals)
        finally:
            if progress is not None:
                progress.close()
        code = report(pipe, cli.stats_json, code)
    if pipe.stuck_sinks or pipe.alive_threads:
        # A thread blocked in write(2) on a pipe nobody reads can be neither woken nor joined,
        # and interpreter shutdown would wait on the file it holds: leave without it.
        sys.stderr.flush()
        os._exit(code)
    return code


def report(pipe: Pipeline, stats_json: str | os.PathLike[str] | None, code: int) -> int:
    """Print the summary (per-stage times, streams, outputs), write ``stats_json``, and return
    the exit status: 1 when it was 0 but a stream ended with an error or an output lost
    messages."""
    snap = pipe.stats.snapshot()
    print(pipe.stats.summary_table(), file=sys.stderr)
    if stats_json:
        Path(stats_json).write_text(json.dumps(snap, indent=2) + "\n")
    for sid, s in snap["streams"].items():
        if s.get("skipped_frames"):
            print(f"norface-rt: stream {sid}: {s['skipped_frames']} undecodable frame(s) skipped "
                  "(their indices are in its end-of-stream message)", file=sys.stderr)
    for w in pipe.workers:
        if w.name == "push" and not getattr(w.sink, "acknowledged", True):
            print(f"norface-rt: --push without --push-ack: {w.written} message(s) handed to PULL "
                  "consumers, none confirmed (what a consumer held when it died is lost "
                  "unseen; docs/reliability.md, Guarantees)", file=sys.stderr)
    if code == ExitCode.OK and any(s.get("error") for s in snap["streams"].values()):
        code = ExitCode.FAILED
    losses = {name: n for name, n in pipe.sink_losses.items() if n}
    if losses:
        stuck = set(pipe.stuck_sinks)
        print("norface-rt: output(s) lost messages: " + ", ".join(
            f"{name} {n}" + (" (stuck, abandoned)" if name in stuck else "")
            for name, n in losses.items()), file=sys.stderr)
        if code == ExitCode.OK:
            code = ExitCode.FAILED
    return code
