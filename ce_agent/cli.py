"""The `ce-agent` command line: parses arguments, builds the parts, prints; the work is elsewhere."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ce_agent import __version__
from ce_agent.errors import FaultError, UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click errors and help: one "Error:" line, no rich import
    help="ce-agent: checks, collectors and notifiers from Ansible-style playbooks and inventories.",
)
plugins_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Discover plugins and read their documentation.")
app.add_typer(plugins_app, name="plugins")
alerts_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Active alerts, their history, and silences.")
app.add_typer(alerts_app, name="alerts")
notify_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Try the notification channels.")
app.add_typer(notify_app, name="notify")
slo_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Service level objectives and error budgets.")
app.add_typer(slo_app, name="slo")
baseline_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Performance baselines and regressions.")
app.add_typer(baseline_app, name="baseline")
service_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Run the agent as a systemd or launchd service.")
app.add_typer(service_app, name="service")
export_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="The playbooks as other tools read them.")
app.add_typer(export_app, name="export")

EXIT_USAGE = 2
EXIT_FAULT = 3  # the state or the disk failed: UNKNOWN, as a check that cannot tell

PlaybookArg = Annotated[list[Path], typer.Argument(help="Playbook files.", show_default=False, metavar="PLAYBOOK...")]
InventoryOpt = Annotated[
    Optional[list[Path]],
    typer.Option("-i", "--inventory", help="Inventory file or directory (repeatable).", show_default=False),
]
LimitOpt = Annotated[Optional[str], typer.Option("--limit", "-l", help="Only hosts matching this pattern.")]
TagsOpt = Annotated[Optional[list[str]], typer.Option("--tags", "-t", help="Only tasks with these tags.")]
SkipTagsOpt = Annotated[Optional[list[str]], typer.Option("--skip-tags", help="Skip tasks with these tags.")]
ExtraVarsOpt = Annotated[
    Optional[list[str]], typer.Option("--extra-vars", "-e", help="NAME=VALUE, @FILE or a YAML mapping.")
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show metrics, long output and more.")]
StateDirOpt = Annotated[
    Optional[Path],
    typer.Option("--state-dir", envvar="CE_AGENT_STATE_DIR", show_default=False,
                 help="Where alert state lives [default: /var/lib/ce-agent for root, else ~/.local/state/ce-agent]."),
]


def _split_tags(values: list[str] | None) -> set[str]:
    return {t.strip() for v in values or [] for t in v.split(",") if t.strip()}


def _fail(lines: list[str], code: int = EXIT_USAGE) -> typer.Exit:
    for line in lines:
        typer.echo(line, err=True)
    return typer.Exit(code)


def _selection(limit, tags, skip_tags, extra_vars, validating=False, state_dir=None, daemon=False):  # type: ignore[no-untyped-def]
    from ce_agent import oneshot
    from ce_agent.plan import Selection

    try:
        parsed_vars = oneshot.parse_extra_vars(extra_vars or [])
    except UserError as exc:
        raise _fail([f"error: {exc}"]) from None
    return Selection(
        limit=limit,
        tags=_split_tags(tags),
        skip_tags=_split_tags(skip_tags),
        extra_vars=parsed_vars,
        check_schedules=validating or daemon,
        broken_plugins_run=not validating,
        state_dir=state_dir,
    )


def _load(playbooks, inventory, limit, tags, skip_tags, extra_vars, validating=False, state_dir=None):  # type: ignore[no-untyped-def]
    from ce_agent.errors import ConfigError
    from ce_agent.oneshot import load_or_explain

    selection = _selection(limit, tags, skip_tags, extra_vars, validating, state_dir)
    try:
        plan, redactor, warnings = load_or_explain(list(playbooks), list(inventory or []), selection)
    except ConfigError as exc:
        tail = "" if validating or len(exc.lines) < 2 else "; nothing was run"
        raise _fail([*exc.lines[:-1], exc.lines[-1] + tail]) from None
    for warning in warnings:
        typer.echo(warning, err=True)
    if not plan.jobs and not plan.rules and not validating:
        typer.echo("warning: no task matched the hosts, --limit and --tags given; nothing was checked", err=True)
    return plan, redactor


def _interrupt_on_sigterm() -> None:
    """SIGTERM (cron's or systemd's kill) unwinds like Ctrl-C, so running commands are stopped."""
    import signal

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


@app.command()
def run(
    playbooks: PlaybookArg,
    inventory: InventoryOpt = None,
    limit: LimitOpt = None,
    tags: TagsOpt = None,
    skip_tags: SkipTagsOpt = None,
    extra_vars: ExtraVarsOpt = None,
    check: Annotated[bool, typer.Option("--check", "-C", help="Dry run: render notifications, send nothing.")] = False,
    output_format: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
    forks: Annotated[int, typer.Option("--forks", "-f", min=1, help="How many tasks run at once.")] = 10,
    verbose: VerboseOpt = False,
    state_dir: StateDirOpt = None,
    textfile_dir: Annotated[
        Optional[Path],
        typer.Option("--textfile-dir", show_default=False,
                     help="Also write DIR/ce-agent.prom (Prometheus text) for node_exporter's textfile collector."),
    ] = None,
) -> None:
    """Run every selected check and collector once, notify, and exit with the worst status."""
    if output_format not in ("text", "json"):
        raise _fail([f"--format must be text or json, got {output_format!r}"])
    from ce_agent import oneshot, output

    from ce_agent.store import default_state_dir

    state_dir = state_dir or default_state_dir(os.environ, os.geteuid(), Path.home())
    plan, redactor = _load(playbooks, inventory, limit, tags, skip_tags, extra_vars, state_dir=state_dir)
    if not plan.jobs and not plan.rules:
        raise typer.Exit(3)  # nothing checked is not OK: UNKNOWN, as Nagios says of a check that cannot tell
    _interrupt_on_sigterm()
    import contextlib
    import time

    store, notices = oneshot.open_store(state_dir, time.time(), read_only=check)
    for notice in notices:
        typer.echo(redactor.scrub(notice), err=True)
    # JSON owns stdout: the console notifier and any plugin's print() go to stderr meanwhile
    quiet = contextlib.redirect_stdout(sys.stderr) if output_format == "json" else contextlib.nullcontext()
    stored_metrics = None
    try:
        with quiet:
            report = oneshot.run(plan, redactor, store, forks=forks, check_mode=check)
        if textfile_dir is not None and not check and not report.state_lost:
            try:  # every series the state holds, not only this run's (docs/prometheus.md)
                stored_metrics = oneshot.textfile_metrics(plan, store, redactor.scrub, report.slos)
            except FaultError:
                stored_metrics = None  # this run's own values below
    finally:
        store.close()
    if report.state_lost:  # the checks ran and the channels were told all the same: the exit code stands
        typer.echo(redactor.scrub(f"warning: {report.state_lost}"), err=True)
    if report.dropped:
        typer.echo(f"warning: the outbox is full; {report.dropped} oldest notification(s) dropped", err=True)
    for delivery in report.deliveries:
        if not delivery.sent and not check:  # cron mails stderr: a channel that is down must show there
            what = "dropped" if delivery.dropped else "not delivered yet, will retry"
            typer.echo(redactor.scrub(f"warning: {delivery.channel}: {delivery.notification.title}: {what}: "
                                      f"{delivery.error}"), err=True)
    if output_format == "json":
        text = output.as_json(report.outcomes, report.deliveries, report.worst, report.slos)
    else:
        text = output.as_text(report.outcomes, report.deliveries, report.worst, check, verbose, report.routing,
                              report.slos)
    typer.echo(redactor.scrub(text))
    if textfile_dir is not None:
        from ce_agent import metrics

        try:  # the metrics file is a by-product: failing to write it warns, never changes the exit code
            metrics.write_textfile(textfile_dir, stored_metrics or metrics.render_text(
                metrics.build_registry(report.outcomes, time.time(), redactor.scrub, report.slos)))
        except (OSError, ValueError) as exc:
            typer.echo(redactor.scrub(f"warning: --textfile-dir: cannot write {textfile_dir}/"
                                      f"{metrics.TEXTFILE_NAME}: {getattr(exc, 'strerror', None) or exc}"), err=True)
    raise typer.Exit(output.exit_code(report.worst))


@app.command()
def validate(
    playbooks: PlaybookArg,
    inventory: InventoryOpt = None,
    extra_vars: ExtraVarsOpt = None,
) -> None:
    """Load and validate playbooks and inventory; report every error as FILE:LINE:COL: message."""
    plan, _ = _load(playbooks, inventory, None, None, None, extra_vars, validating=True)
    hosts = {job.host for job in plan.jobs}
    typer.echo(
        f"ok: {len(playbooks)} playbook(s), {len(plan.plays)} play(s), {len(plan.jobs)} task(s) on {len(hosts)} host(s)"
    )


@app.command()
def agent(
    playbooks: PlaybookArg,
    inventory: InventoryOpt = None,
    limit: LimitOpt = None,
    tags: TagsOpt = None,
    skip_tags: SkipTagsOpt = None,
    extra_vars: ExtraVarsOpt = None,
    listen: Annotated[str, typer.Option("--listen", envvar="CE_AGENT_LISTEN",
                                        help="HOST:PORT for /metrics, health and status; 'none' to serve nothing.")] = "127.0.0.1:9464",
    forks: Annotated[int, typer.Option("--forks", "-f", min=1, help="How many tasks run at once.")] = 50,
    state_dir: StateDirOpt = None,
    log_format: Annotated[str, typer.Option("--log-format", help="json, text, or auto (text on a terminal).")] = "auto",
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    log_file: Annotated[Optional[Path], typer.Option("--log-file", show_default=False,
                                                     help="Log to this file (JSON lines) instead of stdout.")] = None,
    log_rotate: Annotated[Optional[str], typer.Option("--log-rotate", show_default=False,
                                                      help="Rotate the log file: 'daily' or 'size:10MB'.")] = None,
    log_keep: Annotated[int, typer.Option("--log-keep", help="How many rotated log files to keep.")] = 7,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at debug level.")] = False,
) -> None:
    """The daemon: run the tasks on their schedules, serve metrics and health, reload on SIGHUP."""
    from ce_agent import daemon
    from ce_agent.errors import ConfigError
    from ce_agent.store import default_state_dir

    state_dir = state_dir or default_state_dir(os.environ, os.geteuid(), Path.home())
    options = daemon.ServeOptions(
        listen=None if listen.strip().lower() in ("none", "off", "") else listen, forks=forks, state_dir=state_dir,
        log_format=log_format, log_level="debug" if verbose else log_level, log_file=log_file, log_rotate=log_rotate,
        log_keep=log_keep,
    )
    selection = _selection(limit, tags, skip_tags, extra_vars, state_dir=state_dir, daemon=True)
    try:
        code = daemon.serve(list(playbooks), list(inventory or []), selection, options, os.environ)
    except ConfigError as exc:
        tail = "" if len(exc.lines) < 2 else "; the agent did not start"
        raise _fail([*exc.lines[:-1], exc.lines[-1] + tail]) from None
    raise typer.Exit(code)


@plugins_app.command("list")
def plugins_list(
    kind: Annotated[Optional[str], typer.Option("--kind", help="check, collector or notifier.")] = None,
    load: Annotated[bool, typer.Option("--load/--no-load", help="Import each plugin to show its status.")] = True,
    output_format: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> None:
    """Every discovered plugin: kind, name, distribution, version and load status."""
    from ce_agent import plugindoc
    from ce_agent.registry import KINDS, Registry

    if kind is not None and kind not in KINDS:
        raise _fail([f"--kind must be one of {', '.join(KINDS)}, got {kind!r}"])
    if output_format not in ("text", "json"):
        raise _fail([f"--format must be text or json, got {output_format!r}"])
    rows = plugindoc.listing(Registry(), [kind] if kind else list(KINDS), load)
    typer.echo(plugindoc.listing_json(rows) if output_format == "json" else plugindoc.listing_text(rows))


@plugins_app.command("doc")
def plugins_doc(
    name: Annotated[str, typer.Argument(help="Plugin name, or KIND/NAME when a name is used by two kinds.")],
) -> None:
    """A plugin's description, options (type, default, description) and examples, like ansible-doc."""
    from ce_agent import plugindoc
    from ce_agent.registry import Registry

    try:
        typer.echo(plugindoc.document(Registry(), name))
    except UserError as exc:
        raise _fail([f"error: {exc}"]) from None


