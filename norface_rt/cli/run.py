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
    GROUPS,
    OUTPUTS,
    TRANSPORT,
    PipelineOptions,
    SinkOptions,
    zmq_endpoint,
)
from norface_rt.sinks.files import STDOUT
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
    """What only the command line decides about a run: what the terminal shows (progress, the
    end-of-run line, the latency table), waiting for subscribers and the stats file."""

    wait_subscribers: int = option(
        0, flag="--wait-subscribers", parse=nonneg_int, metavar="N", group=TRANSPORT,
        help="wait until N subscribers are connected before reading sources")
    wait_timeout: float = option(
        10.0, flag="--wait-timeout", parse=nonneg_float, group=TRANSPORT,
        help="longest wait for --wait-subscribers, in seconds")
    quiet: bool = option(
        False, flag="--quiet", group=OUTPUTS,
        help="print only warnings and errors (no progress, no summary lines)")
    stats: bool = option(
        False, flag="--stats", group=OUTPUTS,
        help="print the per-stage latency table and each output's counters at the end")
    stats_json: str | None = option(
        None, flag="--stats-json", group=OUTPUTS, check=check_output_file,
        help="write the final per-stage stats to this JSON file")
    progress: bool = option(
        True, flag="--no-progress", inverted=True, group=OUTPUTS,
        help="no progress bar or progress lines")
    progress_interval: float = option(
        10.0, flag="--progress-interval", parse=positive_float, metavar="SECONDS", group=OUTPUTS,
        help="when stderr is not a terminal, print a progress line this often")


def _outputs_description() -> str:
    *others, last = SinkOptions.receivers()
    return (f"Without --zmq, a run writing any of {', '.join(others)} or {last} opens no PUB "
            f"socket; a run with none of them publishes on {DEFAULT_ENDPOINT}. Outputs are "
            "opened only once the model and the sources have opened.")


def add_parser(sub: Any) -> None:
    r = add_command(sub, "run", help="analyse video files, image folders, RTSP streams or webcams",
                    epilog=RUN_EPILOG, usage="%(prog)s [options] SOURCE [SOURCE ...]")
    # Every option names its group (its field's metadata); the groups are listed in this order.
    descriptions = {OUTPUTS: _outputs_description()}
    groups = {g: r.add_argument_group(g, descriptions.get(g)) for g in GROUPS}
    for cls in (PipelineOptions, SinkOptions, RunOptions):
        add_options(r, cls, groups=groups)


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


def _open(opts: PipelineOptions, sink_opts: SinkOptions, cli: RunOptions, *,
          summary: bool = False) -> tuple[Pipeline, list[Sink]]:
    """Build the pipeline: every option checked first, model and sources open next (fail
    fast), outputs only then, so a run that cannot start leaves no output files behind (what
    opened is closed again). ``summary`` adds the terminal's per-second summary lines
    (:mod:`norface_rt.sinks.console`)."""
    from norface_rt.pipeline import create_pipeline, make_sinks
    from norface_rt.sinks.overlay import is_image_overlay
    from norface_rt.sources.images import is_image_path

    sinks: list[Sink] = []
    one_image = (len(opts.sources) == 1 and isinstance(opts.sources[0], (str, os.PathLike))
                 and is_image_path(opts.sources[0]) and not os.path.isdir(opts.sources[0]))

    def open_sinks(stream_ids: Sequence[str]) -> list[Sink]:
        also = [("--stats-json", cli.stats_json)] if cli.stats_json else []
        sinks.extend(make_sinks(sink_opts, stream_ids, landmarks=opts.landmarks,
                                blendshapes=opts.blendshapes, also_written=also,
                                one_image=one_image))
        if summary:
            from norface_rt.sinks.console import SummarySink

            sinks.append(SummarySink(sys.stdout))
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
        pipe = create_pipeline(opts, open_sinks)
    except BaseException:
        for s in sinks:
            s.close()
        raise
    videos = [src.stream_id for src in pipe.sources if not src.stills]
    if sink_opts.overlay and is_image_overlay(sink_opts.overlay) and videos:
        pipe.stop(timeout=1.0)
        pipe.backend.close()
        raise ValueError(f"--overlay {sink_opts.overlay}: a picture per input is for photos and "
                         f"image folders, and {', '.join(videos)} is a video: write --overlay "
                         "FILE.mp4 for videos")
    return pipe, sinks


def _announce(pipe: Pipeline, sinks: list[Sink], sink_opts: SinkOptions, cli: RunOptions,
              signals: _Signals, console: str | None) -> None:
    """Wait for subscribers when asked (only now: a missing model was reported without the
    wait), then say where results go and whether the model means anything."""
    from norface_rt.sinks.console import SummarySink

    if cli.wait_subscribers > 0:
        _wait_for_subscribers(sinks, cli.wait_subscribers, cli.wait_timeout, signals)
    for sink in sinks:
        if isinstance(sink, SummarySink):
            sink.totals = {src.stream_id: src.expected_frames for src in pipe.sources}
    if not cli.quiet:
        if sink_opts.endpoint is not None:
            print(f"norface-rt: publishing on {sink_opts.endpoint}", file=sys.stderr)
        if console == SUMMARY:
            print("norface-rt: no output chosen: a summary of each stream every second below "
                  f"(`norface-rt listen {sink_opts.endpoint}` in another terminal prints every "
                  "message); --jsonl FILE, --csv FILE or --overlay FILE saves the results",
                  file=sys.stderr)
        elif console == STDOUT_JSONL:
            print("norface-rt: no output chosen: every message as a JSON line on stdout; "
                  "--jsonl FILE, --csv FILE or --overlay FILE saves the results", file=sys.stderr)
    if sink_opts.http is not None:  # even with --quiet: the page's address is the output
        from norface_rt.sinks.web.sink import HttpViewSink

        for view in (s for s in sinks if isinstance(s, HttpViewSink)):
            print(f"norface-rt: live view on {view.url}"
                  + (" (add ?token=TOKEN)" if view.token_required else ""), file=sys.stderr)
    if not pipe.backend.config.trained:
        print("norface-rt: WARNING: this model is UNTRAINED (random weights); results are flagged "
              "'untrained' and carry no meaning.", file=sys.stderr)


