"""`ce-agent export prometheus-rules`: alert rules and SLOs as Prometheus rules, checked by promtool."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ce_agent.alerting.expr import parse_expr
from ce_agent.contracts import Metric, Result, Status
from ce_agent.promrules import exported_as, prom_duration, slo_rules, sources_of, translate_expr, translate_template
from ce_agent.slo import SLO, BudgetPolicy, CheckSLI, RatioSLI, ThresholdSLI, evaluate
from tests.conftest import Agent

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "promrules"
SITE, INVENTORY, UNIT_TESTS = FIXTURES / "site.yml", FIXTURES / "inventory.yml", FIXTURES / "rules_test.yml"
BOTH = {"collector", "check"}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CE_AGENT_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is missing and CE_AGENT_REQUIRE_PROMTOOL=1")
        pytest.skip("promtool is missing (Debian package prometheus)")
    return found


def _promql(expr: str, kinds: set[str] = frozenset({"collector"}), hosts: tuple[str, ...] = ("web1",)) -> str:
    parsed = parse_expr(expr)
    return translate_expr(parsed, sources_of(parsed.metric, kinds, [m.name for m in parsed.matchers]), hosts)


# ---- the `alerts:` grammar in PromQL ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "kinds", "hosts", "promql"),
    [
        pytest.param("system_memory_used_percent > 90", {"collector"}, ("web1",),
                     'max without (collector, play) (ce_system_memory_used_percent{host="web1"} > 90)',
                     id="a collector's sample is ce_NAME, labelled collector/host/play: only host stays"),
        pytest.param("fixed_value >= 2.5", {"check"}, ("web1",),
                     'max without (check, metric, play, unit) (ce_check_metric{metric="fixed_value", host="web1"} '
                     '>= 2.5)',
                     id="a check's perfdata is ce_check_metric, its name in the metric label"),
        pytest.param("load1 < 0.5", BOTH, ("web1",),
                     'max without (collector, play) (ce_load1{host="web1"} < 0.5) or '
                     'max without (check, metric, play, unit) (ce_check_metric{metric="load1", host="web1"} < 0.5)',
                     id="both kinds of task on the hosts: either export, the collector's first"),
        pytest.param('disk_used_percent{mount="/", fs!="tmpfs", dev=~"sd.+", opts!~"ro,.*"} == 100', {"collector"},
                     ("web1",),
                     'max without (collector, play) (ce_disk_used_percent{host="web1", mount="/", fs!="tmpfs", '
                     'dev=~"sd.+", opts!~"ro,.*"} == 100)',
                     id="the four matcher operators, anchored alike in both"),
        pytest.param("x != 0", {"collector"}, ("web2", "web1", "web.3"),
                     'max without (collector, play) (ce_x{host=~"web\\\\.3|web1|web2"} != 0)',
                     id="the play's hosts, sorted and escaped for RE2"),
        pytest.param('x{host="h", collector="c", play="p"} > 1', {"collector"}, ("web1",),
                     'max without (collector, play) (ce_x{host="web1", exported_host="h", exported_collector="c", '
                     'exported_play="p"} > 1)',
                     id="a sample's own label clashing with ours is exported_NAME, as on a scrape"),
        pytest.param('y{metric="m", unit="s", check="c"} > 1', {"check"}, ("web1",),
                     'max without (check, metric, play, unit) (ce_check_metric{metric="y", host="web1", '
                     'exported_metric="m", exported_unit="s", exported_check="c"} > 1)',
                     id="perfdata's own labels clashing with ours, likewise"),
        pytest.param("check_status > 0", {"collector"}, ("web1",),
                     'max without (collector, play) (ce_check_status_sample{host="web1"} > 0)',
                     id="a sample named like one of ce-agent's families gets _sample, as exported"),
        pytest.param("http_requests_total > 1e+20", {"collector"}, ("web1",),
                     'max without (collector, play) (ce_http_requests_total{host="web1"} > 1e+20)',
                     id="a _total sample is a counter of that name; numbers as PromQL writes them"),
        pytest.param("temperature <= -Inf", {"collector"}, ("web1",),
                     'max without (collector, play) (ce_temperature{host="web1"} <= -Inf)',
                     id="infinities"),
        pytest.param('msg{text="say \\"hi\\"\\n", path="C:\\\\x"} > 0', {"collector"}, ("web1",),
                     'max without (collector, play) (ce_msg{host="web1", text="say \\"hi\\"\\n", path="C:\\\\x"} > 0)',
                     id="quotes, newlines and backslashes escaped as PromQL reads them"),
        pytest.param('x{name=~"web\\.example"} > 0', {"collector"}, ("web1",),
                     'max without (collector, play) (ce_x{host="web1", name=~"web\\\\.example"} > 0)',
                     id="a regex's backslash is kept: ce-agent leaves unknown escapes as written"),
        pytest.param('x{op=~"[*+]+"} > 0', {"collector"}, ("web1",),
                     'max without (collector, play) (ce_x{host="web1", op=~"[*+]+"} > 0)',
                     id="quantifier characters inside a class are no possessive quantifier"),
    ],
)
def test_an_alert_expr_becomes_promql(expr: str, kinds: set[str], hosts: tuple[str, ...], promql: str) -> None:
    assert _promql(expr, kinds, hosts) == promql


@pytest.mark.parametrize(
    ("expr", "kinds", "message"),
    [
        pytest.param('x{a=~"(?!boot).*"} > 0', {"collector"}, r"\(\?!\.\.\.\) is a Python-only construct",
                     id="a lookahead: RE2 has none"),
        pytest.param('x{a=~"(?<=/)srv"} > 0', {"collector"}, r"\(\?<=\.\.\.\) is a Python-only construct",
                     id="a lookbehind"),
        pytest.param('x{a=~"(a)\\\\1"} > 0', {"collector"}, r"\\1 is a back-reference", id="a back-reference"),
        pytest.param('x{a=~"a++"} > 0', {"collector"}, "possessive quantifier", id="a possessive quantifier"),
        pytest.param('x{a=~"end\\\\Z"} > 0', {"collector"}, r"RE2 writes it \\z", id="Python's \\Z"),
        pytest.param("x > 0", set(), "no check or collector runs on its hosts, so 'x' is never exported",
                     id="nothing on the hosts exports a metric"),
    ],
)
def test_what_promql_cannot_say_is_an_error(expr: str, kinds: set[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _promql(expr, kinds)


def test_an_escaped_backslash_before_a_digit_is_no_back_reference() -> None:
    assert _promql('x{a=~"\\\\\\\\1"} > 0').endswith('a=~"\\\\\\\\1"} > 0)')


@pytest.mark.parametrize(
    ("text", "kinds", "expected"),
    [
        pytest.param("memory at {{ value }}%", {"collector"}, "memory at {{ $value }}%", id="value"),
        pytest.param("{{value}} on {{labels.host}}", {"collector"}, "{{ $value }} on {{ $labels.host }}",
                     id="without spaces; host is the series' own"),
        pytest.param("{{ labels.mount }} / {{ labels['a-b'] }}", {"collector"},
                     "{{ $labels.mount }} / {{ $labels.a_b }}",
                     id="a sample's label, by the name it is exported under"),
        pytest.param("{{ labels.metric }}", {"check"}, "{{ $labels.exported_metric }}",
                     id="a perfdata label clashing with ours"),
        pytest.param("{{ labels.alertname }} {{ labels.severity }} {{ labels.play }} {{ labels.team }}", {"collector"},
                     "HighMemory critical Web tier ops",
                     id="the labels the rule sets are constants (Prometheus' $labels holds the series' only)"),
        pytest.param("no templates, {braces}", {"collector"}, "no templates, {braces}", id="plain text"),
    ],
)
def test_an_annotation_becomes_a_prometheus_template(text: str, kinds: set[str], expected: str) -> None:
    constants = {"alertname": "HighMemory", "severity": "critical", "play": "Web tier", "team": "ops"}
    assert translate_template(text, constants, sources_of("m", kinds)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("{{ value | round(1) }}", "only {{ value }} and {{ labels.NAME }}", id="a Jinja filter"),
        pytest.param("{{ env.HOME }}", "only {{ value }} and {{ labels.NAME }}", id="another variable"),
        pytest.param("{% if value > 1 %}big{% endif %}", "Jinja statements", id="a statement"),
        pytest.param("{{ labels.metric }}", "named exported_metric or metric", id="a label named two ways"),
    ],
)
def test_an_annotation_prometheus_cannot_render_is_an_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        translate_template(text, {}, sources_of("m", BOTH))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(300, "5m", id="minutes"),
        pytest.param(90, "1m30s", id="compound"),
        pytest.param(259_200, "3d", id="days"),
        pytest.param(28 * 86_400, "28d", id="4w as days"),
        pytest.param(1.5, "1s500ms", id="milliseconds"),
        pytest.param(0, "0s", id="zero"),
    ],
)
def test_durations_are_written_as_prometheus_reads_them(seconds: float, text: str) -> None:
    assert prom_duration(seconds) == text


def _slo(sli: CheckSLI | ThresholdSLI | RatioSLI, labels: tuple[tuple[str, str], ...] = ()) -> SLO:
    return SLO(name="S", objective=99.5, window="4w", window_s=28 * 86400.0, sli=sli, labels=labels)


@pytest.mark.parametrize(
    ("slo", "kinds", "records"),
    [
        pytest.param(_slo(CheckSLI("Home")), set(), {
            "ce_slo:sli_error:ratio_rate5m":
                'sum by (host, play) (rate(ce_check_runs_total{check="Home", play="P", status!="ok"}[5m])) / '
                'sum by (host, play) (rate(ce_check_runs_total{check="Home", play="P"}[5m]))'},
            id="check: the share of runs not OK, from the daemon's runs counter"),
        pytest.param(_slo(ThresholdSLI("lat", "<", 0.5), (("a-b", "1"), ("host", "h"))), {"collector"}, {
            "ce_slo:good_event:bool": '(ce_lat{play="P", a_b="1", exported_host="h"} < bool 0.5)',
            "ce_slo:sli_error:ratio_rate28d":
                '1 - sum by (host, play) (sum_over_time(ce_slo:good_event:bool{slo="S", play="P"}[28d])) / '
                'sum by (host, play) (count_over_time(ce_slo:good_event:bool{slo="S", play="P"}[28d]))'},
            id="metric: each sample 1 or 0, averaged; labels by their exported names; 4w is 28d"),
        pytest.param(_slo(RatioSLI("ok_total", "all_total")), BOTH, {
            "ce_slo:sli_error:ratio_rate1h":
                'clamp(1 - sum by (host, play) (rate(ce_ok_total{play="P"}[1h]) or '
                'rate(ce_check_metric{metric="ok_total", play="P"}[1h])) / sum by (host, play) '
                '(rate(ce_all_total{play="P"}[1h]) or rate(ce_check_metric{metric="all_total", play="P"}[1h])), 0, 1)'},
            id="good/total: counters' rates, from either export"),
    ],
)
def test_an_slo_becomes_recording_rules(slo: SLO, kinds: set[str], records: dict[str, str]) -> None:
    rules = slo_rules(slo, "P", kinds)
    recorded = {r["record"]: r["expr"] for r in rules if "record" in r}
    windows = [r["record"].rsplit("rate", 1)[1] for r in rules if r.get("record", "").startswith("ce_slo:sli_")]
    assert windows == ["5m", "30m", "1h", "6h", "3d", "28d"]
    assert all(r["labels"]["slo"] == "S" for r in rules)
    for name, expr in records.items():
        assert recorded[name] == expr


def test_slo_alerts_are_the_workbook_rows_one_at_a_time() -> None:
    slo = SLO(name="S", objective=99.9, window="30d", window_s=30 * 86400.0, sli=CheckSLI("Home"),
              budget_policy=BudgetPolicy(below=0.25))
    alerts = [r for r in slo_rules(slo, "P", set()) if "alert" in r]
    page, slow_page, ticket, budget = alerts
    burn = 'ce_slo:sli_error:ratio_rate{}{{slo="S", play="P"}} / 0.001 >= {}'
    assert page["expr"] == f"{burn.format('1h', 14.4)} and {burn.format('5m', 14.4)}"
    assert slow_page["expr"] == (f"({burn.format('6h', 6)} and {burn.format('30m', 6)}) unless "
                                 f"({burn.format('1h', 14.4)} and {burn.format('5m', 14.4)})")
    assert ticket["expr"].startswith(f"({burn.format('3d', 1)} and {burn.format('6h', 1)}) unless (")
    assert [a["labels"] for a in alerts[:3]] == [
        {"slo": "S", "severity": "critical", "long_window": "1h", "short_window": "5m"},
        {"slo": "S", "severity": "critical", "long_window": "6h", "short_window": "30m"},
        {"slo": "S", "severity": "warning", "long_window": "3d", "short_window": "6h"},
    ]
    assert budget["alert"] == "SLOErrorBudget"
    assert budget["expr"] == '100 * (1 - ce_slo:sli_error:ratio_rate30d{slo="S", play="P"} / 0.001) < 25'
    assert budget["labels"] == {"slo": "S", "severity": "warning"}


# ---- the names queried are the names exported ------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name", "labels"),
    [
        pytest.param("collector", "system_memory_used_percent", {"mount": "/"}, id="a collector's sample"),
        pytest.param("collector", "requests_total", {"host": "x"}, id="a counter, with a clashing label"),
        pytest.param("collector", "check_status", {}, id="a reserved name"),
        pytest.param("perfdata", "rta", {"metric": "x", "target": "a"}, id="a check's perfdata"),
    ],
)
def test_the_selector_finds_the_series_the_daemon_serves(kind: str, name: str, labels: dict[str, str]) -> None:
    from types import SimpleNamespace

    from ce_agent.telemetry import Telemetry

    sample = Metric(name, 7.0, "", labels)
    job = SimpleNamespace(kind="check" if kind == "perfdata" else "collector", name="task", host="web1", play="P",
                          plugin_name="plugin")
    outcome = SimpleNamespace(job=job, result=Result(Status.OK, "", [sample] if kind == "perfdata" else []),
                              duration_s=0.1, samples=[] if kind == "perfdata" else [sample], timed_out=False)
    telemetry = Telemetry(start_time=0.0)
    telemetry.record_outcome(outcome, 1.0)
    text = telemetry.render()
    source = exported_as(kind, name, labels)
    wanted = {source.label(k): v for k, v in labels.items()}
    wanted |= {k: v for k, v in source.fixed.items() if v}
    lines = [line for line in text.splitlines() if line.startswith(source.name + "{")]
    assert len(lines) == 1, text
    for label, value in wanted.items():
        assert f'{label}="{value}"' in lines[0]


def test_a_check_slo_counts_the_runs_the_daemon_serves() -> None:
    from types import SimpleNamespace

    from ce_agent.telemetry import Telemetry

    job = SimpleNamespace(kind="check", name="Home page", host="web1", play="Web tier", plugin_name="http")
    telemetry = Telemetry(start_time=0.0)
    for status in (Status.OK, Status.CRITICAL, Status.OK):
        outcome = SimpleNamespace(job=job, result=Result(status, ""), duration_s=0.1, samples=[], timed_out=False)
        telemetry.record_outcome(outcome, 1.0)
    text = telemetry.render()
    assert 'ce_check_runs_total{check="Home page",host="web1",play="Web tier",status="ok"} 2.0' in text
    assert 'ce_check_runs_total{check="Home page",host="web1",play="Web tier",status="critical"} 1.0' in text


# ---- the command, promtool check rules and promtool test rules -------------------------------------


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return Agent(tmp_path)


def test_the_export_passes_promtool_check_rules(agent: Agent) -> None:
    ran = agent("export", "prometheus-rules", str(SITE), "-i", str(INVENTORY))
    assert ran.code == 0, ran.err
    assert ran.err == ""
    doc = yaml.safe_load(ran.out)
    groups = {g["name"]: g["rules"] for g in doc["groups"]}
    assert list(groups) == ["Web tier", "Database"]
    alerts = [(r["alert"], r["labels"].get("long_window")) for r in groups["Web tier"] if "alert" in r]
    assert alerts == [
        ("SLOBurnRate", "1h"), ("SLOBurnRate", "6h"), ("SLOBurnRate", "3d"), ("SLOErrorBudget", None),  # Home page
        ("SLOBurnRate", "1h"), ("SLOBurnRate", "6h"), ("SLOBurnRate", "3d"),  # API latency
        ("HighMemory", None), ("RootAlmostFull", None),  # API requests has `alerts: false`
    ]
    records = {(r["record"], r["labels"]["slo"]) for r in groups["Web tier"] if "record" in r}
    for slo, window in (("Home page availability", "30d"), ("API latency", "28d"), ("API requests", "7d")):
        for w in ("5m", "30m", "1h", "6h", "3d", window):
            assert (f"ce_slo:sli_error:ratio_rate{w}", slo) in records
    (load,) = groups["Database"]
    assert load["expr"] == 'max without (collector, play) (ce_system_load1{host="db1"} > 8)'
    assert load["labels"] == {"play": "Database", "severity": "warning"}

    rules = agent.cwd / "rules.yml"
    rules.write_text(ran.out)
    checked = subprocess.run([_promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 29 rules found" in checked.stdout


def test_the_exported_rules_pass_their_promtool_unit_tests(agent: Agent) -> None:
    ran = agent("export", "prometheus-rules", str(SITE), "-i", str(INVENTORY), "-o", str(agent.cwd / "rules.yml"))
    assert ran.code == 0 and ran.out == "", ran.err
    shutil.copy(UNIT_TESTS, agent.cwd / "rules_test.yml")
    tested = subprocess.run([_promtool(), "test", "rules", "rules_test.yml"], cwd=agent.cwd, capture_output=True,
                            text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_unit_tests_can_fail(agent: Agent) -> None:
    """The same unit tests against rules whose page factor was changed must fail: they check something."""
    ran = agent("export", "prometheus-rules", str(SITE), "-i", str(INVENTORY))
    assert ran.code == 0, ran.err
    (agent.cwd / "rules.yml").write_text(ran.out.replace(">= 14.4", ">= 1440"))
    shutil.copy(UNIT_TESTS, agent.cwd / "rules_test.yml")
    tested = subprocess.run([_promtool(), "test", "rules", "rules_test.yml"], cwd=agent.cwd, capture_output=True,
                            text=True, timeout=120)
    assert tested.returncode != 0
    assert "alertname: SLOBurnRate" in tested.stdout + tested.stderr


def _expand(values: str) -> list[float]:
    """promtool's series notation as used in rules_test.yml: `a+bxn` (n+1 values) and `axn`."""
    out: list[float] = []
    for part in values.split():
        found = re.fullmatch(r"([-\d.]+)(?:([-+][\d.]+))?x(\d+)", part)
        assert found, part
        start, step, count = float(found[1]), float(found[2] or 0), int(found[3])
        out += [start + step * i for i in range(count + 1)]
    return out