@plugins_app.command("new")
def plugins_new(
    name: Annotated[str, typer.Argument(help="The plugin's name, as playbooks write it (lower snake_case).")],
    kind: Annotated[str, typer.Option("--kind", help="check, collector or notifier.", show_default=False)] = ...,  # type: ignore[assignment]
    directory: Annotated[Path, typer.Option("--dir", help="Where to create ce-agent-NAME/.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite the generated files of an existing folder.")] = False,
) -> None:
    """Create a plugin distribution: pyproject.toml with the entry point, the class, a README and a passing test."""
    from ce_agent import scaffold

    try:
        typer.echo(scaffold.describe(scaffold.create(name, kind, directory, force)))
    except UserError as exc:
        raise _fail([f"error: {exc}"]) from None


@app.command("schema")
def schema_command(
    kind: Annotated[str, typer.Option("--kind", help="playbook or inventory.")] = "playbook",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", show_default=False,
                                                   help="Write the schema to this file.")] = None,
) -> None:
    """JSON Schema of playbooks or inventories, with the installed plugins' options (for editors)."""
    from ce_agent import schema
    from ce_agent.registry import Registry

    try:
        schema.write(schema.render(schema.build(kind, Registry(), _warn)), output)
    except UserError as exc:
        raise _fail([f"error: {exc}"]) from None


