"""Prometheus exposition of check results and samples, in a registry of its own."""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ce_agent import __version__

TEXTFILE_NAME = "ce-agent.prom"
CHECK_LABELS = ("check", "host", "play", "plugin")
METRIC_LABELS = ("check", "host", "play", "metric", "unit")
SAMPLE_LABELS = ("host", "play", "collector")
# the daemon's histograms (ce_agent.telemetry): their _bucket, _sum and _count sample names are taken too
HISTOGRAMS = ("ce_check_duration_seconds", "ce_collector_duration_seconds", "ce_scheduler_lateness_seconds")
# every family this module and ce_agent.telemetry define (counters without _total, as Family.name has
# them): a collector sample whose name would land on one is renamed
RESERVED = {
    "ce_check_status", "ce_check_last_duration_seconds", "ce_check_last_run_timestamp_seconds", "ce_check_metric",
    "ce_build_info", "ce_export_skipped_samples",
    "ce_slo_objective_percent", "ce_slo_sli_percent", "ce_slo_error_budget_remaining", "ce_slo_burn_rate",
    # the daemon's own (ce_agent.telemetry)
    "ce_check_runs", "ce_check_timeouts", "ce_collector_runs", "ce_collector_last_run_timestamp_seconds",
    "ce_scheduler_skipped_runs", "ce_scheduler_tasks", "ce_scheduler_last_tick_timestamp_seconds",
    "ce_notifications_sent", "ce_notification_delivery_failures", "ce_outbox_depth", "ce_outbox_dropped",
    "ce_plugin_load_errors", "ce_config_last_reload_successful", "ce_config_last_reload_success_timestamp_seconds",
    "ce_config_reloads", "ce_agent_start_time_seconds", "ce_check_plugin_errors", "ce_check_disabled",
    *HISTOGRAMS, *(h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")),
}
SKIP_REASONS = ("no_value", "duplicate")

_BAD_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_BAD_LABEL = re.compile(r"[^a-zA-Z0-9_]")

LabelSet = tuple[tuple[str, str], ...]


def metric_name(name: str) -> str:
    """`name` as a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*): other characters become `_`."""
    name = _BAD_NAME.sub("_", name) or "_"
    return "_" + name if name[0].isdigit() else name


def label_name(name: str) -> str:
    """`name` as a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, never the reserved `__` prefix)."""
    name = _BAD_LABEL.sub("_", name) or "_"
    if name[0].isdigit():
        name = "_" + name
    return "label" + name if name.startswith("__") else name


@dataclass
class Family:
    """One gauge family: its series by label set; label names are the union over its series."""

    name: str
    help: str
    series: dict[LabelSet, float] = field(default_factory=dict)
    kind: str = "gauge"  # or "counter": its samples are named NAME_total

    @property
    def sample_name(self) -> str:
        return self.name + "_total" if self.kind == "counter" else self.name

    def label_names(self) -> list[str]:
        names: dict[str, None] = {}
        for labels in self.series:
            names.update(dict.fromkeys(k for k, _ in labels))
        return list(names)


def check_ids(job: Any) -> dict[str, str]:
    """The labels that name a check's series (CHECK_LABELS)."""
    return {"check": job.name, "host": job.host, "play": job.play, "plugin": job.plugin_name}


# a check's latest-run gauges, labelled check_ids: name, help, value from (outcome, time of the run)
CHECK_GAUGES: tuple[tuple[str, str, Callable[[Any, float], Any]], ...] = (
    ("ce_check_status", "Check status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.", lambda o, now: int(o.result.status)),
    ("ce_check_last_duration_seconds", "How long the check's last run took.", lambda o, now: o.duration_s),
    ("ce_check_last_run_timestamp_seconds", "When the check last ran (Unix time).", lambda o, now: now),
)


class Families:
    """The families of one export, built from a run's outcomes; counts what it had to leave out."""

    def __init__(self, scrub: Callable[[str], str]) -> None:
        self.scrub = scrub
        self.by_name: dict[str, Family] = {}
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)

    def set(self, name: str, help_text: str, fixed: Mapping[str, str], own: Mapping[str, Any], value: Any,
            kind: str = "gauge") -> None:
        """One series: `fixed` labels are ours; `own` are a plugin's, renamed `exported_NAME` when they
        clash with ours (as Prometheus does on a scrape); the last value of a label set wins."""
        number = as_number(value)
        if number is None:
            self.skipped["no_value"] += 1
            return
        labels = {k: self.scrub(str(v)) for k, v in fixed.items()}
        for key, val in own.items():
            key = label_name(str(key))
            while key in fixed:
                key = "exported_" + key
            labels[key] = self.scrub(str(val))
        family = self.by_name.setdefault(name, Family(name, help_text, kind=kind))
        key_set = tuple(sorted(labels.items()))
        if key_set in family.series:
            self.skipped["duplicate"] += 1
        family.series[key_set] = number

    def add_outcomes(self, outcomes: Iterable[Any], now: float) -> None:
        for o in outcomes:
            self.add_outcome(o, now)

    def add_outcome(self, o: Any, now: float) -> None:
        """One outcome's series: a check's status, last duration, last run (`now`) and perfdata, or a
        collector's samples."""
        if o.job.kind == "check":
            ids = check_ids(o.job)
            for name, help_text, value in CHECK_GAUGES:
                self.set(name, help_text, ids, {}, value(o, now))
            self.add_perfdata(o)
        else:
            self.add_samples(o)

    def add_perfdata(self, o: Any) -> None:
        """A check outcome's metrics, as ce_check_metric series."""
        job = o.job
        for m in o.result.metrics:
            fixed = {"check": job.name, "host": job.host, "play": job.play, "metric": m.name, "unit": m.unit}
            self.set("ce_check_metric", "A check's performance data, by metric name and unit.",
                     fixed, m.labels, m.value)

    def add_samples(self, o: Any) -> None:
        """A collector outcome's samples, each in the family its name gives (see sample_family)."""
        job = o.job
        for m in o.samples:
            name, kind = self.sample_family(metric_name("ce_" + str(m.name)))
            fixed = {"host": job.host, "play": job.play, "collector": job.name}
            self.set(name, f"Collector sample {m.name}" + (f" ({m.unit})." if m.unit else "."),
                     fixed, m.labels, m.value, kind)

    def sample_family(self, name: str) -> tuple[str, str]:
        """The family name and type of a collector sample: NAME_total is a counter (the Prometheus
        convention, which `promtool check metrics` enforces); a name taken by one of our families or
        by a family of the other type gets `_sample` appended."""
        kind = "counter" if name.endswith("_total") and len(name) > len("ce__total") else "gauge"
        base = name[: -len("_total")] if kind == "counter" else name
        while base in RESERVED or (base in self.by_name and self.by_name[base].kind != kind):
            base += "_sample"
        return base, kind

    def finish(self) -> list[Family]:
        """Every family, with the build info and the skipped-sample counts, sorted by name."""
        self.set("ce_build_info", "ce-agent's version.", {"version": __version__}, {}, 1)
        for reason, count in self.skipped.items():
            self.by_name.setdefault("ce_export_skipped_samples", Family(
                "ce_export_skipped_samples",
                "Values left out of this export: no_value (None or NaN), duplicate (a label set seen twice; last kept).",
            )).series[(("reason", reason),)] = float(count)
        return [self.by_name[name] for name in sorted(self.by_name)]


