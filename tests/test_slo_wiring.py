"""SLOs end to end: `slos:` in a play, evaluated by `ce-agent run` from the real history, alerts, `slo status`."""

from __future__ import annotations

import json
import time

import pytest

from ce_agent.store import ResultRow, Store
from tests.conftest import Agent

PLAYBOOK = """\
- name: Shop
  hosts: localhost
  checks:
    - name: api
      fixed: {status: OK}
  slos:
    - name: api-availability
      objective: 99
      window: 30d
      sli: {check: api}
"""


def _history(agent: Agent, statuses_newest_first: list[int], every: float = 600.0) -> float:
    """Results of `api` every 10 minutes back from now (the first one 10 minutes ago)."""
    now = time.time()
    store, _ = Store.open(agent.cwd / "state" / "state.db", now)
    with store:
        store.add_results([ResultRow(now - every * (i + 1), "Shop", "localhost", "api", "fixed", status, "", 0.01, [])
                           for i, status in enumerate(statuses_newest_first)])
    return now


def test_run_evaluates_an_slo_from_the_history_and_slo_status_shows_it(agent: Agent) -> None:
    agent.write("site.yml", PLAYBOOK)
    agent.write("inventory.yml", "all:\n  hosts:\n    localhost: {}\n")
    # 1,440 results over 10 days, the two newest (10 and 20 minutes ago) CRITICAL; the run adds an OK
    _history(agent, [2, 2] + [0] * 1438)
    assert agent("run", "site.yml", "-i", "inventory.yml").code == 0
    ran = agent("slo", "status", "--format", "json")
    assert ran.code == 0, ran.err
    (slo,) = json.loads(ran.out)["slos"]
    assert (slo["name"], slo["objective"], slo["window"], slo["host"]) == ("api-availability", 99, "30d", "localhost")
    # 1,441 results, 2 bad: SLI 1439/1441 = 99.8612 %; budget 1 %: 2/1441 = 0.1388 % spent of it -> 86.12 % left
    assert slo["sli"] == pytest.approx(99.8612, abs=1e-4)
    assert slo["error_budget_remaining"] == pytest.approx(1 - (2 / 1441) / 0.01, abs=1e-3)
    rates = slo["burn_rates"]
    # burn rate = error ratio in the window / 1 %: 5m holds only the run's OK; 30m: 2 of 3; 1h: 2 of 6;
    # 6h: 2 of 36; 3d: 2 of 432
    assert rates["5m"] == 0
    assert rates["30m"] == pytest.approx(200 / 3, abs=1e-2)
    assert rates["1h"] == pytest.approx(100 / 3, abs=1e-2)
    assert rates["6h"] == pytest.approx(200 / 36, abs=1e-2)
    assert rates["3d"] == pytest.approx(200 / 432, abs=1e-2)
    assert slo["status"] == "ok"  # no pair of windows both burns: 5m is clean, 6h is under 6, 3d under 1
    assert "api-availability" in agent("slo", "status").out
    # the next run shows them too: a section of the text, a list in the JSON (the same entries)
    text = agent("run", "site.yml", "-i", "inventory.yml").out
    assert "SLOS\n    ok        api-availability  99.86" in text and "of 99% over 30d" in text
    (in_run,) = json.loads(agent("run", "site.yml", "-i", "inventory.yml", "--format", "json").out)["slos"]
    assert set(in_run) == set(slo) and (in_run["name"], in_run["play"], in_run["host"]) == (
        "api-availability", "Shop", "localhost")
    assert "SLOBurnRate" not in agent("alerts", "list").out


def test_a_fast_burn_pages_through_the_alert_pipeline(agent: Agent) -> None:
    agent.write("site.yml", PLAYBOOK.replace("fixed: {status: OK}", "fixed: {status: CRITICAL}"))
    agent.write("inventory.yml", "all:\n  hosts:\n    localhost: {}\n")
    # every minute for the last 2 hours: the last 30 minutes all failing
    _history(agent, [2] * 29 + [0] * 91, every=60.0)
    assert agent("run", "site.yml", "-i", "inventory.yml").code == 2
    (slo,) = json.loads(agent("slo", "status", "--format", "json").out)["slos"]
    # 5m: 4 older + the run's = 5 of 5 bad -> 100x; 1h: 30 of 60 -> 50x; both over 14.4: page
    assert slo["burn_rates"]["5m"] == pytest.approx(100.0)
    assert slo["burn_rates"]["1h"] == pytest.approx(50.0)
    assert slo["status"] == "breached"  # 30 of 121 bad over the whole window: far past the 1 % budget
    alerts = json.loads(agent("alerts", "list", "--format", "json").out)["alerts"]
    burn = [a for a in alerts if a["labels"].get("alertname") == "SLOBurnRate"]
    assert [(a["state"], a["labels"]["severity"], a["labels"]["long_window"]) for a in burn] == [("firing", "critical", "1h")]


def test_an_invalid_slo_is_a_located_error(agent: Agent) -> None:
    agent.write("site.yml", PLAYBOOK.replace("objective: 99", "objective: 100"))
    ran = agent("validate", "site.yml")
    assert ran.code == 2
    assert "site.yml:8:18: slos[0].objective: must be a percentage between 0 and 100 (exclusive), got 100" in ran.err


def test_an_slo_window_longer_than_the_history_is_a_warning(agent: Agent) -> None:
    agent.write("site.yml", PLAYBOOK.replace("window: 30d", "window: 60d"))
    ran = agent("validate", "site.yml")
    assert ran.code == 0
    assert "site.yml:9:15: warning: slos[0].window: 60d is longer than the 30 days of history kept" in ran.err


def test_slos_are_exported_as_metrics(agent: Agent) -> None:
    import shutil
    import subprocess

    from prometheus_client.parser import text_string_to_metric_families

    agent.write("site.yml", PLAYBOOK)
    agent.write("inventory.yml", "all:\n  hosts:\n    localhost: {}\n")
    _history(agent, [2, 2] + [0] * 1438)
    out = agent.cwd / "textfiles"
    out.mkdir()
    assert agent("run", "site.yml", "-i", "inventory.yml", "--textfile-dir", str(out)).code == 0
    for text in ((out / "ce-agent.prom").read_text(), agent("metrics").out):
        families = {f.name: f for f in text_string_to_metric_families(text)}
        (sli,) = families["ce_slo_sli_percent"].samples
        assert sli.labels == {"slo": "api-availability", "host": "localhost", "play": "Shop"}
        assert sli.value == pytest.approx(99.8612, abs=1e-4)
        burns = {s.labels["window"]: s.value for s in families["ce_slo_burn_rate"].samples}
        assert burns["1h"] == pytest.approx(100 / 3, abs=1e-2) and set(burns) == {"5m", "30m", "1h", "6h", "3d", "30d"}
        assert families["ce_slo_error_budget_remaining"].samples[0].value == pytest.approx(1 - (2 / 1441) / 0.01, abs=1e-3)
        promtool = shutil.which("promtool")
        if promtool:
            checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
            assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(agent("metrics", "--format", "json").out)["slos"][0]["name"] == "api-availability"
