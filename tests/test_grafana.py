"""packaging/grafana/ce-agent.json: a valid dashboard whose every query names a series the agent exports.

The exported names come from a real `ce-agent agent` (its /metrics) and a real `ce-agent run
--textfile-dir` with an SLO (the ce_slo_* series, which only that route carries), never from a list
kept by hand; the queries' names come from a small PromQL tokenizer; promtool, when installed, parses
every query.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agentproc import AgentProcess
from tests.conftest import ROOT

DASHBOARD = ROOT / "packaging" / "grafana" / "ce-agent.json"

# --- a PromQL tokenizer that knows which identifiers are metric names --------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<var>\$\{[^}]+\}|\$\w+|\[\[\w+\]\])
  | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^=<>,(){}\[\]@:])
""", re.VERBOSE)
# identifiers followed by a parenthesised list of label names
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = _LABEL_LISTS | {"offset", "bool", "and", "or", "unless", "atan2", "inf", "nan"}
_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
                 "quantile", "limitk", "limit_ratio"}


def tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) of each token but blanks; an unknown character is an error, not a silent skip."""
    out, at = [], 0
    while at < len(expr):
        found = _TOKEN.match(expr, at)
        if found is None:
            raise ValueError(f"cannot tokenize {expr[at:at + 20]!r} in {expr!r}")
        if found.lastgroup != "ws":
            out.append((found.lastgroup, found.group()))
        at = found.end()
    return out


def metric_names(expr: str) -> list[str]:
    """The metric names an expression selects, in order, each once: not functions, aggregations,
    keywords, label names (in matchers or in by/without/on/ignoring/group_* lists), strings, durations
    or template variables; a {__name__="..."} matcher counts."""
    toks = tokens(expr)
    names: list[str] = []
    braces = brackets = 0
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else ""
        if text == "{":
            braces += 1
        elif text == "}":
            braces -= 1
        elif text == "[":
            brackets += 1
        elif text == "]":
            brackets -= 1
        elif braces:
            if text == "__name__" and following == "=" and i + 2 < len(toks) and toks[i + 2][0] == "string":
                names.append(toks[i + 2][1][1:-1])
        elif kind == "ident" and not brackets:
            word = text.lower()
            if word in _LABEL_LISTS and following == "(":
                i = next(j for j in range(i + 1, len(toks)) if toks[j][1] == ")")
            elif word in _KEYWORDS or following == "(" or (word in _AGGREGATIONS and following.lower() in _LABEL_LISTS):
                pass
            else:
                names.append(text)
        i += 1
    return list(dict.fromkeys(names))


def sample_names(text: str) -> set[str]:
    """Every series name a Prometheus scraping this text could store: the samples present, and those a
    declared family without samples yet will have (a counter's _total, a histogram's _bucket/_sum/_count)."""
    from prometheus_client.parser import text_string_to_metric_families

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "summary": ["", "_sum", "_count"],
                "gauge": [""], "untyped": [""], "info": ["_info"], "stateset": [""], "gaugehistogram": ["_bucket"]}
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(board) for t in p.get("targets", []) if t.get("expr")]


def variable_selectors(board: dict[str, Any]) -> list[str]:
    """The series selectors of the query variables: label_values(SELECTOR, label) -> SELECTOR."""
    selectors = []
    for var in board["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        found = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
        assert found, f"variable {var['name']}: expected label_values(selector, label), got {query!r}"
        selectors.append(found[1])
    return selectors


# --- what the agent exports ----------------------------------------------------------------------------

PLAYBOOK = """\
- name: Local
  hosts: localhost
  checks:
    - name: Root disk
      disk: {path: /}
      interval: 1s
      notify: [console]
  collectors:
    - name: System
      system: {}
      interval: 1s
  slos:
    - name: Root disk healthy
      objective: 99
      window: 7d
      sli: {check: Root disk}
"""
INVENTORY = """\
all:
  vars:
    channels:
      console: {console: {}}
  hosts:
    localhost: {}
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The series names of a real agent's /metrics and of `ce-agent run --textfile-dir` with an SLO."""
    cwd = tmp_path_factory.mktemp("exported")
    (cwd / "site.yml").write_text(PLAYBOOK)
    (cwd / "inventory.yml").write_text(INVENTORY)
    agent = AgentProcess(cwd, ["site.yml", "-i", "inventory.yml", "--listen", "127.0.0.1:0"],
                         env={"PYTHONUNBUFFERED": "1"}).started()
    try:
        agent.wait_for(lambda: agent.metric("ce_check_status") is not None, 30, "a first check result")
        code, text, _ = agent.get("/metrics")
        assert code == 200
    finally:
        agent.stop()
    textfile_dir = cwd / "textfile"
    textfile_dir.mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "ce_agent", "run", "site.yml", "-i", "inventory.yml", "--textfile-dir", str(textfile_dir)],
        cwd=cwd, env={**os.environ, "CE_AGENT_STATE_DIR": str(cwd / "run-state"), "PYTHONPATH": ""},
        capture_output=True, text=True, timeout=120)
    textfile = textfile_dir / "ce-agent.prom"
    assert textfile.exists(), run.stderr
    names = sample_names(text) | sample_names(textfile.read_text())
    assert "ce_slo_error_budget_remaining" in names, "the SLO did not reach the textfile"
    return names