def as_number(value: Any) -> float | None:
    """`value` as a sample value: None for None, a bool, NaN or what is not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def families(outcomes: Iterable[Any], now: float, scrub: Callable[[str], str] = lambda s: s,
             slos: Iterable[Any] = ()) -> list[Family]:
    """The gauge families of a run's outcomes (and SLO statuses), as plain data (no prometheus_client)."""
    built = Families(scrub)
    built.add_outcomes(outcomes, now)
    add_slos(built, slos)
    return built.finish()


def build_registry(outcomes: Iterable[Any], now: float, scrub: Callable[[str], str] = lambda s: s,
                   slos: Iterable[Any] = ()) -> Any:
    """A `prometheus_client.CollectorRegistry` holding the families of a run's outcomes.

    Label values are passed through `scrub` (secrets masked). Within a family, a series lacking one of
    the family's label names gets it empty, which Prometheus treats as absent: every line is valid."""
    return registry_of(families(outcomes, now, scrub, slos))


def registry_of(snapshot: list[Family]) -> Any:
    """A registry of its own (never prometheus_client's global one) serving these families."""
    from prometheus_client.core import Metric
    from prometheus_client.registry import Collector, CollectorRegistry

    class Snapshot(Collector):
        def collect(self) -> Iterable[Metric]:
            for family in snapshot:
                names = family.label_names()
                metric = Metric(family.name, family.help, family.kind)
                for labels, value in family.series.items():
                    given = dict(labels)
                    metric.add_sample(family.sample_name, {n: given.get(n, "") for n in names}, value)
                yield metric

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot())
    return registry