FormatOpt = Annotated[str, typer.Option("--format", help="text or json.")]


def _state_dir(state_dir: Path | None) -> Path:
    from ce_agent.store import default_state_dir

    return state_dir or default_state_dir(os.environ, os.geteuid(), Path.home())


def _user() -> str:
    import getpass

    try:
        return getpass.getuser() or "unknown"
    except Exception:  # noqa: BLE001 - no login name (a container without an entry in /etc/passwd)
        return "unknown"


def _warn(line: str) -> None:
    typer.echo(line, err=True)


def _alertcmd(call, *args):  # type: ignore[no-untyped-def]
    """Run an alertcmds function at the current time: its user errors become lines on stderr and exit 2."""
    import time

    from ce_agent import alertcmds

    try:
        return call(*args, now=time.time(), warn=_warn)
    except alertcmds.CommandFailed as exc:
        raise _fail(exc.lines) from None
    except UserError as exc:
        raise _fail([f"error: {exc}"]) from None


@app.command("metrics")
def metrics_command(
    output_format: Annotated[str, typer.Option("--format", help="prometheus or json.")] = "prometheus",
    state_dir: StateDirOpt = None,
) -> None:
    """The newest value of every check and collector series in the state (no daemon needed)."""
    from ce_agent import alertcmds

    typer.echo(_alertcmd(alertcmds.latest_metrics, _state_dir(state_dir), output_format))