# --- the tests -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("expr, names", [
    pytest.param("up", ["up"], id="bare name"),
    pytest.param('rate(http_requests_total{job=~"$job", code!="500"}[$__rate_interval])', ["http_requests_total"],
                 id="function, matchers, template variable range"),
    pytest.param("histogram_quantile(0.95, sum by (le, host) (rate(x_seconds_bucket[5m])))", ["x_seconds_bucket"],
                 id="by list and histogram"),
    pytest.param("sum without (instance) (a) / ignoring (code) group_left (b_label) sum(c)", ["a", "c"],
                 id="without, ignoring, group_left"),
    pytest.param("a and on (job, instance) b_info offset 5m", ["a", "b_info"], id="on list and offset"),
    pytest.param("count(x == 0) or vector(0)", ["x"], id="count, or, vector"),
    pytest.param('max_over_time(a[1h30m:1m]) > bool 2e3', ["a"], id="subquery, bool, exponent"),
    pytest.param('{__name__="from_name", le="0.5"}', ["from_name"], id="__name__ matcher"),
    pytest.param('label_replace(a, "dst", "$1", "src", "(.*)") unless b @ start()', ["a", "b"],
                 id="strings with $1, unless, @ start()"),
    pytest.param("sum(rate(ns:requests:rate5m[${__range}]))", ["ns:requests:rate5m"], id="recording rule name"),
])
def test_the_tokenizer_finds_exactly_the_metric_names(expr: str, names: list[str]) -> None:
    assert metric_names(expr) == names


def test_every_metric_the_dashboard_queries_is_exported(exported: set[str]) -> None:
    board = dashboard()
    queried = {name: expr for expr in exprs(board) + variable_selectors(board) for name in metric_names(expr)}
    assert len(queried) >= 20, sorted(queried)
    unknown = {name: expr for name, expr in queried.items() if name not in exported}
    assert unknown == {}, f"queried but not exported (exported: {sorted(exported)})"


@pytest.mark.parametrize("name, exported_here", [
    pytest.param("ce_check_duration_seconds_bucket", True, id="a histogram's bucket"),
    pytest.param("ce_check_runs_total", True, id="a counter's _total"),
    pytest.param("ce_check_duration_seconds", False, id="a histogram's bare name is no series"),
    pytest.param("ce_check_runs", False, id="a counter without _total is no series"),
    pytest.param("ce_checks_status", False, id="a misspelling"),
])
def test_the_exported_set_is_series_names(exported: set[str], name: str, exported_here: bool) -> None:
    """The comparison can fail: names Prometheus would never store are not in the set."""
    assert (name in exported) is exported_here


@pytest.mark.parametrize("metric", [
    pytest.param(m, id=m) for m in (
        "ce_check_status", "ce_check_last_run_timestamp_seconds", "ce_check_duration_seconds_bucket",
        "ce_check_runs_total", "ce_check_timeouts_total", "ce_scheduler_lateness_seconds_bucket",
        "ce_scheduler_skipped_runs_total", "ce_outbox_depth", "ce_outbox_dropped_total", "ce_notifications_sent_total",
        "ce_notification_delivery_failures_total", "ce_config_last_reload_successful", "ce_plugin_load_errors",
        "process_resident_memory_bytes", "process_cpu_seconds_total", "ce_slo_sli_percent",
        "ce_slo_objective_percent", "ce_slo_error_budget_remaining", "ce_slo_burn_rate")
])
def test_the_dashboard_shows(metric: str) -> None:
    assert any(metric in metric_names(e) for e in exprs(dashboard()))


def test_the_dashboard_has_a_valid_shape() -> None:
    board = dashboard()
    assert board["uid"] == "ce-agent-overview" and len(board["uid"]) <= 40
    assert board["title"] and 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("host", "play"):
        assert variables[name]["type"] == "query" and "label_values(" in json.dumps(variables[name]["query"])
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    taken: set[tuple[int, int]] = set()
    for panel in panels(board):
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in "hwxy") and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & taken, f"{panel['title']!r} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == "${datasource}", panel["title"]


def grafana_to_promql(expr: str) -> str:
    """A dashboard query as Prometheus would receive it: Grafana's variables substituted."""
    for variable, value in (("__rate_interval", "1m"), ("__interval", "1m"), ("__range", "1h")):
        expr = re.sub(r"\$\{?" + variable + r"\}?", value, expr)
    # every other variable is a multi-value one, inside a =~ matcher: "All" is .*
    return re.sub(r"\$\{\w+\}|\$[a-zA-Z]\w*", ".*", expr)


@pytest.mark.parametrize("exprs_of, valid", [
    pytest.param(lambda board: exprs(board) + variable_selectors(board), True, id="the dashboard's queries"),
    pytest.param(lambda board: ["sum by (le (rate(x_bucket[5m]))"], False, id="a broken query is caught"),
    pytest.param(lambda board: ['rate(x_total{job=~"$job"})'], False, id="a missing range is caught"),
])
def test_promtool_parses_every_query(tmp_path: Path, exprs_of: Any, valid: bool) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    import yaml

    rules = [{"record": f"dashboard:query_{i}", "expr": grafana_to_promql(e)} for i, e in enumerate(exprs_of(dashboard()))]
    assert all("$" not in r["expr"] for r in rules), [r["expr"] for r in rules if "$" in r["expr"]]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert (checked.returncode == 0) is valid, textwrap.shorten(checked.stdout + checked.stderr, 2000)