def test_the_unit_tests_expect_what_ce_agent_itself_would_raise() -> None:
    """The home page's runs of rules_test.yml, fed to ce-agent's own SLO engine: at minute 120 web1
    pages (1h/5m) and web2 gets a ticket (3d/6h), as the Prometheus rules are expected to say."""
    doc = yaml.safe_load(UNIT_TESTS.read_text())
    counters: dict[tuple[str, str], list[float]] = {}
    for series in doc["tests"][0]["input_series"]:
        found = re.match(r'ce_check_runs_total\{check="Home page", host="(\w+)", .*status="(\w+)"', series["series"])
        if found:
            counters[(found[1], found[2])] = _expand(series["values"])
    start = 1_700_000_000.0
    home = SLO(name="Home page availability", objective=99.9, window="30d", window_s=30 * 86400.0,
               sli=CheckSLI("Home page"), budget_policy=BudgetPolicy(below=0.25))
    verdicts = {}
    for host in ("web1", "web2"):
        ok, critical = counters[(host, "ok")], counters[(host, "critical")]
        rows = [(start + 60 * t, "Home page", host, 2 if critical[t] > critical[t - 1] else 0)
                for t in range(1, 121) if ok[t] + critical[t] > ok[t - 1] + critical[t - 1]]
        status = evaluate(home, rows, [], start + 120 * 60, host=host)
        verdicts[host] = (status.alert, status.alert_windows, math.floor(100 * status.error_budget_remaining))
    assert verdicts == {"web1": ("page", ("1h", "5m"), -49900), "web2": ("ticket", ("3d", "6h"), -8234)}


