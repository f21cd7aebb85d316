"""The daemon's live Prometheus metrics: latest results, histograms and counters, rendered on demand.

`Telemetry.registry` (prometheus_client, a registry of its own) is the model: a custom collector
yields every family, and any prometheus_client exposition works on it. `Telemetry.render()` is the
same families written by hand and cached per task, which /metrics serves (see its docstring)."""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import core as prom
from prometheus_client.exposition import generate_latest
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from ce_agent.contracts import Metric, Result, Status
from ce_agent.metrics import CHECK_GAUGES, CHECK_LABELS, Families, Family, LabelSet, add_slos, as_number, check_ids

if TYPE_CHECKING:
    from ce_agent.runner import Outcome

Scrub = Callable[[str], str]
TaskKey = tuple[str, str, str, str]  # kind, play, host, name (as the daemon keys its tasks)

DURATION_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)  # and +Inf
LATENESS_BUCKETS = (.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10)  # and +Inf
CHECK_RUN_STATUSES = tuple(s.name.lower() for s in Status)  # ok, warning, critical, unknown
RESULTS = ("success", "failure")
# scrubbing a label value is a regex pass per secret: host, play and check names repeat in every render
_SCRUB_CACHE = 16384


@dataclass(frozen=True, slots=True)
class _Ids:
    """What Families reads of a job; the job itself (and its plugin instance) is not kept alive."""

    kind: str
    name: str
    host: str
    play: str
    plugin_name: str


@dataclass(frozen=True, slots=True)
class _Latest:
    """A task's last outcome, reduced to what the families need (no summary, details or trace)."""

    job: _Ids
    result: Result
    duration_s: float
    samples: list[Metric]


class _Histogram:
    """Cumulative on output, per bucket in memory; guarded by the Telemetry's lock."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound falls in that bucket (le is "less than or equal")
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs, +Inf last, as HistogramMetricFamily.add_metric takes them."""
        totals = itertools.accumulate(self.counts)
        return list(zip(_LE_TEXT[self.bounds], totals))

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out = []
        total = 0
        for bound, count in zip(_LE_TEXT[self.bounds], self.counts):
            total += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {_num(total)}\n')
        braces = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{braces} {_num(self.sum)}\n")
        out.append(f"{name}_count{braces} {_num(total)}\n")
        return out


_LE_TEXT = {b: [floatToGoString(x) for x in b] + ["+Inf"] for b in (DURATION_BUCKETS, LATENESS_BUCKETS)}


@dataclass
class _Task:
    """One scheduled task's series: its latest outcome, and what accumulates over its runs."""

    latest: _Latest
    now: float
    duration: _Histogram = field(default_factory=lambda: _Histogram(DURATION_BUCKETS))
    runs: dict[str, int] = field(default_factory=dict)
    timeouts: int = 0
    # what it renders to, built once per change of the task rather than once per scrape
    text: dict[str, str] | None = None  # its lines of the per-task families
    part: _Part | None = None  # its perfdata or samples


@dataclass
class _Part:
    """A task's perfdata (checks) or samples (collectors) as metrics.Families gives them on their own,
    and their lines once formatted with a family's label names (the union over every task)."""

    families: list[Family]
    skipped: dict[str, int]
    names: dict[str, tuple[str, ...]]  # label names of each family, in order of appearance
    lines: dict[str, tuple[tuple[str, ...], str]] = field(default_factory=dict)  # family -> (names, text)

    @classmethod
    def build(cls, task: _Task, scrub: Scrub) -> _Part:
        own = Families(scrub)
        if task.latest.job.kind == "check":
            own.add_perfdata(task.latest)
        else:
            own.add_samples(task.latest)
        families = list(own.by_name.values())
        return cls(families, own.skipped, {f.name: tuple(f.label_names()) for f in families})

    def text(self, family: Family, name: str, names: tuple[str, ...]) -> str:
        """`family`'s series as lines of `name` (its name in the export) with label names `names`."""
        cached = self.lines.get(name)
        if cached is None or cached[0] != names:
            sample = name + "_total" if family.kind == "counter" else name
            cached = self.lines[name] = (names, "".join(_series_lines(sample, family.series, names)))
        return cached[1]


