"""The commands that read the history in the state database: `report`, `stats` and `baseline`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ce_agent.alertcmds import Warn, _store, since_start
from ce_agent.errors import UserError

REPORT_FORMATS = ("markdown", "json", "html")
STATS_FORMATS = ("text", "json", "csv")
UNKNOWN_EXIT = 3  # `report` without any state to report on


def _zone() -> Any:
    """The machine's zone with its IANA name when it has one ($TZ), for days and hours."""
    import os

    from ce_agent.scheduler import local_zone

    return local_zone(os.environ)


def _choice(value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise UserError(f"--format must be one of {', '.join(choices)}, got {value!r}")


def tags_of(playbooks: Sequence[Path]) -> dict[tuple[str, str], list[str]]:
    """(play, check) -> tags (the play's and the task's), read from playbooks; errors in them are the
    user's to fix: the first is said (UserError)."""
    from ce_agent.config.playbook import load_playbook
    from ce_agent.errors import Problems

    tags: dict[tuple[str, str], list[str]] = {}
    for path in playbooks:
        problems = Problems()
        plays = load_playbook(path, problems)
        if problems.errors:  # a playbook named on purpose that does not load is the user's to fix
            raise UserError(f"--playbook: {problems.lines(warnings=False)[0]}")
        for play in plays:
            for task in play.tasks:
                tags[(play.name, task.name)] = sorted(set(play.tags) | set(task.tags))
    return tags


def report(state_dir: Path, output_format: str, since: str, tags: Mapping[tuple[str, str], Sequence[str]], *,
           now: float, warn: Warn) -> tuple[str, int]:
    """The health report and its exit code (0 HEALTHY, 1 DEGRADED, 2 UNHEALTHY)."""
    from ce_agent import report as reports
    from ce_agent.alertcmds import active_alerts

    _choice(output_format, REPORT_FORMATS)
    start = since_start(since, now)
    with _store(state_dir, now, warn, create=False) as store:
        if store is None:
            # no state is no news, not good news: UNKNOWN, as Nagios says of a check that cannot tell
            return "", UNKNOWN_EXIT
        else:
            results, history = store.results(start), store.history(start)
            active = active_alerts(store.load_alerts(), store.silences(now), now)
            slos = [{**data, "play": play, "host": host} for play, host, _n, data, _at in store.slo_statuses()]
    built = reports.build_report(results, history, active, slos, tags, start, now, tz=_zone())
    render = {"markdown": reports.render_markdown, "json": reports.as_json, "html": reports.render_html}
    return render[output_format](built), int(built["exit_code"])


def stats(state_dir: Path, output_format: str, since: str, *, now: float, warn: Warn) -> str:
    """Usage analytics over the period."""
    from ce_agent import stats as usage

    _choice(output_format, STATS_FORMATS)
    start = since_start(since, now)
    with _store(state_dir, now, warn, create=False) as store:
        if store is None:
            results, history, deliveries = [], [], []
        else:
            results, history, deliveries = store.results(start), store.history(start), store.deliveries(start)
    built = usage.build_stats(results, history, deliveries, start, now, _zone())
    render = {"text": usage.render_text, "json": usage.as_json, "csv": usage.render_csv}
    return render[output_format](built)


def baseline_save(state_dir: Path, name: str, since: str, *, now: float, warn: Warn) -> str:
    """Record the statistics of the period as baseline `name`."""
    from ce_agent import baseline

    try:
        name = baseline.check_name(name)
    except ValueError as exc:
        raise UserError(f"--name: {exc}") from None
    start = since_start(since, now)
    with _store(state_dir, now, warn, create=False) as store:
        data = None if store is None else baseline.compute_baseline(store.results(start), start, now, name)
        if data is None or not data["results"]:
            # an empty baseline would only replace a good one: a wrong --state-dir or --since is the likely cause
            raise UserError(f"no results since {since} in {state_dir}: nothing to save as baseline {name!r}")
        store.save_baseline(name, data, now)
    series = sum(1 + len(c["metrics"]) for c in data["checks"])
    return f"saved baseline {name!r}: {data['results']} results of {len(data['checks'])} checks, {series} series"


def baseline_compare(state_dir: Path, name: str, output_format: str, threshold: float, since: str = "1d", *,
                     now: float, warn: Warn) -> str:
    """The results since `since` (the last day by default: a trend over a week with `7d`) against
    baseline `name`."""
    from ce_agent import baseline

    if output_format not in ("text", "json"):
        raise UserError(f"--format must be text or json, got {output_format!r}")
    if not threshold > 0:
        raise UserError(f"--threshold must be a percentage above 0, got {threshold:g}")
    with _store(state_dir, now, warn, create=False) as store:
        saved = store.baseline(name) if store is not None else None
        if saved is None:
            raise UserError(f"no baseline named {name!r}; record one with `ce-agent baseline save --name {name}`")
        start = since_start(since, now)
        recent = store.results(start)
    try:
        data = baseline.load_baseline(saved[1])
    except ValueError as exc:
        raise UserError(f"baseline {name!r}: {exc}") from None
    rows = baseline.compare(data, recent, now, since=start, threshold_pct=threshold)
    if output_format == "json":
        return baseline.as_json(data, rows, threshold_pct=threshold)
    return baseline.render_compare_text(data, rows, threshold_pct=threshold)