def _progress(pipe: Pipeline, cli: RunOptions, console: str | None) -> Progress | None:
    if not cli.progress or cli.quiet or console == SUMMARY:  # (the summary lines say how far)
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


# What a run with no output chosen shows (see _console): summary lines on a terminal, or every
# message as a JSON line when stdout is a pipe or a file.
SUMMARY = "summary"
STDOUT_JSONL = "stdout"


def _console(sink_opts: SinkOptions, cli: RunOptions) -> str | None:
    """How a run given no output shows its results (None: it was given one). It still publishes
    on the default endpoint on a terminal; when stdout is a pipe the JSON lines are the output
    (``--jsonl -``), so no socket is bound."""
    if sink_opts.chosen:
        return None
    if not sys.stdout.isatty():
        return STDOUT_JSONL
    return None if cli.quiet else SUMMARY


def run(args: argparse.Namespace) -> int:
    from norface_rt.sources.factory import expand_sources

    # Until the pipeline is attached, a signal raises StartupInterrupted wherever the main
    # thread is (reading options, loading the model, even installing the handlers): the whole
    # run is inside this try, so it always leaves through the handler with the signal's status.
    try:
        with _Signals() as signals:  # from the first instruction: loading the model takes seconds
            cli = options_from(RunOptions, args)
            # a folder of videos is a stream per video
            sources = expand_sources(args.sources)
            if (args.stream_ids is not None and len(sources) != len(args.sources)
                    and len(args.stream_ids) != len(sources)):
                return fail(f"--stream-id: a folder of videos is one stream per video: "
                            f"{len(sources)} streams here "
                            f"({', '.join(Path(s).name for s in sources)}); give one "
                            f"--stream-id per stream, in that order, or none (each is named "
                            f"after its file), got {len(args.stream_ids)}")
            opts = options_from(PipelineOptions, args, sources=sources)
            sink_opts = options_from(SinkOptions, args)
            console = _console(sink_opts, cli)
            if console == STDOUT_JSONL:
                sink_opts.jsonl = STDOUT
            try:
                pipe, sinks = _open(opts, sink_opts, cli, summary=console == SUMMARY)
                signals.attach(pipe)
            except (OSError, ValueError, RuntimeError, ImportError) as exc:  # said plainly
                return fail(str(exc))
            _announce(pipe, sinks, sink_opts, cli, signals, console)
            progress = _progress(pipe, cli, console)
            try:
                code = _drive(pipe, signals)
            finally:
                if progress is not None:
                    progress.close()
            code = report(pipe, cli, code)
    except StartupInterrupted as exc:
        print(f"norface-rt: {exc} during start-up: nothing was analysed", file=sys.stderr)
        return ExitCode.for_signal(exc.signum)
    if pipe.stuck_sinks or pipe.alive_threads:
        # A thread blocked in write(2) on a pipe nobody reads can be neither woken nor joined,
        # and interpreter shutdown would wait on the file it holds: leave without it.
        sys.stderr.flush()
        os._exit(code)
    return code


def _done_line(pipe: Pipeline, snap: dict[str, Any]) -> str:
    """The end-of-run line: how much was analysed how fast, and where the results went."""
    line = (f"norface-rt: {snap['frames']} frames, {snap['faces']} faces in "
            f"{snap['elapsed_s']:.1f} s ({snap['fps']:.1f} frames/s)")
    where = [d for d in (w.sink.destination() for w in pipe.workers) if d]
    return line + (" -> " + "; ".join(where) if where else "")


def report(pipe: Pipeline, cli: RunOptions, code: int) -> int:
    """Print the end of the run (one line; with ``--stats`` the per-stage latency table, streams
    and outputs; nothing but problems with ``--quiet``), write ``--stats-json``, and return the
    exit status: 1 when it was 0 but a stream ended with an error or an output lost messages."""
    from norface_rt.sinks.zmq_pub import ZmqPublisher

    snap = pipe.stats.snapshot()
    if cli.stats:
        print(pipe.stats.summary_table(), file=sys.stderr)
    elif not cli.quiet:
        print(_done_line(pipe, snap), file=sys.stderr)
    if cli.stats_json:
        Path(cli.stats_json).write_text(json.dumps(snap, indent=2) + "\n")
    for w in pipe.workers:
        note = w.sink.unheard_note() if isinstance(w.sink, ZmqPublisher) else None
        if note:
            print(f"norface-rt: {note}", file=sys.stderr)
    for sid, s in snap["streams"].items():
        if s.get("error") and not cli.stats:
            print(f"norface-rt: stream {sid} ended with an error: {s['error']}", file=sys.stderr)
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