# the families with one block of lines per task: name (counters without _total) -> type, help
_CHECK_FAMILIES = {
    **{name: ("gauge", help_text) for name, help_text, _ in CHECK_GAUGES},
    "ce_check_duration_seconds": ("histogram", "How long a check's runs took."),
    "ce_check_runs": ("counter", "A check's runs, by the status they gave."),
    "ce_check_timeouts": ("counter", "A check's runs stopped at their timeout (also counted as unknown)."),
}
_COLLECTOR_FAMILIES = {
    "ce_collector_duration_seconds": ("histogram", "How long a collector's runs took."),
    "ce_collector_runs": ("counter", "A collector's runs: success, or failure (raised or timed out)."),
    "ce_collector_last_run_timestamp_seconds": ("gauge", "When the collector last ran (Unix time)."),
}
_SKIPPED_HELP = "Due runs not started because the task's previous run was still going."
_ERRORS_HELP = "Plugin errors (raised, timed out, its process died) in the task's last 10 runs."
_DISABLED_HELP = "1 when the task was stopped by its disable_after_errors (until a reload)."
_CHECK_TASK_LABELS = ("check", "host", "play")  # of a check's histogram and counters (no plugin)
_COLLECTOR_TASK_LABELS = ("collector", "host", "play")
# the agent's own families, in the order rendered: name (counters without _total) -> type, help
_AGENT_FAMILIES = {
    "ce_agent_start_time_seconds": ("gauge", "When the agent started (Unix time)."),
    "ce_config_last_reload_successful": ("gauge", "Whether the last configuration load worked (1) or not (0)."),
    "ce_config_last_reload_success_timestamp_seconds": (
        "gauge", "When the configuration was last loaded successfully (Unix time)."),
    "ce_config_reloads": ("counter", "Configuration loads (the first one included), by result."),
    "ce_notification_delivery_failures": (
        "counter", "Notifications a channel did not accept in one delivery round (after its quick retries)."),
    "ce_notifications_sent": ("counter", "Notifications a channel accepted."),
    "ce_outbox_depth": ("gauge", "Notifications waiting in the outbox."),
    # the store keeps this count across restarts; exposed as the counter it is
    "ce_outbox_dropped": ("counter", "Notifications the full outbox dropped (oldest first)."),
    "ce_plugin_load_errors": ("gauge", "Tasks whose plugin could not be loaded."),
    "ce_scheduler_last_tick_timestamp_seconds": ("gauge", "When the scheduler's loop last went round (Unix time)."),
    "ce_scheduler_lateness_seconds": ("histogram", "How late runs started after they were due."),
    "ce_scheduler_tasks": ("gauge", "Tasks scheduled."),
}
# an agent family's series, as (label pairs, value); the lateness histogram is given whole
_AgentSeries = dict[str, "list[tuple[LabelSet, float]] | _Histogram"]


class _Model(Collector):
    """What a Telemetry's registry collects besides the process and platform collectors: every ce_*
    family, built afresh from the Telemetry's state on each collect()."""

    def __init__(self, build: Callable[[], list[prom.Metric]]) -> None:
        self._build = build

    def collect(self) -> Iterable[prom.Metric]:
        # a list built whole under the Telemetry's lock, not a generator holding the lock while
        # generate_latest (or a push to a gateway) consumes it: recording never waits on a serializer
        return self._build()


