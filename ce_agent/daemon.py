"""The agent daemon: runs every task on its schedule, evaluates alerts, delivers, reloads and stops cleanly."""

from __future__ import annotations

import copy
import logging
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Any

from ce_agent import __version__
from ce_agent.contracts import Result, Status
from ce_agent.durations import format_duration
from ce_agent.errors import ConfigError, FaultError
from ce_agent.runner import Outcome, cancel_plugin, error_result, run_job, scrubbed
from ce_agent.scheduler import Schedule, TaskClock, due_tasks, first_clock, next_wakeup, task_schedule

# The loop sleeps at most this long, so a wall-clock jump (NTP, a resume) is noticed within it.
MAX_SLEEP = 60.0
# /readyz: the loop is stalled when it is this late for a wake-up it planned.
STALL_AFTER = 2.0
# SIGTERM: running tasks get this long to finish before they are killed; everything is done in 10 s.
STOP_GRACE = 5.0
FLUSH_GRACE = 2.0
PRUNE_EVERY = 3600.0
SLO_EVERY = 60.0  # seconds between evaluations of the SLOs  # the history is trimmed to its retention once an hour
# a task with this many plugin errors in its last ERROR_WINDOW runs is reported (a warning, /api/v1/status)
ERROR_REPORT_AT = 5
BATCH_WINDOW = 0.1  # seconds the results thread gathers results before it evaluates them
RECOVER_EVERY = 5.0  # seconds between tries to write the state again while alerting carries on in memory
TaskKey = tuple[str, str, str, str]  # kind, play, host, name

Loader = Callable[[], tuple[Any, Any]]  # -> (Plan, Redactor); raises oneshot.InvalidConfig or UserError


@dataclass
class Config:
    """One loaded configuration: the plan, its secrets' redactor, and every task with its schedule."""

    plan: Any
    redactor: Any
    jobs: dict[TaskKey, Any]
    schedules: dict[TaskKey, Schedule]
    loaded_at: float

    names: set[tuple[str, str, str]] = field(default_factory=set)  # (play, host, check) of every check
    ran: set[tuple[str, str]] = field(default_factory=set)  # (play, host) pairs with tasks or rules
    defined: dict[str, set[str]] = field(default_factory=dict)  # play -> every task and rule name it has

    def __post_init__(self) -> None:
        self.names = {(play, host, name) for kind, play, host, name in self.jobs if kind == "check"}
        from ce_agent.oneshot import defined_names, evaluated_places

        self.ran = evaluated_places(self.plan)
        self.defined = defined_names(self.plan)


@dataclass
class _Running:
    """One run of a task. The plugin object is this run's own, so cancelling never reaches another run."""

    key: TaskKey
    job: Any
    due: float
    started: float  # monotonic
    deadline: float  # monotonic
    token: object = field(default_factory=object)
    instance: Any = None
    cancelled: bool = False
    abandoned: bool = False  # it overran its timeout: its worker leaves the pool once it returns
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, plugin: Any) -> None:
        with self.lock:
            self.instance = plugin
            cancelled = self.cancelled
        if cancelled:  # cancelled before it started: a command then never starts its process
            cancel_plugin(plugin)

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            plugin = self.instance
        if plugin is not None:
            cancel_plugin(plugin)


def task_key(job: Any) -> TaskKey:
    return (job.kind, job.play, job.host, job.name)


def build_config(plan: Any, redactor: Any, now: float, local_tz: tzinfo | None) -> Config:
    """Every job of `plan` keyed by task; schedules were validated when the plan was loaded."""
    jobs: dict[TaskKey, Any] = {}
    schedules: dict[TaskKey, Schedule] = {}
    for job in plan.jobs:
        key = task_key(job)
        number = 2
        while key in jobs:  # two tasks of one play with one name: both run, told apart by a suffix
            key = (job.kind, job.play, job.host, f"{job.name}#{number}")
            number += 1
        jobs[key] = job
        schedules[key] = task_schedule(job.task, local_tz)
    return Config(plan, redactor, jobs, schedules, now)


