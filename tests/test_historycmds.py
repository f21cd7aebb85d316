"""`report`, `stats` and `baseline` on a real state database written by real runs and by a fake-clock history."""

from __future__ import annotations

import json
import time
from html.parser import HTMLParser

import pytest

from ce_agent.store import ResultRow, Store
from tests.conftest import Agent

PLAYBOOK = """\
- name: Shop
  hosts: localhost
  tags: [shop]
  checks:
    - name: api
      fixed: {status: OK, value: 1.5}
      tags: [web]
    - name: queue
      fixed: {status: WARNING, summary: "queue <b>long</b>"}
"""


def _history(agent: Agent, rows: list[tuple[float, str, int, float]]) -> float:
    """Results (seconds ago, check, status, duration) written straight into the state database."""
    now = time.time()
    store, _ = Store.open(agent.cwd / "state" / "state.db", now)
    with store:
        store.add_results([ResultRow(now - ago, "Shop", "localhost", check, "fixed", status, "", duration,
                                     [{"name": "fixed_value", "value": duration * 10, "unit": "", "labels": {}}])
                           for ago, check, status, duration in rows])
    return now


@pytest.fixture
def shop(agent: Agent) -> Agent:
    agent.write("site.yml", PLAYBOOK)
    agent.write("inventory.yml", "all:\n  hosts:\n    localhost: {}\n")
    return agent


@pytest.mark.parametrize("playbook, code, overall", [
    pytest.param(PLAYBOOK.replace("status: WARNING", "status: OK"), 0, "HEALTHY", id="all OK"),
    pytest.param(PLAYBOOK, 1, "DEGRADED", id="a warning"),
    pytest.param(PLAYBOOK.replace("status: WARNING", "status: CRITICAL"), 2, "UNHEALTHY", id="critical firing"),
])
def test_report_exit_code_says_the_overall_health(shop: Agent, playbook: str, code: int, overall: str) -> None:
    shop.write("site.yml", playbook)
    shop("run", "site.yml", "-i", "inventory.yml")
    ran = shop("report", "--format", "json", "-p", "site.yml")
    assert (ran.code, json.loads(ran.out)["overall"]) == (code, overall), ran.err


def test_report_counts_pass_rates_by_play_and_tag_and_writes_self_contained_html(shop: Agent) -> None:
    # api: 8 OK and 2 CRITICAL over the last days; then one real run of each check
    _history(shop, [(3600.0 * i, "api", 2 if i in (3, 4) else 0, 0.1 * i) for i in range(1, 11)])
    shop("run", "site.yml", "-i", "inventory.yml")
    report = json.loads(shop("report", "--format", "json", "-p", "site.yml").out)
    api = next(c for c in report["checks"] if c["check"] == "api")
    assert (api["runs"], api["pass"], api["fail"], api["pass_rate"]) == (11, 9, 2, 81.82)
    assert {g["tag"] for g in report["groups"]} >= {"web", "shop"}
    out = shop.cwd / "report.html"
    ran = shop("report", "--format", "html", "-o", str(out))
    assert ran.code == 1 and out.exists()
    html = out.read_text()
    HTMLParser().feed(html)
    assert "<svg" in html and "http://" not in html and "https://" not in html
    assert "<b>long</b>" not in html and "&lt;b&gt;long&lt;/b&gt;" in html


def test_stats_count_runs_failures_and_deliveries(shop: Agent) -> None:
    shop("run", "site.yml", "-i", "inventory.yml")
    shop("run", "site.yml", "-i", "inventory.yml")
    data = json.loads(shop("stats", "--format", "json").out)
    runs = {c["check"]: (c["runs"], c["failures"]) for c in data["checks"]}
    assert runs == {"api": (2, 0), "queue": (2, 2)}
    assert sum(sum(row) for row in data["heatmap"]["counts"]) == 2
    csv = shop("stats", "--format", "csv").out
    assert csv.splitlines()[0].startswith("section,")
    assert "api" in shop("stats").out


def test_baseline_save_and_compare_finds_a_slower_check(shop: Agent) -> None:
    # a week ago api took 0.1 s; in the last day 0.5 s
    _history(shop, [(86400.0 * 3 + 60 * i, "api", 0, 0.1) for i in range(20)])
    saved = shop("baseline", "save", "--name", "weekly", "--since", "7d")
    assert saved.code == 0 and "saved baseline 'weekly'" in saved.out, saved.err
    _history(shop, [(60.0 * i, "api", 0, 0.5) for i in range(1, 21)])
    ran = shop("baseline", "compare", "--name", "weekly", "--format", "json")
    assert ran.code == 0, ran.err
    rows = json.loads(ran.out)["rows"]
    duration = next(r for r in rows if r["check"] == "api" and r["series"] == "duration")
    assert duration["verdict"] == "regressed" and duration["p95_change_pct"] == pytest.approx(400.0)
    assert "regressed" in shop("baseline", "compare", "--name", "weekly").out


def test_a_baseline_of_nothing_is_refused_and_creates_no_state(agent: Agent) -> None:
    ran = agent("baseline", "save", "--since", "7d")
    assert ran.code == 2 and ran.out == ""
    assert ran.err.splitlines()[-1].startswith("error: no results since 7d in ") and "Traceback" not in ran.err
    assert not (agent.cwd / "state").exists()