SinceOpt = Annotated[str, typer.Option("--since", help="How far back: 1h, 7d, 30d ...")]
PlaybookTagsOpt = Annotated[Optional[list[Path]], typer.Option(
    "--playbook", "-p", show_default=False, help="Playbook(s) whose tags group the checks (repeatable).")]


@app.command()
def report(
    output_format: Annotated[str, typer.Option("--format", help="markdown, json or html.")] = "markdown",
    since: SinceOpt = "7d",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", show_default=False,
                                                   help="Write the report to this file.")] = None,
    playbook: PlaybookTagsOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Health report: exit 0 HEALTHY, 1 DEGRADED, 2 UNHEALTHY (or bad input), 3 no state to report on."""
    from ce_agent import historycmds

    try:
        tags = historycmds.tags_of(playbook or [])
    except UserError as exc:
        raise _fail([f"error: {exc}"]) from None
    text, code = _alertcmd(historycmds.report, _state_dir(state_dir), output_format, since, tags)
    if not text:
        raise typer.Exit(code)
    if output is None:
        typer.echo(text.rstrip("\n"))
    else:
        try:
            output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        except OSError as exc:
            raise _fail([f"error: cannot write {output}: {exc.strerror or exc}"]) from None
    raise typer.Exit(code)


@app.command()
def stats(
    output_format: Annotated[str, typer.Option("--format", help="text, json or csv.")] = "text",
    since: SinceOpt = "30d",
    state_dir: StateDirOpt = None,
) -> None:
    """Usage analytics: runs and failures per check, frequent alerts, notifications, problems by hour."""
    from ce_agent import historycmds

    typer.echo(_alertcmd(historycmds.stats, _state_dir(state_dir), output_format, since).rstrip("\n"))


@baseline_app.command("save")
def baseline_save(
    name: Annotated[str, typer.Option("--name", help="The baseline's name.")] = "default",
    since: SinceOpt = "7d",
    state_dir: StateDirOpt = None,
) -> None:
    """Record per check and metric: count, min, max, mean, p50, p95, p99 over the period."""
    from ce_agent import historycmds

    typer.echo(_alertcmd(historycmds.baseline_save, _state_dir(state_dir), name, since))


@baseline_app.command("compare")
def baseline_compare(
    name: Annotated[str, typer.Option("--name", help="The baseline's name.")] = "default",
    output_format: FormatOpt = "text",
    threshold: Annotated[float, typer.Option("--threshold", help="% change of p95 that counts.")] = 20.0,
    since: Annotated[str, typer.Option("--since", help="The recent period to judge: 1d, 7d (a trend) ...")] = "1d",
    state_dir: StateDirOpt = None,
) -> None:
    """Recent results (the last day by default) against a saved baseline: regressed, improved or the same."""
    from ce_agent import historycmds

    typer.echo(_alertcmd(historycmds.baseline_compare, _state_dir(state_dir), name, output_format, threshold,
                         since).rstrip("\n"))


@app.command("status")
def status(
    mode: Annotated[str, typer.Option("--mode", help="full, compact or minimal (one line).")] = "full",
    watch: Annotated[Optional[float], typer.Option("--watch", show_default=False, metavar="SECONDS",
                                                   help="Redraw every SECONDS until Ctrl-C.")] = None,
    export: Annotated[Optional[Path], typer.Option("--export", show_default=False, metavar="FILE",
                                                   help="Write to FILE instead: .html, .svg, else plain text.")] = None,
    agent_url: Annotated[Optional[str], typer.Option("--agent", envvar="CE_AGENT_URL", show_default=False, metavar="URL",
                                                     help="Ask a running agent (http://127.0.0.1:9464), not the state.")] = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Dashboard: checks by status, active alerts, SLOs, resource usage, recent runs (exit 0; 2 for bad options)."""
    from ce_agent import dashboard

    options = dashboard.StatusOptions(mode, watch, export, agent_url, None if agent_url else _state_dir(state_dir))
    try:
        code = dashboard.run_status(options, _warn)
    except UserError as exc:
        raise _fail([f"error: {exc}"]) from None
    raise typer.Exit(code)