class Daemon:
    """Schedules the tasks (main thread), records their results and evaluates alerts (a processor
    thread), and delivers the outbox (a delivery thread). Built by the CLI, which passes everything in."""

    def __init__(
        self,
        load: Callable[[], Config],
        store: Any,
        telemetry: Any,
        notifier: Any,
        forks: int = 50,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        log: logging.Logger | None = None,
        stop_grace: float = STOP_GRACE,
    ) -> None:
        self._load = load
        self.store = store
        self.telemetry = telemetry
        self.notifier = notifier
        self.forks = max(1, forks)
        self.clock = clock
        self.monotonic = monotonic
        self.log = log or logging.getLogger("ce_agent.daemon")
        self.stop_grace = stop_grace
        self.config: Config | None = None
        self.config_error: str | None = None
        self.state_error: str | None = None
        # while the state cannot be written, `store` is a copy in memory and `_disk` the database
        self._disk: Any = None
        self._state_lock = threading.Lock()
        self._next_recover = 0.0
        self.started_at = clock()
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        # (task key, outcome); None: evaluate with no new outcome (after a reload); "stop"
        self._results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._deliver_now = threading.Event()
        self._stopping = threading.Event()
        self._clocks: dict[TaskKey, TaskClock] = {}
        self._pending: list[tuple[TaskKey, float]] = []  # due, waiting for a free slot: (key, due)
        self._running: dict[TaskKey, _Running] = {}
        self._abandoned: dict[TaskKey, float] = {}  # timed-out Python plugins still running: started
        # per task, whether each of its last ERROR_WINDOW runs was a plugin error (raised, timed out,
        # its process died), as Nagios/Sensu keep a check's recent history; reset by a reload
        self._run_errors: dict[TaskKey, deque[bool]] = {}
        self._broken: set[TaskKey] = set()  # warned about: ERROR_REPORT_AT errors or more in the window
        self._disabled: dict[TaskKey, str] = {}  # stopped by `disable_after_errors`: why
        # a pool of worker threads, grown up to --forks: starting a thread per run costs more than
        # the run of a cheap check (Thread.start waits for the new thread to get the GIL)
        self._work_queue: queue.SimpleQueue[tuple[_Running, Callable[[str], str]] | None] = queue.SimpleQueue()
        self._workers = 0  # workers not stuck in an abandoned run (changed by the main thread only)
        self._latest: dict[TaskKey, dict[str, Any]] = {}  # what /api/v1/status shows per task
        self._samples: dict[TaskKey, list[Any]] = {}  # latest metrics of each task, for `alerts:` rules
        self._next_tick = monotonic()
        self._next_prune = 0.0
        self._next_slo = 0.0
        self._slo_rows: list[tuple[str, str, str, dict[str, Any], float]] = []  # as last evaluated, for the API
        self._threads: list[threading.Thread] = []

    # ---- control (safe from signal handlers: SimpleQueue.put is reentrant) --------------------------------

    def request_reload(self) -> None:
        self._events.put(("reload",))

    def request_stop(self) -> None:
        self._events.put(("stop",))

    def scrub(self, text: str) -> str:
        config = self.config
        return config.redactor.scrub(text) if config is not None else text

    # ---- the main loop ----------------------------------------------------------------------------------

    def start(self, config: Config | None = None) -> None:
        """Take `config` or load it (ConfigError when invalid), and start the worker threads."""
        self._apply(config or self._load())
        self.telemetry.record_reload(True, self.clock())
        for name, target in (("ce-agent-results", self._process_loop), ("ce-agent-delivery", self._delivery_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def run(self) -> int:
        """Schedule until asked to stop, then stop cleanly; returns the exit code (0)."""
        try:
            return self._loop()
        except BaseException:
            # whatever ends the loop, no command it started may outlive the agent
            for run in self._running.values():
                run.cancel()
            raise

    def _loop(self) -> int:
        config = self.config
        assert config is not None, "start() first"
        first_due = next_wakeup(self._clocks)
        self.log.info("ce-agent %s started: %d tasks%s", __version__, len(config.jobs),
                      f", the first due at {_iso(first_due)}" if first_due is not None else "")
        self.notifier.ready(f"{len(config.jobs)} tasks scheduled")
        watchdog_every = self.notifier.watchdog_interval
        next_ping = self.monotonic()
        while True:
            now, mono = self.clock(), self.monotonic()
            self._start_due(now, mono)
            self._expire(mono)
            if watchdog_every and mono >= next_ping:
                self.notifier.watchdog()
                next_ping = mono + watchdog_every
            wake = next_wakeup(self._clocks)
            wait = MAX_SLEEP if wake is None else max(0.0, wake - now)
            if self._running:
                wait = min(wait, max(0.0, min(r.deadline for r in self._running.values()) - mono))
            if watchdog_every:
                wait = min(wait, max(0.0, next_ping - mono))
            wait = min(wait, MAX_SLEEP)
            self._next_tick = mono + wait
            self.telemetry.tick(now)
            if self._handle(self._next_event(wait)):
                break
            while True:  # everything that arrived meanwhile, before scheduling again
                try:
                    event = self._events.get_nowait()
                except queue.Empty:
                    break
                if self._handle(event):
                    return self._shutdown()
        return self._shutdown()

    def _next_event(self, wait: float) -> tuple[Any, ...] | None:
        try:
            return self._events.get(timeout=wait) if wait > 0 else self._events.get_nowait()
        except queue.Empty:
            return None

    def _handle(self, event: tuple[Any, ...] | None) -> bool:
        """Act on one event; True when the daemon must stop."""
        if event is None:
            return False
        kind = event[0]
        if kind == "stop":
            return True
        if kind == "reload":
            self._reload()
        elif kind == "done":
            self._finished(*event[1:])
        return False

    def _start_due(self, now: float, mono: float) -> None:
        config = self.config
        assert config is not None
        before = {key: clock.skipped for key, clock in self._clocks.items()}
        for start in due_tasks(self._clocks, config.schedules, now):
            key = start.key  # type: ignore[assignment]
            if key in self._abandoned:
                # its last run overran and is still going: another thread would only pile up
                clock = self._clocks[key]
                clock.finished()
                clock.skipped += 1
                since = format_duration(now - self._abandoned[key])
                self._report(key, config.jobs[key],
                             Result(Status.UNKNOWN, f"still running after its timeout (started {since} ago)"), 0.0,
                             timed_out=True)
                continue
            self._pending.append((key, start.due))
        waiting = {key for key, _due in self._pending}
        for key, clock in self._clocks.items():
            if clock.skipped > before.get(key, 0):
                kind, play, host, name = key
                self.telemetry.record_skipped(name, host, play)
                why = ("its last run is still waiting for a free slot (all --forks busy)" if key in waiting
                       else "its last run is still going")
                self.log.warning("skipped a run of %s: %s", name, why, extra={"check": name, "host": host, "play": play})
        self._pending.sort(key=lambda item: item[1])  # the longest overdue first
        while self._pending and len(self._running) < self.forks:
            key, due = self._pending.pop(0)
            job = config.jobs.get(key)
            if job is None:  # removed by a reload while it waited
                continue
            started = self.monotonic()
            lateness = max(0.0, self.clock() - due)
            self.telemetry.record_start(lateness)
            run = _Running(key, copy.copy(job), due, started, started + job.context.timeout)
            self._running[key] = run
            self._work_queue.put((run, config.redactor.scrub))
            if self._workers < len(self._running):  # every running task has a worker of its own
                self._workers += 1
                threading.Thread(target=self._worker, name=f"ce-agent-worker-{self._workers}", daemon=True).start()

    def _worker(self) -> None:
        while True:
            item = self._work_queue.get()
            if item is None:
                return
            run, scrub = item
            self._work(run, scrub)
            if run.abandoned:  # the pool replaced this worker when its run timed out
                return

    def _work(self, run: _Running, scrub: Callable[[str], str]) -> None:
        trace = ""
        try:
            result, samples = run_job(run.job, run.attach)
            result = scrubbed(result, scrub)
        except BaseException as exc:  # noqa: BLE001 - a plugin's failure, whatever it is, is its result
            (result, trace), samples = error_result(exc, scrub), []
        self._events.put(("done", run.key, run.token, result, samples, self.monotonic() - run.started, trace))

    def _finished(self, key: TaskKey, token: object, result: Result, samples: list[Any], duration: float,
                  trace: str) -> None:
        run = self._running.get(key)
        if run is None or run.token is not token:
            self._abandoned.pop(key, None)  # a timed-out run ended at last; its result came too late
            return
        del self._running[key]
        if key in self._clocks:
            self._clocks[key].finished()
        if trace:
            self.log.debug("%s raised:\n%s", run.job.name, trace)
        self._report(key, run.job, result, duration, samples=samples, trace=trace)

    def _expire(self, mono: float) -> None:
        for key in [k for k, r in self._running.items() if r.deadline <= mono]:
            run = self._running.pop(key)
            run.cancel()
            run.abandoned = True
            self._workers -= 1
            if key in self._clocks:
                self._clocks[key].finished()
            self._abandoned[key] = self.clock() - (mono - run.started)
            kind, play, host, name = key
            timeout = format_duration(run.job.context.timeout)
            self.log.warning("%s timed out after %s", name, timeout, extra={"check": name, "host": host, "play": play})
            self._report(key, run.job, Result(Status.UNKNOWN, f"timed out after {timeout}"), mono - run.started,
                         timed_out=True)

    def _report(self, key: TaskKey, job: Any, result: Result, duration: float, samples: list[Any] | None = None,
                trace: str = "", timed_out: bool = False) -> None:
        self._results.put((key, Outcome(job, result, duration, samples or [], timed_out=timed_out, trace=trace)))
        self._count_errors(key, job, result, errored=bool(trace) or timed_out)

    def _count_errors(self, key: TaskKey, job: Any, result: Result, errored: bool) -> None:
        """Keep the task's recent plugin errors: warn once at ERROR_REPORT_AT of the last ERROR_WINDOW
        runs, and stop scheduling it at its `disable_after_errors` (a reload starts it again)."""
        from ce_agent.config.playbook import ERROR_WINDOW

        recent = self._run_errors.setdefault(key, deque(maxlen=ERROR_WINDOW))
        recent.append(errored)
        errors = sum(recent)
        _kind, play, host, name = key
        where = {"check": name, "host": host, "play": play}
        limit = getattr(job.task, "disable_after_errors", None)
        if limit is not None and errors >= limit and key not in self._disabled:
            why = (f"disabled after {errors} plugin errors in the last {len(recent)} runs (the last: "
                   f"{result.summary}); a reload enables it again")
            self._disabled[key] = why
            self._clocks.pop(key, None)  # no clock, never due: _apply gives it a fresh one on reload
            self.log.error("%s %s", name, why, extra=where)
            self._results.put((key, Outcome(job, Result(Status.UNKNOWN, why), 0.0)))
        elif errors >= ERROR_REPORT_AT and key not in self._broken:
            self._broken.add(key)
            self.log.warning("%s is failing: %d plugin errors in its last %d runs (the last: %s)", name, errors,
                             len(recent), result.summary, extra=where)
        elif errors < ERROR_REPORT_AT:
            self._broken.discard(key)  # recovered: warned about again should it break again
        self.telemetry.set_plugin_errors(name, host, play, errors, key in self._disabled)

    # ---- reload -----------------------------------------------------------------------------------------

    def _reload(self) -> None:
        self.notifier.reloading()
        now = self.clock()
        try:
            config = self._load()
        except ConfigError as exc:
            self.config_error = exc.lines[0]
            self.telemetry.record_reload(False, now)
            self.log.error("reload failed; still running the previous configuration: %s", "; ".join(exc.lines))
            self.notifier.ready(f"reload failed: {exc.lines[0]}")
            return
        old = self.config
        self._apply(config)
        self.config_error = None
        self.telemetry.record_reload(True, now)
        added = len(set(config.jobs) - set(old.jobs if old else {}))
        removed = len(set(old.jobs if old else {}) - set(config.jobs))
        self.log.info("configuration reloaded: %d tasks (%d added, %d removed)", len(config.jobs), added, removed)
        self.notifier.ready(f"{len(config.jobs)} tasks scheduled")

    def _apply(self, config: Config) -> None:
        """Switch to `config`: unchanged tasks keep their clocks, new or changed ones start afresh."""
        old = self.config
        now = self.clock()
        clocks: dict[TaskKey, TaskClock] = {}
        for key, schedule in config.schedules.items():
            kept = self._clocks.get(key)
            if kept is not None and old is not None and old.schedules.get(key) == schedule:
                clocks[key] = kept
            else:
                clocks[key] = first_clock(schedule, "/".join(key), now)
                if key in self._running:  # its schedule changed while it runs: it still must not overlap
                    clocks[key].running = True
        self._clocks = clocks
        self._run_errors.clear()  # a reload is the operator's "try again": counts start afresh
        self._broken.clear()
        self._disabled.clear()
        self._pending = [(k, due) for k, due in self._pending if k in config.jobs]
        self.config = config
        alive = set(config.jobs)
        self._latest = {k: v for k, v in self._latest.items() if k in alive}
        self._samples = {k: v for k, v in self._samples.items() if k in alive}
        self.telemetry.set_scrub(config.redactor.scrub)
        self.telemetry.retain(alive)
        self.telemetry.set_tasks(len(config.jobs))
        self._next_slo = 0.0  # the SLOs of the new config are evaluated (and exported) with the next results
        if not config.plan.slos:
            self.telemetry.set_slos([])
            self._slo_rows = []
        errors = [job for job in config.jobs.values() if job.load_error]
        self.telemetry.set_plugin_load_errors(len(errors))
        for job in errors:
            self.log.error("%s cannot run: %s", job.name, job.load_error,
                           extra={"check": job.name, "host": job.host, "play": job.play})
        self._results.put(None)  # the processor looks for removed tasks' alerts with the new config

    # ---- results and alerts (processor thread) ----------------------------------------------------------

    def _process_loop(self) -> None:
        while True:
            batch = [self._results.get()]
            # results of one round come within a short while: evaluating them together costs one
            # load of the stored alerts instead of one per result
            until = time.monotonic() + BATCH_WINDOW
            while batch[-1] != "stop" and (left := until - time.monotonic()) > 0:
                try:
                    batch.append(self._results.get(timeout=left))
                except queue.Empty:
                    break
            stop = any(item == "stop" for item in batch)
            outcomes = [item for item in batch if isinstance(item, tuple)]
            try:
                self._process(outcomes)
                if self._disk is None:
                    self.state_error = None
                else:
                    self._recover()
            except Exception as exc:  # noqa: BLE001 - the store failing must not stop the checks
                self.state_error = self.scrub(f"{type(exc).__name__}: {exc}")
                self.log.error("recording results failed: %s", self.state_error)
            if stop:
                return

    def _process(self, keyed: list[tuple[TaskKey, Outcome]]) -> None:
        from ce_agent import oneshot
        from ce_agent.alerting import pipeline, sources
        config = self.config
        assert config is not None
        now = self.clock()
        # a run of a task that a reload removed ends after it: its result would bring the task back
        outcomes = [o for key, o in keyed if key in config.jobs]
        checks = [o for o in outcomes if o.job.kind == "check"]
        for key, o in keyed:
            if key in config.jobs:
                self.telemetry.record_outcome(o, now)
                self._remember(key, o, now)
        self._write(lambda s: oneshot.record_outcomes(s, outcomes, now, config.plan.sample_history))
        if now >= self._next_prune:  # retention, as `run` does now and then
            self._next_prune = now + PRUNE_EVERY
            self._write(lambda s: s.prune(now))
        stored = self.store.load_alerts()
        known = {key: labels for key, (labels, _state) in stored.items()}
        inputs = sources.from_checks(checks, known, config.names, config.redactor.scrub)
        inputs += sources.from_regressions(checks, self.store, now)
        # a rule is evaluated once every task of its host has reported since the (re)start: before
        # that, a series not yet collected would look gone and resolve its alert
        touched = {(o.job.play, o.job.host) for o in outcomes}
        rules = {ph: r for ph, r in config.plan.rules.items() if ph in touched
                 and all(k in self._latest for k in config.jobs if k[2] == ph[1])}
        if rules:
            samples: dict[str, list[Any]] = {}
            for key, metrics in list(self._samples.items()):
                samples.setdefault(key[2], []).extend(metrics)
            inputs += sources.from_rules(rules, samples, known, oneshot.annotator(config.redactor))
        # SLO windows are minutes to days: once a minute is enough; not before the first result (a fresh
        # state would say "no data" for a minute)
        if config.plan.slos and now >= self._next_slo and self._latest:
            self._next_slo = now + SLO_EVERY
            slo_alerts, slo_rows = self._write(lambda s: oneshot.slo_inputs(config.plan, s, stored, now, save=True))
            inputs += slo_alerts
            self.telemetry.set_slos(slo_rows)
            self._slo_rows = slo_rows
        present = {a.key for a in inputs}
        inputs += sources.vanished(known, present, config.ran, config.defined, self.store.channels_told_firing)
        if not inputs:
            return
        previous = {key: pipeline.state_from_json(state) for key, (_labels, state) in stored.items()}
        silenced = pipeline.silence_matcher(self.store.silences(now), now)
        group_sent = lambda group, channel: (self.store.notified(group, channel) or {}).get("last_sent")  # noqa: E731
        evaluation = pipeline.evaluate(inputs, previous, config.plan.alerting, self.store.notified, group_sent,
                                       silenced, now, config.redactor.scrub, known,
                                       pipeline.resend_lookup(config.plan.resolve_channel),
                                       lambda group, channel: self.store.queued(channel, group))
        by_key = {a.key: a for a in inputs}
        for key, events in evaluation.events.items():
            alert = by_key[key]
            extra = {name: alert.labels[name] for name in ("check", "alertname", "host", "play") if name in alert.labels}
            for event in events:
                self.log.info("alert %s %s: %s", alert.title, event.kind, event.summary, extra=extra)
        dropped = self._write(lambda s: oneshot.persist(s, config.plan, evaluation, inputs, now))
        if dropped:
            self.log.warning("the outbox is full: dropped %d old notifications", dropped)
        if evaluation.notifications:
            self._deliver_now.set()

    # ---- the state cannot be written (disk full, read-only, locked): carry on in memory ------------------

    def _write(self, step: Callable[[Any], Any], what: str = "recording results failed") -> Any:
        """`step(store)`; when the state cannot be written, again on a copy of it in memory (the failed
        transaction was rolled back: the copy is the state as it was before the step)."""
        store = self.store
        try:
            return step(store)
        except FaultError as exc:
            if getattr(store, "in_memory", True):
                raise
            self._fall_back(exc, what)
            return step(self.store)

    def _fall_back(self, exc: BaseException, what: str, sent: tuple[int, ...] = ()) -> None:
        """Alerting goes on from a copy of the state in memory; /readyz says why until `_recover`.
        `sent`: outbox items delivered whose removal could not be written (not to be sent again)."""
        with self._state_lock:
            if self._disk is None and not getattr(self.store, "in_memory", True):
                self.state_error = self.scrub(f"{type(exc).__name__}: {exc}")
                self.log.error("%s: %s; alerting carries on in memory until the state can be written again",
                               what, self.state_error)
                self._disk, self.store = self.store, self.store.memory_copy()
                self._next_recover = self.monotonic() + RECOVER_EVERY
            for item_id in sent:
                self.store.delivered(item_id)

    def _recover(self, force: bool = False) -> None:
        """Once the database takes writes again, it gets what was kept in memory meanwhile (SQLite's
        backup: all of it or nothing) and becomes the store again."""
        if self._disk is None or (not force and self.monotonic() < self._next_recover):
            return
        self._next_recover = self.monotonic() + RECOVER_EVERY
        if not self._disk.writable():
            return
        with self._state_lock:
            try:
                self._disk.replace_with(self.store)
            except FaultError as exc:
                self.log.warning("the state still cannot be written: %s", self.scrub(str(exc)))
                return
            # the copy is left to the collector, not closed: the delivery thread may still hold it
            self.store, self._disk = self._disk, None
            self.state_error = None
        self.log.info("the state can be written again: what was kept in memory is saved")

    def _remember(self, key: TaskKey, outcome: Outcome, now: float) -> None:
        result = outcome.result
        previous = self._latest.get(key)
        self.log.debug("%s ran in %.3fs: %s %s", outcome.job.name, outcome.duration_s, result.status.name,
                       result.summary, extra={"check": outcome.job.name, "host": outcome.job.host,
                                              "play": outcome.job.play})
        if outcome.job.kind == "check" and (previous is None or previous["status"] != result.status.name):
            level = logging.INFO if result.status is Status.OK else logging.WARNING
            self.log.log(level, "%s is %s: %s", outcome.job.name, result.status.name, result.summary,
                         extra={"check": outcome.job.name, "host": outcome.job.host, "play": outcome.job.play})
        self._latest[key] = {
            "status": result.status.name,
            "summary": result.summary,
            "duration_s": round(outcome.duration_s, 6),
            "last_run": now,
            "timed_out": outcome.timed_out,
        }
        self._samples[key] = list(outcome.samples if outcome.job.kind == "collector" else result.metrics)

    # ---- delivery (delivery thread) ---------------------------------------------------------------------

    def _delivery_loop(self) -> None:
        from ce_agent import outbox

        while not self._stopping.is_set():
            config = self.config
            assert config is not None
            try:
                report = outbox.flush(self.store, config.plan.resolve_channel, config.redactor.scrub, self.clock(),
                                      config.plan.delivery, sleep=self._stopping.wait)
                for delivery in report.attempted:
                    self.telemetry.record_delivery(delivery.channel, delivery.sent)
                    if not delivery.sent:
                        self.log.warning("delivery to %s failed: %s", delivery.channel, delivery.error)
                if report.state_error is not None:  # sent, but the outbox could not be written: carry on in memory
                    self._fall_back(report.state_error, "recording deliveries failed",
                                    tuple(d.item_id for d in report.attempted if d.unsaved is not None and d.item_id))
                self.telemetry.set_outbox(self.store.outbox_depth(), self.store.dropped_total())
                due = self.store.next_due()
            except Exception as exc:  # noqa: BLE001 - a broken delivery must not end the loop
                if self._stopping.is_set():
                    return
                self.log.error("delivering notifications failed: %s", self.scrub(f"{type(exc).__name__}: {exc}"))
                due = self.clock() + 10
            wait = MAX_SLEEP if due is None else min(MAX_SLEEP, max(0.0, due - self.clock()))
            if wait > 0:
                self._deliver_now.wait(wait)
            self._deliver_now.clear()

    # ---- stopping ---------------------------------------------------------------------------------------

    def _shutdown(self) -> int:
        self.notifier.stopping()
        self.log.info("stopping: %d tasks running", len(self._running))
        self._pending.clear()
        deadline = self.monotonic() + self.stop_grace
        while self._running and self.monotonic() < deadline:
            event = self._next_event(max(0.0, min(deadline, *(r.deadline for r in self._running.values()))
                                         - self.monotonic()))
            if event is not None and event[0] == "done":
                self._finished(*event[1:])
            self._expire(self.monotonic())
        for run in self._running.values():
            # killed by the stop, not failed: no result, so a restart does not raise alerts
            run.cancel()
        self._running.clear()
        for _ in range(max(0, self._workers)):
            self._work_queue.put(None)
        self._results.put("stop")
        self._stopping.set()
        self._deliver_now.set()
        for thread in self._threads:
            thread.join(timeout=FLUSH_GRACE)
        self._recover(force=True)  # a last try to keep what alerting did in memory
        self.log.info("stopped")
        return 0

    # ---- what the HTTP server shows (handler threads) ---------------------------------------------------

    def live(self) -> bool:
        """Its threads run and its loop is not stuck for longer than it ever sleeps (then a restart,
        by systemd's watchdog or a supervisor polling /livez, is the cure)."""
        if self._stopping.is_set():
            return True
        stuck = self.monotonic() - self._next_tick > MAX_SLEEP
        return all(t.is_alive() for t in self._threads) and not stuck

    def ready(self) -> tuple[bool, list[str]]:
        reasons = []
        if self.config is None:
            reasons.append("no configuration loaded")
        if self.config_error:
            reasons.append(f"the configuration is invalid (the previous one still runs): {self.config_error}")
        late = self.monotonic() - self._next_tick
        if late > STALL_AFTER:
            reasons.append(f"the scheduler has not ticked for {late:.1f}s")
        if self.state_error:
            reasons.append(f"the state cannot be written: {self.state_error}")
        if self._stopping.is_set():
            reasons.append("stopping")
        return not reasons, reasons

    def metrics_text(self) -> str:
        return str(self.telemetry.render())

    def status(self) -> dict[str, Any]:
        config = self.config
        tasks = []
        counts = dict.fromkeys(s.name for s in Status)
        for key, job in (config.jobs.items() if config else []):
            kind, play, host, name = key
            clock = self._clocks.get(key)
            schedule = config.schedules[key] if config else None
            latest = self._latest.get(key, {})
            if kind == "check" and latest:
                counts[latest["status"]] = (counts[latest["status"]] or 0) + 1
            tasks.append({
                "kind": kind, "play": play, "host": host, "name": name, "plugin": job.plugin_name,
                "schedule": _describe_schedule(schedule),
                "next_run": _iso(clock.next_due) if clock else None,
                "running": bool(clock and clock.running),
                "skipped": clock.skipped if clock else 0,
                "last_run": _iso(latest["last_run"]) if latest else None,
                "status": latest.get("status"), "summary": latest.get("summary"),
                "duration_s": latest.get("duration_s"),
                "plugin_errors": sum(self._run_errors.get(key, ())),
                "broken": key in self._broken or key in self._disabled,
                "disabled": self._disabled.get(key),
            })
        ready, reasons = self.ready()
        return {
            "title": "ce-agent",
            "version": __version__,
            "started": _iso(self.started_at),
            "config_loaded": _iso(config.loaded_at) if config else None,
            "config_error": self.config_error,
            "ready": ready,
            "not_ready": reasons,
            "checks": {k: v or 0 for k, v in counts.items()},
            "tasks": tasks,
            # as `ce-agent slo status --format json` has them, with play, host and when they were evaluated
            "slos": [{**data, "play": play, "host": host, "evaluated": _iso(at)}
                     for play, host, _name, data, at in self._slo_rows],
        }

    def alerts(self) -> list[dict[str, Any]]:
        from ce_agent.alertcmds import active_alerts

        now = self.clock()
        return active_alerts(self.store.load_alerts(), self.store.silences(now), now)


def _describe_schedule(schedule: Schedule | None) -> str:
    if schedule is None:
        return ""
    if schedule.cron:
        zone = getattr(schedule.tz, "key", None) or ("UTC" if schedule.tz is None else str(schedule.tz))
        return f"{schedule.cron} ({zone})"
    jitter = f" + up to {format_duration(schedule.jitter)}" if schedule.jitter else ""
    return f"every {format_duration(schedule.interval or 0)}{jitter}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")



@dataclass
class ServeOptions:
    """How `ce-agent agent` runs: where it listens and logs, where its state is, how many tasks at once."""

    state_dir: Path
    listen: str | None = "127.0.0.1:9464"  # None: no HTTP endpoints
    forks: int = 50
    log_format: str = "auto"
    log_level: str = "info"
    log_file: Path | None = None
    log_rotate: str | None = None
    log_keep: int = 7


def serve(playbooks: list[Path], inventories: list[Path], selection: Any, options: ServeOptions,
          environ: Mapping[str, str]) -> int:
    """Load, open the state, listen, start and schedule until SIGTERM; returns the exit code.

    What the user must fix (the config, an option, a port in use) raises ConfigError, before anything
    was started."""
    import signal

    from ce_agent import logs, oneshot
    from ce_agent.scheduler import local_zone
    from ce_agent.sdnotify import SystemdNotifier
    from ce_agent.server import AgentServer, parse_address
    from ce_agent.store import Store, StoreError
    from ce_agent.telemetry import Telemetry

    try:
        if options.listen is not None:
            parse_address(options.listen)
        logs.parse_level(options.log_level)
        if options.log_rotate is not None:
            logs.parse_rotate(options.log_rotate)
    except ValueError as exc:
        raise ConfigError([f"error: {exc}"]) from None
    zone = local_zone(environ)
    log = logging.getLogger("ce_agent.daemon")
    warn: Callable[[str], None] = lambda line: print(line, file=sys.stderr)  # noqa: E731 - until logging is set up

    def load() -> Config:
        plan, redactor, warnings = oneshot.load_or_explain(playbooks, inventories, selection, environ)
        for warning in warnings:
            warn(warning)
        try:
            return build_config(plan, redactor, time.time(), zone)
        except ValueError as exc:  # validated while loading; kept so a reload can never crash the loop
            raise ConfigError([f"error: {exc}", "1 error"]) from None

    first = load()
    holder: list[Daemon] = []
    try:
        logs.configure_logging(fmt=options.log_format, level=options.log_level, log_file=options.log_file,
                               rotate=options.log_rotate, keep=options.log_keep,
                               scrub=lambda text: (holder[0].scrub if holder else first.redactor.scrub)(text))
    except (ValueError, OSError) as exc:
        where = f" ({options.log_file})" if options.log_file else ""
        raise ConfigError([f"error: cannot log{where}: {getattr(exc, 'strerror', None) or exc}"]) from None
    warn = log.warning
    try:
        store, notices = Store.open(options.state_dir / "state.db", time.time())
    except StoreError as exc:
        raise ConfigError([first.redactor.scrub(f"error: {exc}")]) from None
    agent = Daemon(load, store, Telemetry(first.redactor.scrub), SystemdNotifier.from_environ(environ),
                   forks=options.forks, log=log)
    holder.append(agent)
    server = AgentServer(agent, options.listen) if options.listen is not None else None
    try:
        if server is not None:
            server.start()
    except OSError as exc:
        store.close()
        raise ConfigError([f"error: {exc.strerror or exc}"]) from None
    for notice in notices:
        log.warning("%s", first.redactor.scrub(notice))
    signal.signal(signal.SIGHUP, lambda *_: agent.request_reload())
    signal.signal(signal.SIGTERM, lambda *_: agent.request_stop())
    signal.signal(signal.SIGINT, lambda *_: agent.request_stop())
    try:
        agent.start(first)
        if server is not None:
            log.info("serving /metrics, /livez, /readyz, /healthz, /api/v1/status, /api/v1/alerts and / on http://%s",
                     server.address)
        return agent.run()
    finally:
        if server is not None:
            server.stop()
        store.close()
        from ce_agent import remote

        remote.close_masters(options.state_dir)  # ssh connections shared by `command` checks end with the agent