@pytest.mark.parametrize("args, message", [
    pytest.param(["report", "--format", "pdf"], "--format must be one of markdown, json, html", id="report-format"),
    pytest.param(["stats", "--since", "soon"], "--since 'soon'", id="stats-since"),
    pytest.param(["baseline", "compare", "--name", "nope"], "no baseline named 'nope'", id="unknown-baseline"),
    pytest.param(["baseline", "save", "--name", "../x"], "--name", id="baseline-name"),
    pytest.param(["report", "--since", "0s"], "the period must be longer than 0", id="report-empty-period"),
    pytest.param(["report", "--since", "7"], "--since '7': give a unit, such as 7d, 7h or 7m", id="since-without-unit"),
    pytest.param(["stats", "--since", "1000000d"], "--since '1000000d': at most 36500d", id="since-too-long"),
    pytest.param(["report", "-p", "nope.yml"], "--playbook: nope.yml: no such playbook", id="report-missing-playbook"),
    pytest.param(["baseline", "compare", "--threshold", "-5"], "--threshold must be a percentage above 0",
                 id="negative-threshold"),
])
def test_bad_input_is_one_line_and_exit_2(shop: Agent, args: list[str], message: str) -> None:
    shop("run", "site.yml", "-i", "inventory.yml")
    ran = shop(*args)
    assert ran.code == 2 and message in ran.err and "Traceback" not in ran.err, ran.err


def test_a_regression_rule_alerts_when_the_recent_p95_exceeds_the_baseline(shop: Agent) -> None:
    shop.write("site.yml", PLAYBOOK.replace("      tags: [web]\n", "      tags: [web]\n"
                                             "      regression: {duration: true, threshold: 20%, window: 1h}\n"))
    # the baseline: api took 0.1 s three days ago; in the last hour 0.5 s
    _history(shop, [(86400.0 * 3 + 60 * i, "api", 0, 0.1) for i in range(20)])
    assert shop("baseline", "save", "--since", "7d").code == 0
    _history(shop, [(60.0 * i, "api", 0, 0.5) for i in range(1, 21)])
    assert shop("run", "site.yml", "-i", "inventory.yml").code == 1
    alerts = json.loads(shop("alerts", "list", "--format", "json").out)["alerts"]
    regression = [a for a in alerts if a["labels"].get("alertname") == "Regression"]
    assert [(a["labels"]["check"], a["state"], a["status"]) for a in regression] == [("api", "firing", "WARNING")]


def test_a_bad_regression_rule_is_a_located_error(shop: Agent) -> None:
    shop.write("site.yml", PLAYBOOK.replace("      tags: [web]\n", "      tags: [web]\n      regression: {speed: 2}\n"))
    ran = shop("validate", "site.yml")
    assert ran.code == 2 and "site.yml:8:19: regression: unknown key 'speed'" in ran.err, ran.err


def test_baseline_compare_over_a_longer_period_sees_the_trend(shop: Agent) -> None:
    _history(shop, [(86400.0 * 10 + 60 * i, "api", 0, 0.1) for i in range(20)])
    assert shop("baseline", "save", "--since", "14d").code == 0
    _history(shop, [(86400.0 * 3 + 60 * i, "api", 0, 0.3) for i in range(20)])  # slower 3 days ago, not today

    def verdict(*args: str) -> str:
        rows = json.loads(shop("baseline", "compare", "--format", "json", *args).out)["rows"]
        return next(r["verdict"] for r in rows if r["check"] == "api" and r["series"] == "duration")
    assert verdict() == "no_data"  # nothing in the last day
    assert verdict("--since", "7d") == "regressed"


def test_the_html_report_renders_in_a_real_browser(shop: Agent) -> None:
    import os
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CE_AGENT_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is missing and CE_AGENT_REQUIRE_BROWSER=1")
        pytest.skip("chromium is missing (Debian package chromium)")
    _history(shop, [(3600.0 * i, "api", 2 if i == 3 else 0, 0.1 * i) for i in range(1, 30)])
    shop("run", "site.yml", "-i", "inventory.yml")
    page = shop.cwd / "report.html"
    assert shop("report", "--format", "html", "-o", str(page)).code == 1
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={shop.cwd / 'browser'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # what the browser built: the verdict, both charts as SVG, the tables, the hostile text as text
    assert "DEGRADED" in dom.stdout and dom.stdout.count("<svg") == 2 and "<table>" in dom.stdout
    assert "&lt;b&gt;long&lt;/b&gt;" in dom.stdout
    shot = shop.cwd / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000



def test_report_without_state_is_unknown_and_a_damaged_one_is_left_alone(shop: Agent) -> None:
    ran = shop("report", "--state-dir", str(shop.cwd / "nowhere"))
    assert (ran.code, ran.out) == (3, "") and "no state in" in ran.err
    damaged = shop.cwd / "damaged"
    damaged.mkdir()
    (damaged / "state.db").write_bytes(b"not a database at all" * 100)
    for command in (["report"], ["slo", "status"], ["alerts", "list"], ["stats"], ["metrics"]):
        ran = shop(*command, "--state-dir", str(damaged))
        assert ran.code == 2 and "is damaged" in ran.err and "Traceback" not in ran.err, (command, ran.err)
    assert sorted(p.name for p in damaged.iterdir()) == ["state.db"]  # nothing moved aside by a reader