@slo_app.command("status")
def slo_status(state_dir: StateDirOpt = None, output_format: FormatOpt = "text") -> None:
    """Each SLO as last evaluated: SLI, error budget left, burn rates over 5m to the window, status."""
    from ce_agent import alertcmds

    typer.echo(_alertcmd(alertcmds.slo_status, _state_dir(state_dir), output_format))


@export_app.command("prometheus-rules")
def export_prometheus_rules(
    playbooks: PlaybookArg,
    inventory: InventoryOpt = None,
    extra_vars: ExtraVarsOpt = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", show_default=False,
                                                   help="Write the rule file here instead of stdout.")] = None,
    output_format: Annotated[str, typer.Option("--format", help="yaml (a Prometheus rule file).")] = "yaml",
) -> None:
    """The plays' alert rules and SLOs as Prometheus rule groups, for `promtool check rules` (docs/prometheus.md)."""
    if output_format != "yaml":
        raise _fail([f"error: --format must be yaml, got {output_format!r}"])
    from ce_agent import promrules

    plan, redactor = _load(playbooks, inventory, None, None, None, extra_vars, validating=True)
    try:
        text, warnings = promrules.export(plan, [str(p) for p in playbooks], __version__)
    except promrules.ExportError as exc:
        raise _fail([redactor.scrub(line) for line in exc.lines]) from None
    for warning in warnings:
        typer.echo(warning, err=True)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _fail([f"error: cannot write {output}: {exc.strerror or exc}"]) from None


