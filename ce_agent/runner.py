"""Runs jobs concurrently (bounded), each under its timeout; a raise or an overrun becomes UNKNOWN."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ce_agent.contracts import Metric, Result, Status
from ce_agent.durations import format_duration

Scrub = Callable[[str], str]


@dataclass
class Outcome:
    """What running one job gave: a check's result, or a collector's samples (or its failure)."""

    job: Any
    result: Result
    duration_s: float
    samples: list[Metric] = field(default_factory=list)
    timed_out: bool = False
    trace: str = ""  # the traceback when the plugin raised: for -v and JSON, never for notifications


def run_job(job: Any, attach: Callable[[Any], None] | None = None) -> tuple[Result, list[Metric]]:
    """Instantiate the plugin and call it; exceptions propagate to the caller. `attach` gets the
    plugin object before it runs (so that it can be cancelled)."""
    if job.load_error:
        return Result(Status.UNKNOWN, job.load_error), []
    plugin = job.plugin(job.options, job.context)
    job.instance = plugin
    if attach is not None:
        attach(plugin)
    if job.kind == "collector":
        samples = list(plugin.collect())
        return Result(Status.OK, f"{len(samples)} samples"), samples
    result = plugin.run()
    if not isinstance(result, Result):
        raise TypeError(f"run() returned {type(result).__name__}, not a Result")
    if not isinstance(result.status, Status):
        # a plain exit code (2) is what a Nagios author writes; anything else is not a status at all
        if isinstance(result.status, int) and not isinstance(result.status, bool):
            result = Result(Status.from_code(result.status), result.summary, result.metrics, result.details)
        else:
            raise TypeError(f"run() returned a Result whose status is {result.status!r}, not a Status")
    return result, []


def error_result(exc: BaseException, scrub: Scrub) -> tuple[Result, str]:
    import traceback

    message = str(exc) or type(exc).__name__
    if isinstance(exc, RecursionError):
        message = "maximum recursion depth exceeded"
    first_line = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    trace = "".join(traceback.format_exception(exc, limit=-8))
    return Result(Status.UNKNOWN, scrub(f"{type(exc).__name__}: {first_line}")), scrub(trace)


MAX_SUMMARY = 1024
MAX_DETAILS = 64 * 1024
MAX_METRICS = 1000


def _clip(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 20] + f" … ({len(text) - limit + 20} more)"


def scrubbed(result: Result, scrub: Scrub) -> Result:
    """The result with every text a plugin chose scrubbed (summary, long output, metric labels) and
    bounded in size: one line of summary, 64 KiB of long output, 1000 metrics."""
    metrics = [
        replace(m, labels={k: scrub(str(v)) for k, v in m.labels.items()}) if m.labels else m
        for m in result.metrics[:MAX_METRICS]
    ]
    summary = " ".join(str(result.summary).split("\n", 1)[0].split()) if result.summary else ""
    return Result(result.status, scrub(_clip(summary, MAX_SUMMARY)), metrics, scrub(_clip(result.details, MAX_DETAILS)))


def execute(
    jobs: Sequence[Any],
    forks: int = 10,
    scrub: Scrub = lambda s: s,
    clock: Callable[[], float] = time.monotonic,
) -> list[Outcome]:
    """Run every job, at most `forks` at a time, and return their outcomes in job order.

    Each job runs in a daemon thread: one that overruns its timeout is reported UNKNOWN, its plugin's
    `cancel()` is called (a command kills its process group), and its slot is given to the next job;
    the thread itself is abandoned, since Python cannot kill it, and never waited for."""
    outcomes: list[Outcome | None] = [None] * len(jobs)
    done: queue.SimpleQueue[tuple[int, Result, list[Metric], float, str]] = queue.SimpleQueue()
    running: dict[int, tuple[float, float]] = {}  # index -> (started, deadline)
    next_index = 0

    def worker(index: int, job: Any, started: float) -> None:
        trace = ""
        try:
            result, samples = run_job(job)
            result = scrubbed(result, scrub)
        except BaseException as exc:  # noqa: BLE001 - a plugin's failure, whatever it is, is its result
            (result, trace), samples = error_result(exc, scrub), []
        done.put((index, result, samples, clock() - started, trace))

    def finished(item: tuple[int, Result, list[Metric], float, str]) -> None:
        index, result, samples, duration, trace = item
        if running.pop(index, None) is not None:  # else it was reported as timed out already
            outcomes[index] = Outcome(jobs[index], result, duration, samples, trace=trace)

    try:
        while next_index < len(jobs) or running:
            while next_index < len(jobs) and len(running) < max(1, forks):
                job = jobs[next_index]
                started = clock()
                running[next_index] = (started, started + job.context.timeout)
                threading.Thread(
                    target=worker, args=(next_index, job, started), name=f"job-{job.name}", daemon=True
                ).start()
                next_index += 1
            wait = max(0.0, min(deadline for _, deadline in running.values()) - clock())
            try:
                finished(done.get(timeout=wait))
            except queue.Empty:
                pass
            while True:  # what finished meanwhile is a result, not a timeout
                try:
                    finished(done.get_nowait())
                except queue.Empty:
                    break
            now = clock()
            for late in [i for i, (_, deadline) in running.items() if deadline <= now]:
                started, _ = running.pop(late)
                job = jobs[late]
                _cancel(job)
                timeout = format_duration(job.context.timeout)
                outcomes[late] = Outcome(
                    job, Result(Status.UNKNOWN, f"timed out after {timeout}"), now - started, timed_out=True
                )
    finally:
        # Interrupted (Ctrl-C, SIGTERM): what still runs is stopped, so no command outlives the run.
        for index in running:
            _cancel(jobs[index])
    return [o for o in outcomes if o is not None]


def _cancel(job: Any) -> None:
    plugin = getattr(job, "instance", None)
    if plugin is not None:
        cancel_plugin(plugin)


def cancel_plugin(plugin: Any) -> None:
    """Ask a running plugin to stop (a command kills its process group); never raises."""
    try:
        plugin.cancel()
    except Exception:  # noqa: BLE001 - cancelling is best effort; the result is already UNKNOWN
        pass