class Telemetry:
    """The daemon's metrics: latest results and samples, histograms and counters; thread-safe.

    Every method may be called from any thread. `registry` holds every family (a custom collector
    over this object's state, and prometheus_client's process and platform collectors): embedding
    code may serve or push it with any prometheus_client exposition. `render()` writes the same
    families itself, with caching: the per-task part of the text (the bulk of it) is rendered again
    only after a change (a version counter); the agent's own gauges and the process metrics, a few
    dozen lines that change on every tick, are rendered on every call."""

    def __init__(self, scrub: Scrub = lambda s: s, start_time: float | None = None) -> None:
        self._lock = threading.Lock()
        self._scrub = self._memo(scrub)
        self._start_time = time.time() if start_time is None else start_time
        self._tasks: dict[TaskKey, _Task] = {}
        self._skipped: dict[tuple[str, str, str], int] = {}  # (play, host, name) -> count
        self._errors: dict[tuple[str, str, str], tuple[int, bool]] = {}  # (play, host, name) -> (errors, disabled)
        self._version = 0
        self._text_version = -1
        self._text = ""
        self._lateness = _Histogram(LATENESS_BUCKETS)
        self._sent: dict[str, int] = {}
        self._failed: dict[str, int] = {}
        self._reloads = dict.fromkeys(RESULTS, 0)
        self._reload_ok: bool | None = None
        self._reload_success_at: float | None = None
        self._outbox: tuple[int, int] | None = None
        self._plugin_errors: int | None = None
        self._task_count: int | None = None
        self._slos: list[tuple[str, str, str, dict[str, Any], float]] = []
        self._last_tick: float | None = None
        # process_* and python_info: ours alone, so two agents in one test process never collide.
        # `registry` is the whole model; `_system` holds the same two collectors alone, for render(),
        # which writes the ce_* families itself (generate_latest over a thousand checks' families
        # takes tens of times longer than the cached text)
        system = (ProcessCollector(registry=None), PlatformCollector(registry=None))
        self._system = CollectorRegistry(auto_describe=False)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Model(self._metrics))  # first: ce_* before process_*, as render() has them
        for collector in system:
            self._system.register(collector)
            self.registry.register(collector)

    @staticmethod
    def _memo(scrub: Scrub) -> Scrub:
        return functools.lru_cache(maxsize=_SCRUB_CACHE)(scrub)

    # ---- recording ------------------------------------------------------------------------------------

    def set_scrub(self, scrub: Scrub) -> None:
        """Use `scrub` from now on (a reload brought new secrets); every label already held is
        scrubbed again at the next render, since label values are scrubbed when rendered."""
        memo = self._memo(scrub)
        with self._lock:
            self._scrub = memo
            for task in self._tasks.values():
                task.text = task.part = None
            self._version += 1

    def record_outcome(self, outcome: Outcome, now: float) -> None:
        """A task's run: its latest values replace the previous ones; histograms and counters add up."""
        job = outcome.job
        ids = _Ids(str(job.kind), str(job.name), str(job.host), str(job.play), str(job.plugin_name))
        status = outcome.result.status
        status = status if isinstance(status, Status) else Status.from_code(int(status))
        latest = _Latest(ids, Result(status, "", list(outcome.result.metrics)), float(outcome.duration_s),
                         list(outcome.samples))
        duration = float(outcome.duration_s)
        key = (ids.kind, ids.play, ids.host, ids.name)
        with self._lock:
            task = self._tasks.get(key)
            if task is None:
                task = self._tasks[key] = _Task(latest, now)
                zeros = CHECK_RUN_STATUSES if ids.kind == "check" else RESULTS
                task.runs = dict.fromkeys(zeros, 0)  # every series from the start, so rate() sees the first one
            task.latest, task.now, task.text, task.part = latest, now, None, None
            if not math.isnan(duration):
                task.duration.observe(max(0.0, duration))
            if ids.kind == "check":
                task.runs[status.name.lower()] += 1
                task.timeouts += bool(outcome.timed_out)
            else:
                task.runs["success" if status == Status.OK and not outcome.timed_out else "failure"] += 1
            self._version += 1

    def record_start(self, lateness: float) -> None:
        """A run started `lateness` seconds after it was due."""
        if math.isnan(lateness):
            return
        with self._lock:
            # a run started early (the clock stepped back) was not late; negatives would break _sum
            self._lateness.observe(max(0.0, lateness))

    def record_skipped(self, check: str, host: str, play: str) -> None:
        """A due run refused because the task's previous run was still going."""
        with self._lock:
            key = (play, host, check)
            self._skipped[key] = self._skipped.get(key, 0) + 1
            self._version += 1

    def set_plugin_errors(self, check: str, host: str, play: str, errors: int, disabled: bool) -> None:
        """A task's plugin errors in its last runs, and whether that disabled it."""
        with self._lock:
            key = (play, host, check)
            if self._errors.get(key) != (errors, disabled):
                self._errors[key] = (int(errors), bool(disabled))
                self._version += 1

    def record_delivery(self, channel: str, sent: bool) -> None:
        """One delivery attempt of one notification to `channel`."""
        with self._lock:
            for counts in (self._sent, self._failed):
                counts.setdefault(channel, 0)
            (self._sent if sent else self._failed)[channel] += 1

    def set_outbox(self, depth: int, dropped_total: int) -> None:
        """The outbox's depth, and how many notifications it ever dropped (kept by the store)."""
        with self._lock:
            self._outbox = (int(depth), int(dropped_total))

    def set_plugin_load_errors(self, count: int) -> None:
        with self._lock:
            self._plugin_errors = int(count)

    def record_reload(self, ok: bool, now: float) -> None:
        """A configuration load (the first one included): its result and, when it worked, its time."""
        with self._lock:
            self._reload_ok = bool(ok)
            self._reloads[RESULTS[0] if ok else RESULTS[1]] += 1
            if ok:
                self._reload_success_at = now

    def set_slos(self, rows: list[tuple[str, str, str, dict[str, Any], float]]) -> None:
        """The SLOs as last evaluated, (play, host, name, `slo status` JSON, when) rows: the ce_slo_*
        families, as `ce-agent metrics` and --textfile-dir export them (the rows replace the old ones)."""
        with self._lock:
            self._slos = list(rows)
            self._version += 1

    def set_tasks(self, count: int) -> None:
        with self._lock:
            self._task_count = int(count)

    def tick(self, now: float) -> None:
        """The scheduler's loop went round: a stalled loop shows as an old timestamp."""
        with self._lock:
            self._last_tick = now

    def retain(self, alive: set[TaskKey]) -> None:
        """Drop every series of the tasks not in `alive` ({(kind, play, host, name)}), after a reload."""
        names = {(play, host, name) for _kind, play, host, name in alive}
        with self._lock:
            gone = [key for key in self._tasks if key not in alive]
            for key in gone:
                del self._tasks[key]
            # a skip is known by (play, host, name) only: it stays while any task of that name does
            skipped = [key for key in self._skipped if key not in names]
            for key in skipped:
                del self._skipped[key]
            # a reload starts every task's error count afresh (and enables what was disabled)
            skipped += list(self._errors)
            self._errors.clear()
            if gone or skipped:
                self._version += 1

    # ---- rendering ------------------------------------------------------------------------------------

    def render(self) -> str:
        """Every metric in the Prometheus text format 0.0.4: what /metrics serves.

        It is the serialization of `registry`'s families (the ce_* ones written here, per-task lines
        cached until the task changes; process_* and python_info by prometheus_client), the same
        samples as `generate_latest(self.registry)` (tests/test_telemetry.py compares the two sample
        for sample over several states) in a fraction of the time. Code embedding the agent can use
        `registry` with any prometheus_client exposition instead (generate_latest, a push gateway)."""
        with self._lock:
            if self._text_version != self._version:
                self._text = self._render_tasks()
                self._text_version = self._version
            own, agent = self._text, self._render_agent()
        # outside the lock: reading /proc must not hold up the threads that record results
        process = generate_latest(self._system).decode("utf-8")
        # one join: `a + b + c` copies the 2 MB of a thousand checks twice, and slowly (1.3 ms vs 0.15)
        return "".join((own, agent, process))

    def _render_tasks(self) -> str:
        """The per-task families, sorted by name; called with the lock held."""
        scrub = self._scrub
        blocks = self._render_parts(scrub)
        checks = [t for t in self._tasks.values() if t.latest.job.kind == "check"]
        collectors = [t for t in self._tasks.values() if t.latest.job.kind != "check"]
        # every family of ours is declared (HELP, TYPE) even before it has a series, as prometheus_client
        # does for a labelled metric: a dashboard or rule can tell "none yet" from "not this version"
        for tasks, specs in ((checks, _CHECK_FAMILIES), (collectors, _COLLECTOR_FAMILIES)):
            texts = [_task_lines(t, scrub) for t in tasks]
            for name, (kind, help_text) in specs.items():
                blocks[name] = "".join([_header(name, kind, help_text), *(text[name] for text in texts)])
        blocks["ce_scheduler_skipped_runs"] = "".join([
            _header("ce_scheduler_skipped_runs", "counter", _SKIPPED_HELP),
            *(f"ce_scheduler_skipped_runs_total{{{_labels(scrub, check=check, host=host, play=play)}}} {_num(n)}\n"
              for (play, host, check), n in self._skipped.items()),
        ])
        for name, help_text, index in (("ce_check_plugin_errors", _ERRORS_HELP, 0),
                                       ("ce_check_disabled", _DISABLED_HELP, 1)):
            blocks[name] = "".join([
                _header(name, "gauge", help_text),
                *(f"{name}{{{_labels(scrub, check=check, host=host, play=play)}}} {_num(float(v[index]))}\n"
                  for (play, host, check), v in self._errors.items()),
            ])
        return "".join(blocks[name] for name in sorted(blocks))

    def _render_parts(self, scrub: Scrub) -> dict[str, str]:
        """The perfdata and sample families as text, each task's lines formatted once per change."""
        finished, sources, duplicated = self._merge_parts(scrub)
        blocks = {}
        for family in finished:
            if family.name in sources and family.name not in duplicated:
                names = tuple(dict.fromkeys(n for part, f in sources[family.name] for n in part.names[f.name]))
                blocks[family.name] = "".join([_header(family.name, family.kind, family.help),
                                               *(part.text(f, family.name, names) for part, f in sources[family.name])])
            else:
                blocks[family.name] = "".join(_family_lines(family))
        return blocks

    def _merge_parts(self, scrub: Scrub) -> tuple[list[Family], dict[str, list[tuple[_Part, Family]]], set[str]]:
        """The perfdata and sample families, merged as metrics.Families would have built them from
        every task's outcome in turn (and finished: build info, skipped counts); with, by family, the
        tasks' parts it came from, and the families in which two tasks' series coincided. Called with
        the lock held, by render() and by the registry's collector alike."""
        merged = Families(scrub)
        sources: dict[str, list[tuple[_Part, Family]]] = {}
        duplicated: set[str] = set()
        for task in self._tasks.values():
            if task.part is None:
                task.part = _Part.build(task, scrub)
            part = task.part
            for reason, count in part.skipped.items():
                merged.skipped[reason] += count
            for family in part.families:
                name = family.name
                if task.latest.job.kind != "check":
                    # another task may hold this name with the other type: the rule of a single export
                    name, _ = merged.sample_family(family.sample_name)
                target = merged.by_name.setdefault(name, Family(name, family.help, kind=family.kind))
                before = len(target.series)
                target.series.update(family.series)
                if (overlap := before + len(family.series) - len(target.series)) > 0:
                    merged.skipped["duplicate"] += overlap
                    duplicated.add(name)  # two tasks' series coincide (scrubbed alike): rendered whole below
                sources.setdefault(name, []).append((part, family))
        add_slos(merged, self._slos)
        return merged.finish(), sources, duplicated

    def _agent_series(self) -> _AgentSeries:
        """The agent's own families' series, by name (as in _AGENT_FAMILIES); called with the lock held.
        A value not known yet has no series: declared without a value rather than with a made-up 0."""
        def one(value: float | None) -> list[tuple[LabelSet, float]]:
            return [] if value is None else [((), value)]

        def by_channel(counts: dict[str, int]) -> list[tuple[LabelSet, float]]:
            return [((("channel", self._scrub(c)),), n) for c, n in counts.items()]

        depth, dropped = self._outbox or (None, None)
        return {
            "ce_agent_start_time_seconds": one(self._start_time),
            "ce_config_last_reload_successful": one(None if self._reload_ok is None else float(self._reload_ok)),
            "ce_config_last_reload_success_timestamp_seconds": one(self._reload_success_at),
            "ce_config_reloads": [((("result", r),), n) for r, n in self._reloads.items()],
            "ce_notification_delivery_failures": by_channel(self._failed),
            "ce_notifications_sent": by_channel(self._sent),
            "ce_outbox_depth": one(depth),
            "ce_outbox_dropped": one(dropped),
            "ce_plugin_load_errors": one(self._plugin_errors),
            "ce_scheduler_last_tick_timestamp_seconds": one(self._last_tick),
            "ce_scheduler_lateness_seconds": self._lateness,
            "ce_scheduler_tasks": one(self._task_count),
        }

    def _render_agent(self) -> str:
        """The agent's own families (a few lines, changing on every tick); called with the lock held."""
        out: list[str] = []
        series = self._agent_series()
        for name, (kind, help_text) in _AGENT_FAMILIES.items():
            out.append(_header(name, kind, help_text))
            held = series[name]
            if isinstance(held, _Histogram):
                out.extend(held.lines(name, ""))
            else:
                sample = _sample_name(name, kind)
                out.extend(_line(sample, labels, value) for labels, value in held)
        return "".join(out)

    # ---- the registry's model ---------------------------------------------------------------------------

    def _metrics(self) -> list[prom.Metric]:
        """Every ce_* family render() writes, as prometheus_client metric families: the same names,
        types, help, labels and values, from the same state under the same lock, in the same order.
        Nothing is cached here (render() is the fast path) but each task's perfdata or samples as
        families (_Part), which render() builds too. Label names are given per family: add_metric
        pairs names and values with zip, so a missing name would drop its label without an error."""
        with self._lock:
            scrub = self._scrub
            built: dict[str, prom.Metric] = {}
            finished, _sources, _duplicated = self._merge_parts(scrub)
            for family in finished:
                built[family.name] = _family_metric(family)
            built.update(self._task_metrics(scrub))
            skipped = built["ce_scheduler_skipped_runs"] = prom.CounterMetricFamily(
                "ce_scheduler_skipped_runs", _SKIPPED_HELP, labels=_CHECK_TASK_LABELS)
            for (play, host, check), n in self._skipped.items():
                skipped.add_metric([scrub(check), scrub(host), scrub(play)], n)
            for name, help_text, index in (("ce_check_plugin_errors", _ERRORS_HELP, 0),
                                           ("ce_check_disabled", _DISABLED_HELP, 1)):
                gauge = built[name] = prom.GaugeMetricFamily(name, help_text, labels=_CHECK_TASK_LABELS)
                for (play, host, check), v in self._errors.items():
                    gauge.add_metric([scrub(check), scrub(host), scrub(play)], float(v[index]))
            metrics = [built[name] for name in sorted(built)]
            series = self._agent_series()
            for name, (kind, help_text) in _AGENT_FAMILIES.items():
                held = series[name]
                if isinstance(held, _Histogram):
                    metrics.append(prom.HistogramMetricFamily(name, help_text, buckets=held.buckets(),
                                                              sum_value=held.sum))
                else:
                    metric = prom.Metric(name, help_text, kind)
                    for labels, value in held:
                        metric.add_sample(_sample_name(name, kind), dict(labels), value)
                    metrics.append(metric)
        return metrics

    def _task_metrics(self, scrub: Scrub) -> dict[str, prom.Metric]:
        """The families with a block per task (_CHECK_FAMILIES, _COLLECTOR_FAMILIES); lock held."""
        def declared(specs: dict[str, tuple[str, str]],
                     labels: dict[str, tuple[str, ...]]) -> dict[str, prom.Metric]:
            types = {"gauge": prom.GaugeMetricFamily, "counter": prom.CounterMetricFamily,
                     "histogram": prom.HistogramMetricFamily}
            return {name: types[kind](name, help_text, labels=labels[name])
                    for name, (kind, help_text) in specs.items()}

        checks = declared(_CHECK_FAMILIES, {
            **{name: CHECK_LABELS for name, _help, _value in CHECK_GAUGES},  # the latest-run gauges: + plugin
            "ce_check_duration_seconds": _CHECK_TASK_LABELS,
            "ce_check_runs": (*_CHECK_TASK_LABELS, "status"),
            "ce_check_timeouts": _CHECK_TASK_LABELS,
        })
        collectors = declared(_COLLECTOR_FAMILIES, {
            "ce_collector_duration_seconds": _COLLECTOR_TASK_LABELS,
            "ce_collector_runs": (*_COLLECTOR_TASK_LABELS, "result"),
            "ce_collector_last_run_timestamp_seconds": _COLLECTOR_TASK_LABELS,
        })
        for task in self._tasks.values():
            ids = task.latest.job
            if ids.kind == "check":
                given = check_ids(ids)
                named = [scrub(str(given[n])) for n in CHECK_LABELS]
                for name, _help, value in CHECK_GAUGES:
                    number = as_number(value(task.latest, task.now))
                    if number is not None:
                        checks[name].add_metric(named, number)
                labels = [scrub(ids.name), scrub(ids.host), scrub(ids.play)]
                checks["ce_check_duration_seconds"].add_metric(labels, task.duration.buckets(), task.duration.sum)
                for status, n in task.runs.items():
                    checks["ce_check_runs"].add_metric([*labels, status], n)
                checks["ce_check_timeouts"].add_metric(labels, task.timeouts)
            else:
                labels = [scrub(ids.name), scrub(ids.host), scrub(ids.play)]
                collectors["ce_collector_duration_seconds"].add_metric(
                    labels, task.duration.buckets(), task.duration.sum)
                for result, n in task.runs.items():
                    collectors["ce_collector_runs"].add_metric([*labels, result], n)
                collectors["ce_collector_last_run_timestamp_seconds"].add_metric(labels, task.now)
        return {**checks, **collectors}


