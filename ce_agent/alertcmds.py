"""The `alerts`, `notify test` and `ping` commands: reading and changing alert state."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from ce_agent.contracts import Status
from ce_agent.durations import format_duration, parse_duration
from ce_agent.errors import UserError

JSON_VERSION = 1
#: where each notice (a state database set aside, an inventory warning) goes: a line on stderr
Warn = Callable[[str], None]
ACTIVE_STATES = ("firing", "pending")


class CommandFailed(UserError):
    """A user error reported in several lines (say, every problem of an inventory): exit 2."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__(lines[0] if lines else "failed")
        self.lines = list(lines)


# ---- shared ------------------------------------------------------------------------------------------


def iso(ts: float) -> str:
    """A time for people and scripts alike: local time with its UTC offset, to the second."""
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _status_name(code: Any) -> str:
    try:
        return Status(int(code)).name
    except (TypeError, ValueError):
        return str(code)


def _labels_text(labels: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


@contextmanager
def _store(state_dir: Path, now: float, warn: Warn, create: bool) -> Iterator[Any]:
    """The state store, or None when there is none yet and `create` is off (reading needs no new file)."""
    from ce_agent.store import DB_NAME, Store, StoreError

    path = Path(state_dir) / DB_NAME
    if not create and not path.exists():
        # a typo in --state-dir looks like "nothing to see": say where we looked
        warn(f"note: no state in {state_dir} yet (nothing has run with this state directory)")
        yield None
        return
    try:
        store, notices = Store.open(path, now, repair=create)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    for notice in notices:
        warn(f"warning: {notice}")
    try:
        yield store
    except StoreError as exc:
        raise UserError(str(exc)) from None
    finally:
        store.close()


def _check_format(output_format: str) -> None:
    if output_format not in ("text", "json"):
        raise UserError(f"--format must be text or json, got {output_format!r}")


# ---- alerts list -------------------------------------------------------------------------------------


def active_alerts(stored: Mapping[str, tuple[dict, dict]], silences: Sequence[Any], now: float) -> list[dict[str, Any]]:
    """Pending and firing alerts (firing first, oldest first), each with whether a silence holds it now."""
    from ce_agent.alerting.pipeline import silence_matcher, state_from_json

    silenced = silence_matcher(silences, now)
    rows = []
    for key, (labels, data) in stored.items():
        state = state_from_json(data)
        if state.state not in ACTIVE_STATES:
            continue
        since = state.since if state.since is not None else now
        silence = silenced(labels)
        rows.append({
            "key": key,
            "labels": dict(labels),
            "state": state.state,
            "status": _status_name(state.status),
            "since": iso(since),
            "since_ts": since,
            "for_s": round(max(0.0, now - since), 3),
            "silenced": silence is not None,
            "silence": silence,
            "flapping": state.flapping,
        })
    rows.sort(key=lambda r: (ACTIVE_STATES.index(r["state"]), r["since_ts"], r["key"]))
    return rows


def list_alerts(state_dir: Path, output_format: str, *, now: float, warn: Warn) -> str:
    """`alerts list`: every pending or firing alert."""
    _check_format(output_format)
    with _store(state_dir, now, warn, create=False) as store:
        rows = [] if store is None else active_alerts(store.load_alerts(), store.silences(now), now)
    if output_format == "json":
        return json.dumps({"version": JSON_VERSION, "alerts": rows}, indent=2)
    if not rows:
        return "no active alerts"
    lines = []
    for row in rows:
        extra = [f"since {row['since']} (for {format_duration(row['for_s'])})"]
        if row["silenced"]:
            extra.append(f"silenced ({row['silence']})")
        if row["flapping"]:
            extra.append("flapping")
        lines += [
            f"{row['state'].upper():<8} {row['status']:<9} {row['key']}",
            f"{'':18} {'; '.join(extra)}",
            f"{'':18} labels: {_labels_text(row['labels'])}",
        ]
    firing = sum(1 for r in rows if r["state"] == "firing")
    lines.append(f"{len(rows)} active alert{'s' if len(rows) != 1 else ''}: {firing} firing, "
                 f"{len(rows) - firing} pending")
    return "\n".join(lines)


# ---- alerts history ----------------------------------------------------------------------------------


MAX_SINCE_S = 100 * 365 * 86400


def since_start(text: str, now: float) -> float:
    """The start of the period `--since TEXT` names (`7d`: seven days before `now`); a UserError otherwise."""
    if text.strip().replace(".", "", 1).isdigit():  # `--since 7`: seven days? seven seconds? say which
        raise UserError(f"--since {text!r}: give a unit, such as {text.strip()}d, {text.strip()}h or {text.strip()}m")
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise UserError(f"--since {text!r}: {exc}") from None
    if seconds <= 0:
        raise UserError(f"--since {text!r}: the period must be longer than 0")
    if seconds > MAX_SINCE_S:  # dates before year 1 break the calendar; the history keeps 30 days anyway
        raise UserError(f"--since {text!r}: at most {MAX_SINCE_S // 86400}d")
    return now - seconds


def history(state_dir: Path, since: str, output_format: str, *, now: float, warn: Warn) -> str:
    """`alerts history`: firing, resolved and flapping events since `since` ago, oldest first."""
    _check_format(output_format)
    start = since_start(since, now)
    with _store(state_dir, now, warn, create=False) as store:
        events = [] if store is None else store.history(start)
    rows = [
        {"at": iso(e["at"]), "at_ts": e["at"], "key": e["key"], "labels": e["labels"], "kind": e["kind"],
         "status": _status_name(e["status"]), "summary": e["summary"]}
        for e in events
    ]
    if output_format == "json":
        return json.dumps({"version": JSON_VERSION, "since": iso(start), "events": rows}, indent=2)
    if not rows:
        return f"no alert events since {iso(start)}"
    width = max(len(r["kind"]) for r in rows)
    return "\n".join(
        f"{r['at']}  {r['kind']:<{width}}  {r['status']:<8}  {r['key']}" + (f"  {r['summary']}" if r["summary"] else "")
        for r in rows
    )


# ---- silences ----------------------------------------------------------------------------------------


def parse_start(text: str) -> float:
    """`--start`: an ISO 8601 time; without an offset it is local time."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UserError(f"--start: expected an ISO 8601 time such as 2024-05-01T22:00 or "
                        f"2024-05-01T22:00:00+02:00, got {text!r}") from None
    return when.astimezone().timestamp() if when.tzinfo is None else when.timestamp()


def add_silence(state_dir: Path, matchers: Sequence[str], duration: str, comment: str, start: str | None,
                user: str, *, now: float, warn: Warn) -> str:
    """`alerts silence`: a one-off silence of the alerts matching every matcher."""
    from ce_agent.alerting.matchers import all_match, parse_matcher

    if not matchers:
        raise UserError("give at least one --match NAME=VALUE (also NAME!=VALUE, NAME=~REGEX, NAME!~REGEX)")
    parsed = []
    for text in matchers:
        try:
            parsed.append(parse_matcher(text))
        except ValueError as exc:
            raise UserError(f"--match: {exc}") from None
    try:
        length = parse_duration(duration)
    except ValueError as exc:
        raise UserError(f"--duration: {exc}") from None
    if length <= 0:
        raise UserError(f"--duration must be more than 0, got {duration!r}")
    starts = now if start is None else parse_start(start)
    ends = starts + length
    if ends <= now:
        raise UserError(f"the silence would already be over: it ends at {iso(ends)}")
    with _store(state_dir, now, warn, create=True) as store:
        silence = store.add_silence([str(m) for m in parsed], starts, ends, comment, user, now)
        matched = [key for key, (labels, data) in store.load_alerts().items()
                   if data.get("state") in ACTIVE_STATES and all_match(parsed, labels)]
    when = f"until {iso(ends)} ({format_duration(length)})" if starts <= now else f"from {iso(starts)} until {iso(ends)}"
    count = f"{len(matched)} active alert{'s' if len(matched) != 1 else ''}"
    return f"silence {silence.id} {when}: {', '.join(silence.matchers)}\nmatches {count} now"


def _silence_row(silence: Any, now: float) -> dict[str, Any]:
    state = "active" if silence.active(now) else ("pending" if silence.starts > now else "expired")
    return {"id": silence.id, "state": state, "matchers": list(silence.matchers), "starts": iso(silence.starts),
            "starts_ts": silence.starts, "ends": iso(silence.ends), "ends_ts": silence.ends,
            "comment": silence.comment, "created_by": silence.created_by, "created": iso(silence.created)}


def list_silences(state_dir: Path, include_expired: bool, output_format: str, *, now: float, warn: Warn) -> str:
    """`alerts silences`: those in force or still to come, or with --all every one kept."""
    _check_format(output_format)
    with _store(state_dir, now, warn, create=False) as store:
        silences = [] if store is None else store.silences(now, include_expired=include_expired)
    if output_format == "json":
        return json.dumps({"version": JSON_VERSION, "silences": [_silence_row(s, now) for s in silences]}, indent=2)
    if not silences:
        return "no silences" if include_expired else "no active silences"
    lines = []
    for silence in silences:
        if silence.active(now):
            when = f"active   until {iso(silence.ends)} ({format_duration(silence.ends - now)} left)"
        elif silence.starts > now:
            when = f"pending  from {iso(silence.starts)} until {iso(silence.ends)}"
        else:
            when = f"expired  ended {iso(silence.ends)} ({format_duration(now - silence.ends)} ago)"
        lines += [f"{silence.id}  {when}  by {silence.created_by}", f"{'':10}matchers: {', '.join(silence.matchers)}"]
        if silence.comment:
            lines.append(f"{'':10}comment: {silence.comment}")
    return "\n".join(lines)


def unsilence(state_dir: Path, silence_id: str, *, now: float, warn: Warn) -> str:
    """`alerts unsilence`: end a silence now."""
    with _store(state_dir, now, warn, create=False) as store:
        known = {} if store is None else {s.id: s for s in store.silences(include_expired=True)}
        if silence_id not in known:
            raise UserError(f"no silence with id {silence_id!r}; `ce-agent alerts silences --all` lists them")
        if known[silence_id].ends <= now:
            return f"silence {silence_id} had already ended at {iso(known[silence_id].ends)}"
        store.expire_silence(silence_id, now)
    return f"silence {silence_id} expired"


# ---- notify test -------------------------------------------------------------------------------------


def choose_host(inventory: Any, host: str | None) -> str:
    """`--host`, else `localhost` when the inventory lists it, else its only host, else the implicit localhost."""
    import difflib

    from ce_agent.config.inventory import IMPLICIT_LOCALHOST

    hosts = [name for name, h in inventory.hosts.items() if not h.implicit]
    if host is not None:
        if host in hosts or host in IMPLICIT_LOCALHOST:
            return host
        hint = difflib.get_close_matches(host, hosts, n=1)
        raise UserError(f"unknown host {host!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                        + (f" (hosts: {', '.join(sorted(hosts))})" if hosts else " (the inventory lists no hosts)"))
    if "localhost" in hosts or len(hosts) != 1:
        return "localhost"
    return hosts[0]


def drill_notification(channel: str, host: str, user: str, now: float) -> Any:
    """The fire drill's message: OK status, kind "test", saying plainly that nothing is wrong."""
    from ce_agent.contracts import Notification

    body = (f"This is a test notification from ce-agent on {host}: a fire drill, nothing is wrong.\n"
            f"If you read this, the channel '{channel}' delivers alerts.\n"
            f"Sent with `ce-agent notify test {channel}` by {user} at {iso(now)}.")
    return Notification(channel=channel, title=f"[TEST] ce-agent test notification from {host}", body=body,
                        status=Status.OK, host=host, summary="test notification", kind="test")


def notify_test(inventories: Sequence[Path], channel_name: str, host: str | None, environ: Mapping[str, str],
                user: str, *, now: float, warn: Warn) -> str:
    """`notify test`: one test message down one channel, as the inventory configures it for the host."""
    import time

    from ce_agent.config.inventory import load_inventories
    from ce_agent.config.templating import Templar
    from ce_agent.contracts import DeliveryError
    from ce_agent.errors import Problems
    from ce_agent.outbox import RetryPolicy, one_url, send_with_retries
    from ce_agent.plan import resolve_channel_for
    from ce_agent.redact import Redactor
    from ce_agent.registry import Registry

    redactor = Redactor()
    problems = Problems()
    inventory = load_inventories(list(inventories), problems)
    for line in problems.lines(warnings=True):
        warn(redactor.scrub(line))
    if problems:
        raise CommandFailed(problems.lines(warnings=False))
    chosen = choose_host(inventory, host)
    templar = Templar(environ, redactor.add_lookup)
    channel = resolve_channel_for(inventory, chosen, channel_name, Registry(), templar, problems)
    if channel is None:
        lines = [redactor.scrub(line) for line in problems.lines(warnings=False)]
        if host is None and len(inventory.hosts) > 1 and any(line.startswith("unknown channel") for line in lines):
            lines.append(f"(channels were resolved for host {chosen!r}; choose another with --host)")
        raise CommandFailed(lines or [f"channel {channel_name!r} cannot be used"])
    urls = getattr(channel.options, "urls", None) or []
    for url in urls:
        redactor.add_url(url)
    notification = drill_notification(channel_name, chosen, user, now)
    # each URL on its own, as the outbox delivers them: a failing one is retried without the others
    targets = [one_url(channel, i) for i in range(len(urls))] if len(urls) > 1 else [channel]
    failures = []
    for target in targets:
        try:
            send_with_retries(target, notification, RetryPolicy(), time.sleep)
        except DeliveryError as exc:
            failures.append(redactor.scrub(str(exc)) or "delivery failed")
    if failures:
        raise UserError(f"channel {channel_name!r} did not accept the test notification: {'; '.join(failures)}")
    where = f" ({', '.join(redactor.privacy_url(u) for u in urls)})" if urls else f" ({channel.notifier})"
    return redactor.scrub(f"sent a test notification to channel {channel_name!r}{where} for host {chosen}")


# ---- ping --------------------------------------------------------------------------------------------


def ping(state_dir: Path, name: str, kind: str, *, now: float, warn: Warn) -> None:
    """`ping`: record a heartbeat of a cron job for the `heartbeat` check; silent on success."""
    from ce_agent.checks.heartbeat import PING_NAME

    if not PING_NAME.fullmatch(name):
        raise UserError(f"invalid heartbeat name {name!r}: use only letters, digits, '_', '.' and '-'")
    with _store(state_dir, now, warn, create=True) as store:
        store.add_ping(name, kind, now)


def latest_metrics(state_dir: Path, output_format: str, *, now: float, warn: Warn) -> str:
    """`ce-agent metrics`: the newest stored result of every check and sample of every collector series,
    in the Prometheus text format (what `run --textfile-dir` writes) or as JSON."""
    if output_format not in ("prometheus", "json"):
        raise UserError(f"--format must be prometheus or json, got {output_format!r}")
    with _store(state_dir, now, warn, create=False) as store:
        results = store.latest_results() if store is not None else []
        samples = store.latest_samples() if store is not None else []
        slos = store.slo_statuses() if store is not None else []
    if output_format == "prometheus":
        from ce_agent.metrics import render_stored

        return render_stored(results, samples, slos=slos).rstrip("\n")
    return json.dumps({
        "version": 1,
        "checks": [{"play": r.play, "host": r.host, "check": r.check, "plugin": r.plugin,
                    "status": _status_name(r.status), "code": r.status, "summary": r.summary, "at": iso(r.ts),
                    "duration_s": r.duration_s, "metrics": r.metrics} for r in results],
        "samples": [{"play": s.play, "host": s.host, "collector": s.collector, "name": s.name, "labels": s.labels,
                     "value": s.value, "unit": s.unit, "at": iso(s.ts)} for s in samples],
        "slos": [{**data, "play": play, "host": host, "evaluated": iso(at)} for play, host, _n, data, at in slos],
    }, indent=2)


def slo_status(state_dir: Path, output_format: str, *, now: float, warn: Warn) -> str:
    """`ce-agent slo status`: each SLO as `run` or the daemon last evaluated it (kept in the state)."""
    _check_format(output_format)
    with _store(state_dir, now, warn, create=False) as store:
        rows = store.slo_statuses() if store is not None else []
    slos = [{**data, "play": play, "host": host, "evaluated": iso(at)} for play, host, _name, data, at in rows]
    if output_format == "json":
        return json.dumps({"slos": slos}, indent=2)
    if not slos:
        return "no SLO has been evaluated yet (add `slos:` to a play, then `ce-agent run` or `ce-agent agent`)"

    def pct(value: Any, scale: float = 1.0) -> str:
        return "-" if value is None else f"{value * scale:.3f}%" if scale == 1.0 else f"{value * scale:.1f}%"

    def rate(value: Any) -> str:
        return "-" if value is None else f"{value:.2f}x"

    windows = ("5m", "30m", "1h", "6h", "3d")  # the workbook's pairs: 1h/5m and 6h/30m page, 3d/6h tickets
    header = ("NAME", "HOST", "OBJECTIVE", "WINDOW", "SLI", "BUDGET LEFT", *(f"BURN {w}" for w in windows), "STATUS",
              "EVALUATED")
    table = [header] + [(s["name"], s["host"], f"{s['objective']:g}%", s["window"], pct(s["sli"]),
                         pct(s["error_budget_remaining"], 100.0), *(rate(s["burn_rates"].get(w)) for w in windows),
                         s["status"], s["evaluated"]) for s in slos]
    from ce_agent.history import format_table

    return "\n".join(format_table(table[0], [[str(cell) for cell in row] for row in table[1:]]))
