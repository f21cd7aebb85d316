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
    if getattr(job.task, "isolate", False):
        return _run_isolated(job, attach)
    return _run_here(job, attach)


def _run_here(job: Any, attach: Callable[[Any], None] | None) -> tuple[Result, list[Metric]]:
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


#: SIGTERM first (the plugin's own cancel() runs: a command it started is killed), SIGKILL this much later
ISOLATED_KILL_GRACE = 1.0


class PluginProcessDied(Exception):
    """An isolated plugin's process ended without a result (os._exit, a crash in C code, the OOM killer)."""


class _Child:
    """The process an isolated plugin runs in, as the object `cancel()` is called on."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.lock = threading.Lock()
        self.reaped = False

    def cancel(self) -> None:
        import os
        import signal

        with self.lock:
            if self.reaped:
                return
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
        killer = threading.Timer(ISOLATED_KILL_GRACE, self.kill)
        killer.daemon = True
        killer.start()

    def kill(self) -> None:
        import os
        import signal

        with self.lock:  # never a signal to a pid that was reaped, and may be another process's by now
            if not self.reaped:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def _run_isolated(job: Any, attach: Callable[[Any], None] | None) -> tuple[Result, list[Metric]]:
    """`isolate: true`: the plugin runs in a forked child, so that nothing it does (os._exit, a
    segfault, a hang in C code, memory it never frees) reaches the agent. The child is its own
    process group; cancelling it is SIGTERM (its plugin's cancel() runs) then SIGKILL."""
    import os
    import pickle
    import signal

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns, never runs the agent's atexit handlers or finalizers
        code = 0
        try:
            os.close(read_fd)
            os.setsid()
            for signum in (signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            instance: list[Any] = []
            signal.signal(signal.SIGTERM, lambda *_: (instance and cancel_plugin(instance[0]), os._exit(143)))
            try:
                payload: Any = ("ok", _run_here(job, instance.append))
            except BaseException as exc:  # noqa: BLE001 - handed to the agent, as in-process
                payload = ("raised", exc)
            try:
                data = pickle.dumps(payload)
            except Exception as exc:  # noqa: BLE001 - an exception or result that does not pickle
                data = pickle.dumps(("raised", RuntimeError(f"{type(exc).__name__}: {exc}")))
            with os.fdopen(write_fd, "wb") as out:
                out.write(data)
        except BaseException:  # noqa: BLE001 - the child must end here, whatever happened
            code = 70
        finally:
            os._exit(code)
    os.close(write_fd)
    child = _Child(pid)
    job.instance = child
    if attach is not None:
        attach(child)
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            data = pipe.read()
    finally:
        # waited for without reaping, then reaped under the lock: a cancel() meanwhile neither blocks
        # nor signals a pid the system may already have given to another process
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        with child.lock:
            _, status = os.waitpid(pid, 0)
            child.reaped = True
    if data:
        kind, value = pickle.loads(data)
        if kind == "ok":
            return value  # type: ignore[no-any-return]
        raise value
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        raise PluginProcessDied(f"the plugin's process was killed by {signal.Signals(-code).name}")
    raise PluginProcessDied(f"the plugin's process exited with code {code} without a result")


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