def test_rules_built_from_what_a_real_run_exports_fire(agent: Agent) -> None:
    """`ce-agent run --textfile-dir` writes the series; held for 10 minutes they are the input of a
    promtool unit test of the rules exported from the same playbook: the agent's names are the rules' names."""
    agent.write("site.yml", """\
        - name: Probe
          hosts: localhost
          collectors:
            - name: Memory
              system: {include: [memory]}
          checks:
            - name: Latency probe
              command: "echo 'OK - fine | http_latency_seconds=0.9s;0.5;1'"
          alerts:
            - name: MemoryKnown
              expr: "system_memory_used_percent >= 0"
            - name: SlowProbe
              expr: "http_latency_seconds > 0.5"
              annotations: {summary: "{{ value }}s"}
          slos:
            - name: Probe latency
              objective: 99
              window: 7d
              sli: {metric: http_latency_seconds, good: "<= 0.5"}
        """)
    out = agent.cwd / "textfiles"
    out.mkdir()
    ran = agent("run", "site.yml", "--textfile-dir", str(out))
    assert ran.code == 0, ran.out + ran.err
    series = []
    for line in (out / "ce-agent.prom").read_text().splitlines():
        if line.startswith("ce_") and not line.startswith(("ce_build_info", "ce_export_skipped")):
            name, value = line.rsplit(" ", 1)
            series.append({"series": name, "values": f"{value}x10"})
    assert any(s["series"].startswith("ce_system_memory_used_percent{") for s in series), series
    exported = agent("export", "prometheus-rules", "site.yml", "-o", "rules.yml")
    assert exported.code == 0, exported.err
    labels = {"host": "localhost", "play": "Probe"}
    unit = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "MemoryKnown",
                 "exp_alerts": [{"exp_labels": {**labels, "severity": "warning"}}]},
                {"eval_time": "10m", "alertname": "SlowProbe",
                 "exp_alerts": [{"exp_labels": {**labels, "severity": "warning"},
                                 "exp_annotations": {"summary": "0.9s"}}]},
                {"eval_time": "10m", "alertname": "SLOBurnRate",
                 "exp_alerts": [{"exp_labels": {**labels, "slo": "Probe latency", "severity": "critical",
                                                "long_window": "1h", "short_window": "5m"},
                                 "exp_annotations": {"summary": "error budget burning at 100.0x over 1h "
                                                                "(at least 14.4x over 5m too)"}}]},
            ],
        }],
    }
    (agent.cwd / "unit.yml").write_text(yaml.safe_dump(unit, sort_keys=False))
    tested = subprocess.run([_promtool(), "test", "rules", "unit.yml"], cwd=agent.cwd, capture_output=True,
                            text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_text_that_looks_like_a_template_stays_text(agent: Agent) -> None:
    """ce-agent does not template labels (nor an SLO's name): Prometheus would, so `{{` is escaped."""
    agent.write("site.yml", """\
        - name: Odd {{ play }}
          hosts: localhost
          checks:
            - name: Disk
              command: "echo 'OK | used=5%'"
          alerts:
            - name: Odd
              expr: 'used > 0'
              labels: {note: "{{ not a template }}", enabled: true}
              annotations: {summary: "literal {braces}, {{ labels.note }} in {{ labels.play }}"}
        """)
    exported = agent("export", "prometheus-rules", "site.yml", "-o", "rules.yml")
    assert exported.code == 0, exported.err
    play = "Odd {{ play }}"
    labels = {"host": "localhost", "play": play, "severity": "warning", "note": "{{ not a template }}",
              "enabled": "True"}  # YAML's true, as ce-agent makes a label of it
    unit = {"rule_files": ["rules.yml"], "tests": [{
        "interval": "1m",
        "input_series": [{"series": 'ce_check_metric{check="Disk", host="localhost", metric="used", '
                                    f'play="{play}", unit="%"}}', "values": "5x5"}],
        "alert_rule_test": [{"eval_time": "2m", "alertname": "Odd", "exp_alerts": [{
            "exp_labels": labels,
            "exp_annotations": {"summary": f"literal {{braces}}, {{{{ not a template }}}} in {play}"}}]}],
    }]}
    (agent.cwd / "unit.yml").write_text(yaml.safe_dump(unit, sort_keys=False))
    tested = subprocess.run([_promtool(), "test", "rules", "unit.yml"], cwd=agent.cwd, capture_output=True,
                            text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr


# ---- bad input: one line each, exit 2 --------------------------------------------------------------


@pytest.mark.parametrize(
    ("playbook", "args", "lines"),
    [
        pytest.param(None, ["missing.yml"], ["missing.yml: no such playbook", "1 error"], id="an unknown playbook"),
        pytest.param("""\
            - name: Dashboards only
              hosts: localhost
              slos:
                - name: Latency
                  objective: 99
                  window: 7d
                  sli: {metric: http_latency_seconds, good: "<= 0.5"}
            """, ["site.yml"],
            ["site.yml:4:7: slos[0] 'Latency': sli.metric: the play has no check or collector, so "
             "'http_latency_seconds' is never exported", "1 error"],
            id="an SLO whose metric nothing exports"),
        pytest.param("""\
            - name: Disks
              hosts: localhost
              checks:
                - name: Root
                  disk: {path: /}
              alerts:
                - name: NotBoot
                  expr: 'disk_used_percent{path=~"/(?!boot).*"} > 90'
                - name: Rounded
                  expr: 'disk_used_percent > 90'
                  annotations: {summary: "{{ value | round }}%"}
            """, ["site.yml"],
            ["site.yml:7:7: alert rule 'NotBoot': 'expr': matcher path=~\"/(?!boot).*\": (?!...) is a Python-only "
             "construct (lookaround, atomic group, conditional or comment)",
             "site.yml:9:7: alert rule 'Rounded': annotations.summary: {{ value | round }}: only {{ value }} and "
             "{{ labels.NAME }} have a Prometheus equivalent",
             "2 errors"],
            id="every rule PromQL cannot express, each with its place"),
        pytest.param("- name: Empty\n  hosts: localhost\n  checks: [{name: Root, disk: {path: /}}]\n",
                     ["site.yml", "--format", "json"], ["error: --format must be yaml, got 'json'"], id="another format"),
    ],
)
def test_bad_input_is_one_line_each_and_exit_2(agent: Agent, playbook: str | None, args: list[str],
                                               lines: list[str]) -> None:
    if playbook is not None:
        agent.write("site.yml", playbook)
    ran = agent("export", "prometheus-rules", *args)
    assert (ran.code, ran.out, ran.err.splitlines()) == (2, "", lines)


def test_plays_without_rules_give_an_empty_file_and_a_warning(agent: Agent) -> None:
    agent.write("site.yml", "- name: Disks\n  hosts: localhost\n  checks: [{name: Root, disk: {path: /}}]\n")
    ran = agent("export", "prometheus-rules", "site.yml")
    assert ran.code == 0
    assert yaml.safe_load(ran.out) == {"groups": []}
    assert ran.err.splitlines() == ["warning: no alert rules or SLOs in these plays: the rule file has no groups"]