def _task_lines(task: _Task, scrub: Scrub) -> dict[str, str]:
    """A task's lines of each per-task family (its latest gauges come from metrics.Families), kept
    until the task changes."""
    if task.text is None:
        task.text = _render_task(task, scrub)
    return task.text


def _render_task(task: _Task, scrub: Scrub) -> dict[str, str]:
    ids = task.latest.job
    text: dict[str, str] = {}
    if ids.kind == "check":
        # the latest-run gauges, as metrics.Families gives them to `run --textfile-dir`
        named = _labels(scrub, **check_ids(ids))
        for name, _help, value in CHECK_GAUGES:
            number = as_number(value(task.latest, task.now))
            text[name] = "" if number is None else f"{name}{{{named}}} {_num(number)}\n"
        labels = _labels(scrub, check=ids.name, host=ids.host, play=ids.play)
        text["ce_check_duration_seconds"] = "".join(task.duration.lines("ce_check_duration_seconds", labels))
        text["ce_check_runs"] = "".join(
            f'ce_check_runs_total{{{labels},status="{s}"}} {_num(n)}\n' for s, n in task.runs.items())
        text["ce_check_timeouts"] = f"ce_check_timeouts_total{{{labels}}} {_num(task.timeouts)}\n"
    else:
        labels = _labels(scrub, collector=ids.name, host=ids.host, play=ids.play)
        text["ce_collector_duration_seconds"] = "".join(task.duration.lines("ce_collector_duration_seconds", labels))
        text["ce_collector_runs"] = "".join(
            f'ce_collector_runs_total{{{labels},result="{r}"}} {_num(n)}\n' for r, n in task.runs.items())
        text["ce_collector_last_run_timestamp_seconds"] = (
            f"ce_collector_last_run_timestamp_seconds{{{labels}}} {_num(task.now)}\n")
    return text