@alerts_app.command("list")
def alerts_list(state_dir: StateDirOpt = None, output_format: FormatOpt = "text") -> None:
    """Active alerts (pending or firing): labels, state, since when, status, silenced, flapping."""
    from ce_agent import alertcmds

    typer.echo(_alertcmd(alertcmds.list_alerts, _state_dir(state_dir), output_format))


@alerts_app.command("history")
def alerts_history(
    since: Annotated[str, typer.Option("--since", help="How far back: 1h, 7d, ...")] = "7d",
    state_dir: StateDirOpt = None,
    output_format: FormatOpt = "text",
) -> None:
    """Alert events (firing, resolved, flapping_start, flapping_stop), oldest first."""
    from ce_agent import alertcmds

    typer.echo(_alertcmd(alertcmds.history, _state_dir(state_dir), since, output_format))


@alerts_app.command("silence")
def alerts_silence(
    match: Annotated[
        Optional[list[str]],
        typer.Option("--match", "-m", show_default=False,
                     help='A label matcher: severity=critical, host=~"web.*", check!=disk (repeatable; all must match).'),
    ] = None,
    duration: Annotated[
        str, typer.Option("--duration", "-d", show_default=False, help="How long: 30m, 2h, 1d.")
    ] = ...,  # type: ignore[assignment]  # typer: required, yet after --match in the help
    comment: Annotated[str, typer.Option("--comment", "-c", help="Why (shown by `alerts silences`).")] = "",
    start: Annotated[
        Optional[str], typer.Option("--start", show_default=False, help="When it starts (ISO 8601) [default: now].")
    ] = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Silence the alerts matching every --match for a while: they change state, but nobody is notified."""
    from ce_agent import alertcmds

    typer.echo(_alertcmd(alertcmds.add_silence, _state_dir(state_dir), match or [], duration, comment, start, _user()))


@alerts_app.command("silences")
def alerts_silences(
    show_all: Annotated[bool, typer.Option("--all", help="Expired silences too.")] = False,
    state_dir: StateDirOpt = None,
    output_format: FormatOpt = "text",
) -> None:
    """Silences in force or still to come (with --all, the expired ones kept too)."""
    from ce_agent import alertcmds

    typer.echo(_alertcmd(alertcmds.list_silences, _state_dir(state_dir), show_all, output_format))


@alerts_app.command("unsilence")
def alerts_unsilence(
    silence_id: Annotated[str, typer.Argument(metavar="ID", help="The silence's id (see `alerts silences`).")],
    state_dir: StateDirOpt = None,
) -> None:
    """End a silence now."""
    from ce_agent import alertcmds

    typer.echo(_alertcmd(alertcmds.unsilence, _state_dir(state_dir), silence_id))


@notify_app.command("test")
def notify_test(
    channel: Annotated[str, typer.Argument(help="A channel named in the inventory's `channels`.")],
    inventory: InventoryOpt = None,
    host: Annotated[
        Optional[str],
        typer.Option("--host", show_default=False,
                     help="Resolve the channel for this host [default: localhost, or the inventory's only host]."),
    ] = None,
) -> None:
    """Send a test message (a fire drill) down one channel; exit 0 when it was accepted, 2 otherwise."""
    from ce_agent import alertcmds

    typer.echo(_alertcmd(alertcmds.notify_test, list(inventory or []), channel, host, os.environ, _user()))


@app.command()
def ping(
    name: Annotated[str, typer.Argument(help="The heartbeat's name ([A-Za-z0-9_.-]+), as the heartbeat check names it.")],
    start: Annotated[bool, typer.Option("--start", help="The job has started (it is running).")] = False,
    fail: Annotated[bool, typer.Option("--fail", help="The job has failed.")] = False,
    state_dir: StateDirOpt = None,
) -> None:
    """Record a heartbeat of a cron job for the `heartbeat` check; prints nothing when recorded."""
    from ce_agent import alertcmds

    if start and fail:
        raise _fail(["error: give --start or --fail, not both"])
    _alertcmd(alertcmds.ping, _state_dir(state_dir), name, "start" if start else "fail" if fail else "success")


def _service_kind(systemd: bool, launchd: bool) -> str:
    from ce_agent import service

    if systemd and launchd:
        raise _fail(["error: give --systemd or --launchd, not both"])
    return "systemd" if systemd else "launchd" if launchd else service.default_kind(sys.platform)


def _finish(outcome) -> typer.Exit:  # type: ignore[no-untyped-def]
    """Print a service command's outcome; the exit to raise."""
    for line in outcome.out:
        typer.echo(line)
    for line in outcome.err:
        typer.echo(line, err=True)
    return typer.Exit(outcome.code)


@service_app.command("install")
def service_install(
    systemd: Annotated[bool, typer.Option("--systemd", help="A systemd unit [default on Linux].")] = False,
    launchd: Annotated[bool, typer.Option("--launchd", help="A launchd plist [default on macOS].")] = False,
    user: Annotated[bool, typer.Option("--user", help="For the current user (systemd --user, a LaunchAgent).")] = False,
    playbook: Annotated[
        Optional[list[Path]], typer.Option("--playbook", "-p", show_default=False, help="Playbook file (repeatable).")
    ] = None,
    inventory: InventoryOpt = None,
    listen: Annotated[
        Optional[str],
        typer.Option("--listen", show_default=False, metavar="HOST:PORT",
                     help="Where the agent serves its endpoints [default: the agent's, 127.0.0.1:9464]."),
    ] = None,
    credential: Annotated[
        Optional[list[str]],
        typer.Option("--credential", show_default=False, help="NAME=PATH of a secret for systemd's LoadCredential= (repeatable)."),
    ] = None,
    state_dir: Annotated[
        Optional[Path], typer.Option("--state-dir", show_default=False, help="Where the service keeps its state [default: systemd's StateDirectory].")
    ] = None,
    no_start: Annotated[
        bool, typer.Option("--no-start", help="Write the file (and daemon-reload) but do not enable or start the service.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a unit or plist that ce-agent did not write.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the unit or plist; write nothing.")] = False,
) -> None:
    """Write the unit or plist that runs `ce-agent agent`, then enable and start it (the system service needs root).

    Exit 0 when done, 1 when the file is written but the service manager failed (each failure and what to
    run next on stderr), 2 when nothing was written (bad arguments, not root, a unit ce-agent did not write).
    """
    import shutil

    from ce_agent import service

    kind = _service_kind(systemd, launchd)
    if not playbook:
        raise _fail(["error: give at least one --playbook for the agent to run"])
    try:
        address = service.listen_address(listen) if listen is not None else None
        if not dry_run:
            service.require_root(user, os.geteuid(), os.environ, "installing")
    except (service.ServiceError, ValueError) as exc:
        raise _fail([f"error: {exc}"]) from None
    for path in [*playbook, *(inventory or [])]:
        if not path.exists():
            raise _fail([f"error: {path}: no such file or directory"])
    argv = service.agent_argv(sys.argv[0], shutil.which("ce-agent"), sys.executable, playbook, inventory or [], address)
    try:
        rendered = service.render(kind, argv, user, Path.home(), str(state_dir.resolve()) if state_dir else None,
                                  service.parse_credentials(credential or []), os.environ)
        # with CE_AGENT_SERVICE_ROOT (a packager's staging root) these files are not the target's
        for warning in [] if os.environ.get("CE_AGENT_SERVICE_ROOT") else service.reachability_warnings(argv, kind, user):
            typer.echo(warning, err=True)
        if dry_run:
            typer.echo(f"# would write {rendered.path}", err=True)
            sys.stdout.write(rendered.content.decode())
            return
        outcome = service.install(rendered, user, start=not no_start, force=force)
    except (service.ServiceError, ValueError) as exc:
        raise _fail([f"error: {exc}"]) from None
    raise _finish(outcome)


@service_app.command("uninstall")
def service_uninstall(
    systemd: Annotated[bool, typer.Option("--systemd", help="The systemd unit [default on Linux].")] = False,
    launchd: Annotated[bool, typer.Option("--launchd", help="The launchd plist [default on macOS].")] = False,
    user: Annotated[bool, typer.Option("--user", help="The current user's service (systemd --user, a LaunchAgent).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Remove a unit or plist that ce-agent did not write.")] = False,
) -> None:
    """Stop and disable the service, remove its unit or plist, reload the service manager.

    Exit 0 when removed or not installed, 1 when removed but the service manager failed, 2 when refused.
    """
    from ce_agent import service

    kind = _service_kind(systemd, launchd)
    try:
        service.require_root(user, os.geteuid(), os.environ, "removing")
        outcome = service.uninstall(kind, service.unit_path(kind, user, Path.home(), os.environ), user, force)
    except service.ServiceError as exc:
        raise _fail([f"error: {exc}"]) from None
    raise _finish(outcome)


@service_app.command("status")
def service_status(
    systemd: Annotated[bool, typer.Option("--systemd", help="The systemd unit [default on Linux].")] = False,
    launchd: Annotated[bool, typer.Option("--launchd", help="The launchd plist [default on macOS].")] = False,
    user: Annotated[bool, typer.Option("--user", help="The current user's service (systemd --user, a LaunchAgent).")] = False,
) -> None:
    """Where the unit or plist is, whether it is installed, and what the service manager says.

    Exit 0 when the service runs, 3 when it does not or is not installed, 4 when it is installed but the
    service manager cannot be asked (as `systemctl status` and LSB init scripts).
    """
    from ce_agent import service

    kind = _service_kind(systemd, launchd)
    try:
        outcome = service.status(kind, service.unit_path(kind, user, Path.home(), os.environ), user)
    except service.ServiceError as exc:
        raise _fail([f"error: {exc}"]) from None
    raise _finish(outcome)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ce-agent {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """ce-agent: checks, collectors and notifiers from Ansible-style playbooks and inventories."""


def main() -> None:
    """Console entry point: user errors print one line and exit 2, never a traceback."""
    # click's exceptions, from wherever this typer takes click (0.28 vendors it as typer._click)
    click = sys.modules[typer.BadParameter.__module__]
    try:
        code = app(standalone_mode=False, prog_name="ce-agent")
    except getattr(click, "NoArgsIsHelpError", ()) as exc:  # `ce-agent alerts`: the help, as before
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        # one line (click prints usage, a hint and the error on three): the reason and where to look
        where = exc.ctx.command_path if exc.ctx is not None else "ce-agent"
        typer.echo(f"error: {exc.format_message()} (see '{where} --help')", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("Aborted!", err=True)
        sys.exit(1)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except FaultError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAULT)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