def render_text(registry: Any) -> str:
    """The registry in the Prometheus text format (what node_exporter's textfile collector reads)."""
    from prometheus_client.exposition import generate_latest

    return generate_latest(registry).decode("utf-8")


def write_textfile(directory: Path | str, text: str) -> Path:
    """Write DIRECTORY/ce-agent.prom, mode 0644, atomically: a temporary file in the same directory
    (not named *.prom, so node_exporter never reads it half-written) renamed over the old one.
    Raises OSError when the directory is missing or not writable.

    The temporary file's name holds the writer's pid (`.ce-agent.prom.PID.RANDOM.tmp`): one left by a
    killed run is removed by the next write, and never one that a live run is still writing."""
    directory = Path(directory)
    target = directory / TEXTFILE_NAME
    prefix = ".ce-agent.prom."
    for entry in os.scandir(directory):
        pid = entry.name[len(prefix):].split(".", 1)[0] if entry.name.startswith(prefix) else ""
        if entry.name.endswith(".tmp") and pid.isdigit() and not _process_alive(int(pid)):
            try:
                os.unlink(entry.path)
            except OSError:
                pass  # another run removed it first
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f"{prefix}{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def stored_outcomes(results: Iterable[Any], samples: Iterable[Any]) -> list[tuple[Any, float]]:
    """The state database's newest results and samples (store.ResultRow, store.SampleRow) as
    (outcome, when) pairs that Families.add_outcome reads: one per check, one per collector run."""
    from types import SimpleNamespace

    from ce_agent.contracts import Metric, Result, Status

    pairs: list[tuple[Any, float]] = []
    for r in results:
        job = SimpleNamespace(kind="check", name=r.check, host=r.host, play=r.play, plugin_name=r.plugin)
        result = Result(Status.from_code(r.status), r.summary, [Metric.from_dict(m) for m in r.metrics])
        pairs.append((SimpleNamespace(job=job, result=result, duration_s=r.duration_s, samples=[]), r.ts))
    runs: dict[tuple[str, str, str], Any] = {}
    for s in samples:
        key = (s.play, s.host, s.collector)
        if key not in runs:
            job = SimpleNamespace(kind="collector", name=s.collector, host=s.host, play=s.play, plugin_name="")
            runs[key] = SimpleNamespace(job=job, result=None, duration_s=0.0, samples=[])
            pairs.append((runs[key], s.ts))
        runs[key].samples.append(Metric(s.name, s.value, s.unit, dict(s.labels)))
    return pairs


def render_stored(results: Iterable[Any], samples: Iterable[Any], scrub: Callable[[str], str] = lambda s: s,
                  slos: Iterable[Any] = ()) -> str:
    """`ce-agent metrics`: the newest stored values in the Prometheus text format (as --textfile-dir),
    with the SLOs as last evaluated (store.slo_statuses())."""
    built = Families(scrub)
    for outcome, when in stored_outcomes(results, samples):
        built.add_outcome(outcome, when)
    add_slos(built, slos)
    return render_text(registry_of(built.finish()))


SLO_FAMILIES = (
    ("ce_slo_objective_percent", "The SLO's objective, in percent of good events."),
    ("ce_slo_sli_percent", "The SLO's indicator over its window, in percent of good events."),
    ("ce_slo_error_budget_remaining", "The share of the SLO's error budget left (1 untouched, below 0 overspent)."),
    ("ce_slo_burn_rate", "How fast the SLO's error budget burns over a window (1 = exactly at the objective)."),
)


def add_slos(built: Families, rows: Iterable[tuple[str, str, str, Mapping[str, Any], float]]) -> None:
    """The SLO statuses as last evaluated (store.slo_statuses()): objective, SLI, budget left and burn
    rates by window; an SLO without data has no SLI series (no value is not 0)."""
    helps = dict(SLO_FAMILIES)
    for play, host, name, data, _at in rows:
        ids = {"slo": name, "host": host, "play": play}
        built.set("ce_slo_objective_percent", helps["ce_slo_objective_percent"], ids, {}, data.get("objective"))
        built.set("ce_slo_sli_percent", helps["ce_slo_sli_percent"], ids, {}, data.get("sli"))
        built.set("ce_slo_error_budget_remaining", helps["ce_slo_error_budget_remaining"], ids, {},
                  data.get("error_budget_remaining"))
        for window, rate in (data.get("burn_rates") or {}).items():
            built.set("ce_slo_burn_rate", helps["ce_slo_burn_rate"], {**ids, "window": str(window)}, {}, rate)