def _family_metric(family: Family) -> prom.Metric:
    """A metrics.Family as prometheus_client's, every series with every label name of the family (""
    when it has none), as metrics.build_registry and _family_lines do. A plain Metric: its name is
    the family's as is (CounterMetricFamily would strip a `_total` a collector's sample kept)."""
    names = family.label_names()
    metric = prom.Metric(family.name, family.help, family.kind)
    for labels, value in family.series.items():
        given = dict(labels)
        metric.add_sample(family.sample_name, {n: given.get(n, "") for n in names}, value)
    return metric


def _family_lines(family: Family) -> Iterable[str]:
    """A metrics.Family as text: every series gets every label name of the family ("" when it has
    none), as metrics.build_registry does."""
    yield _header(family.name, family.kind, family.help)
    yield from _series_lines(family.sample_name, family.series, family.label_names())


def _series_lines(sample: str, series: dict[LabelSet, float], names: Iterable[str]) -> Iterable[str]:
    names = tuple(names)
    for labels, value in series.items():
        given = dict(labels)
        text = ",".join(f'{n}="{_escape(given.get(n, ""))}"' for n in names)
        yield f"{sample}{{{text}}} {_num(value)}\n" if text else f"{sample} {_num(value)}\n"


def _line(sample: str, labels: LabelSet, value: float) -> str:
    text = ",".join(f'{n}="{_escape(v)}"' for n, v in labels)
    return f"{sample}{{{text}}} {_num(value)}\n" if text else f"{sample} {_num(value)}\n"


def _sample_name(name: str, kind: str) -> str:
    return name + "_total" if kind == "counter" else name


def _header(name: str, kind: str, help_text: str) -> str:
    # text format 0.0.4 names a counter's family by its sample, NAME_total (as prometheus_client does)
    shown = name + "_total" if kind == "counter" else name
    help_text = help_text.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {shown} {help_text}\n# TYPE {shown} {kind}\n"


def _labels(scrub: Scrub, **labels: str) -> str:
    return ",".join(f'{k}="{_escape(scrub(str(v)))}"' for k, v in labels.items())


def _escape(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _num(value: float) -> str:
    # integers are by far the commonest value here (counts, statuses): skip the float formatting
    if type(value) is int:
        return f"{value}.0" if -1_000_000 < value < 1_000_000 else floatToGoString(value)
    return floatToGoString(value)
