"""`ce-agent run` as cron runs it, again and again: each channel hears of a problem once, then once that it
is resolved, whatever happens in between (retries, routes, holds, a receiver that is down, a kill -9).

Every test drives the real command against real receivers on 127.0.0.1 and rewrites its playbook or
inventory between runs, exactly as an operator (or the world) would change them.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Agent, Ran
from tests.receivers import Webhook

CODE = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
SUMMARY = {"OK": "/ 41% used", "WARNING": "/ 85% used", "CRITICAL": "/ 95% used"}
FIRING = "[CRITICAL] Root disk on web1"
RESOLVED = "[RESOLVED] Root disk on web1"


def check(name: str, status: str, **keys: Any) -> dict[str, Any]:
    """A task of the `fixed` test plugin: its status is whatever the test says this run."""
    return {"name": name, "fixed": {"status": status, "summary": SUMMARY.get(status, status)}, **keys}


class Cron:
    """One machine's playbook and inventory, and `ce-agent run` called on them as cron would."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def inventory(self, channels: dict[str, Any], **alerting: Any) -> None:
        """`channels` and the alert settings (routes, inhibit, maintenance, delivery) on group `all`."""
        inventory = {"all": {"vars": {"channels": channels, **alerting}, "hosts": {"web1": {"address": "127.0.0.1"}}}}
        self.agent.write("inventory.yml", yaml.safe_dump(inventory, sort_keys=False))

    def playbook(self, *checks: dict[str, Any], **play: Any) -> None:
        self.agent.write("site.yml", yaml.safe_dump([{"name": "Web", "hosts": "web1", "checks": list(checks), **play}],
                                                    sort_keys=False))

    def run(self, *args: str, env: dict[str, str] | None = None) -> Ran:
        ran = self.agent("run", "site.yml", "-i", "inventory.yml", *args, env=env, timeout=30)
        assert "Traceback" not in ran.err, ran.err
        return ran

    def env(self) -> dict[str, str]:
        """The environment `agent(...)` gives the command, for a process the test starts (and kills) itself."""
        return {**os.environ, "CE_AGENT_STATE_DIR": str(self.agent.cwd / "state"),
                "PYTHONPATH": os.pathsep.join(str(p) for p in self.agent.pythonpath)}


@pytest.fixture
def cron(agent: Agent) -> Cron:
    return Cron(agent)


def titles(webhook: Webhook, path: str | None = None) -> list[str]:
    return [r.json()["title"] for r in webhook.requests if path is None or r.path == path]


def told(webhook: Webhook, since: int) -> list[str]:
    """The titles the receiver got after its first `since` requests."""
    return [r.json()["title"] for r in webhook.requests[since:]]


# ---- one alert, one channel ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "retries, statuses, expected",
    [
        pytest.param(1, ["CRITICAL", "CRITICAL", "OK", "OK"], [[FIRING], [], [RESOLVED], []],
                     id="fires once, stays quiet, resolves once, stays quiet"),
        pytest.param(1, ["WARNING", "CRITICAL", "CRITICAL", "OK"],
                     [["[WARNING] Root disk on web1"], [FIRING], [], [RESOLVED]],
                     id="a worse status is told again, once"),
        pytest.param(3, ["CRITICAL", "CRITICAL", "CRITICAL", "CRITICAL"], [[], [], [FIRING], []],
                     id="retries 3: fires on the third failure in a row"),
        pytest.param(3, ["CRITICAL", "CRITICAL", "OK", "CRITICAL", "CRITICAL", "CRITICAL"],
                     [[], [], [], [], [], [FIRING]], id="retries 3: a success in between starts the count over"),
        pytest.param(3, ["CRITICAL", "CRITICAL", "OK"], [[], [], []],
                     id="retries 3: a soft failure that recovers is never told"),
    ],
)
def test_each_run_tells_the_channel_only_what_changed(
    cron: Cron, webhook: Webhook, retries: int, statuses: list[str], expected: list[list[str]]
) -> None:
    cron.inventory({"hook": webhook.url()})
    for run, (status, titles_now) in enumerate(zip(statuses, expected), start=1):
        before = len(webhook.requests)
        cron.playbook(check("Root disk", status, notify=["hook"], retries=retries))
        ran = cron.run()
        assert ran.code == CODE[status], ran.err  # the checks' status, whatever was (or was not) told
        assert told(webhook, before) == titles_now, f"run {run}: {ran.out}"
    for request in webhook.requests:
        message = request.json()
        if message["title"] == RESOLVED:
            assert "Resolved after " in message["message"]
            assert message["type"] == "success"
        else:
            assert SUMMARY[message["title"][1:].split("]")[0]] in message["message"]


# ---- receivers that fail ---------------------------------------------------------------------------


def test_a_receiver_error_keeps_the_notification_until_it_is_accepted(cron: Cron, webhook: Webhook) -> None:
    cron.inventory({"hook": webhook.url()}, delivery={"attempts": 2, "retry_after": "0s"})
    cron.playbook(check("Root disk", "CRITICAL", notify=["hook"]))
    webhook.status = 500
    ran = cron.run()
    assert ran.code == 2
    assert titles(webhook) == [FIRING, FIRING]  # `attempts: 2` within the run, both refused
    assert f"warning: hook: {FIRING}: not delivered yet, will retry:" in ran.err

    webhook.status = 200
    ran = cron.run()
    assert ran.code == 2
    assert titles(webhook) == [FIRING] * 3  # the kept notification, once, not a second new one
    assert "warning" not in ran.err
    ran = cron.run()
    assert titles(webhook) == [FIRING] * 3


def test_a_refusal_is_dropped_not_retried(cron: Cron, webhook: Webhook) -> None:
    cron.inventory({"hook": webhook.url()}, delivery={"attempts": 3, "retry_after": "0s"})
    cron.playbook(check("Root disk", "CRITICAL", notify=["hook"]))
    webhook.status = 400
    ran = cron.run()
    assert ran.code == 2
    assert f"warning: hook: {FIRING}: dropped:" in ran.err
    assert titles(webhook) == [FIRING]  # no second attempt: the same message would be refused again
    webhook.status = 200
    cron.run()
    assert titles(webhook) == [FIRING]


@pytest.mark.parametrize(
    "statuses, expected",
    [
        pytest.param(["CRITICAL", "OK"], [FIRING, RESOLVED], id="a resolved never overtakes its firing"),
        pytest.param(["WARNING", "CRITICAL"], ["[WARNING] Root disk on web1", FIRING],
                     id="a worse status never overtakes the first one"),
    ],
)
def test_a_message_waiting_for_its_channel_is_never_overtaken(
    cron: Cron, webhook: Webhook, dead_port: int, statuses: list[str], expected: list[str]
) -> None:
    """Down on the first run (connection refused; the message backs off for 2 s), back for the second,
    whose new message must wait behind the first: the channel hears both once, in order, and is left
    knowing what is true."""
    delivery = {"attempts": 1, "retry_after": "2s"}
    cron.inventory({"hook": f"json://127.0.0.1:{dead_port}/alerts"}, delivery=delivery)
    cron.playbook(check("Root disk", statuses[0], notify=["hook"]))
    ran = cron.run()
    assert "not delivered yet, will retry" in ran.err
    cron.inventory({"hook": webhook.url()}, delivery=delivery)  # the receiver is back (at a new address)
    cron.playbook(check("Root disk", statuses[1], notify=["hook"]))
    cron.run()
    time.sleep(2.1)
    cron.run()
    assert titles(webhook) == expected
    cron.run()
    assert titles(webhook) == expected


def test_a_channel_down_through_fire_and_resolve_hears_both_once_back(
    cron: Cron, webhook: Webhook, dead_port: int
) -> None:
    delivery = {"attempts": 1, "retry_after": "0s"}
    cron.inventory({"hook": f"json://127.0.0.1:{dead_port}/alerts"}, delivery=delivery)
    for status in ("CRITICAL", "OK"):
        cron.playbook(check("Root disk", status, notify=["hook"]))
        ran = cron.run()
        assert ran.code == CODE[status]
        assert f"warning: hook: {FIRING}: not delivered yet, will retry" in ran.err
    cron.inventory({"hook": webhook.url()}, delivery=delivery)
    ran = cron.run()
    assert ran.code == 0 and ran.err == ""
    assert titles(webhook) == [FIRING, RESOLVED]
    cron.run()
    assert titles(webhook) == [FIRING, RESOLVED]


def test_a_fallback_channel_takes_over(cron: Cron, webhook: Webhook, dead_port: int) -> None:
    cron.inventory(
        {"pager": {"apprise": {"urls": [f"json://127.0.0.1:{dead_port}/page"]},
                   "fallback": "chat", "fallback_after": 1},
         "chat": webhook.url(path="/chat")},
        delivery={"attempts": 1},
    )
    cron.playbook(check("Root disk", "CRITICAL", notify=["pager"]))
    ran = cron.run()
    assert ran.code == 2
    assert f"pager        {FIRING}  -> sent through the fallback 'chat'" in ran.out
    assert titles(webhook, "/chat") == [FIRING]
    cron.playbook(check("Root disk", "OK", notify=["pager"]))
    cron.run()
    assert titles(webhook, "/chat") == [FIRING, RESOLVED]


# ---- holds: maintenance, inhibition, dependencies --------------------------------------------------

WINDOW = {"schedule": "* * * * *", "duration": "1h", "match": {"check": "Root disk"}}
INHIBIT = [{"source": {"check": "Uplink"}, "target": {"check": "Home page"}, "equal": ["host"]}]


@pytest.mark.parametrize(
    "runs, expected",
    [
        pytest.param([("CRITICAL", True), ("OK", True), ("OK", False)], [[], [], []],
                     id="fires and resolves inside a window: nothing at all, not even a resolved"),
        pytest.param([("CRITICAL", True), ("CRITICAL", False), ("OK", False)], [[], [FIRING], [RESOLVED]],
                     id="still firing when the window ends: told then"),
    ],
)
def test_a_maintenance_window_holds_notifications(
    cron: Cron, webhook: Webhook, runs: list[tuple[str, bool]], expected: list[list[str]]
) -> None:
    for (status, in_window), titles_now in zip(runs, expected):
        cron.inventory({"hook": webhook.url()}, maintenance=[WINDOW] if in_window else [])
        cron.playbook(check("Root disk", status, notify=["hook"]))
        before = len(webhook.requests)
        ran = cron.run("-v")
        assert ran.code == CODE[status]
        assert told(webhook, before) == titles_now
        if in_window and status != "OK":
            assert '-> hook: held: in maintenance (* * * * * for 1h)' in ran.out


@pytest.mark.parametrize(
    "alerting, keys",
    [
        pytest.param({"inhibit": INHIBIT}, {}, id="an inhibit rule"),
        pytest.param({}, {"depends_on": ["Uplink"]}, id="depends_on"),
    ],
)
def test_a_failing_parent_holds_its_child(cron: Cron, webhook: Webhook, alerting: dict, keys: dict) -> None:
    cron.inventory({"hook": webhook.url()}, **alerting)
    expected = [
        ("CRITICAL", "CRITICAL", ["[CRITICAL] Uplink on web1"]),
        ("CRITICAL", "CRITICAL", []),
        ("OK", "CRITICAL", ["[RESOLVED] Uplink on web1", "[CRITICAL] Home page on web1"]),
        ("OK", "OK", ["[RESOLVED] Home page on web1"]),
    ]
    for uplink, home, titles_now in expected:
        cron.playbook(check("Uplink", uplink, notify=["hook"]), check("Home page", home, notify=["hook"], **keys))
        before = len(webhook.requests)
        cron.run()
        assert told(webhook, before) == titles_now


def test_a_child_that_recovers_while_held_is_never_told(cron: Cron, webhook: Webhook) -> None:
    cron.inventory({"hook": webhook.url()})
    for uplink, home in (("CRITICAL", "CRITICAL"), ("CRITICAL", "OK"), ("OK", "OK")):
        cron.playbook(check("Uplink", uplink, notify=["hook"]),
                      check("Home page", home, notify=["hook"], depends_on=["Uplink"]))
        cron.run()
    assert titles(webhook) == ["[CRITICAL] Uplink on web1", "[RESOLVED] Uplink on web1"]


# ---- routes ----------------------------------------------------------------------------------------


def test_routes_by_severity_with_continue(cron: Cron, webhook: Webhook) -> None:
    """Critical to the pager, and (continue) everything to the chat; each hears its own resolved."""
    cron.inventory(
        {"pager": webhook.url(path="/pager"), "chat": webhook.url(path="/chat")},
        routes=[{"match": {"severity": "critical"}, "channels": ["pager"], "continue": True},
                {"channels": ["chat"]}],
    )
    cron.playbook(check("Root disk", "CRITICAL"), check("Load", "WARNING"))
    cron.run()
    assert titles(webhook, "/pager") == [FIRING]
    assert sorted(titles(webhook, "/chat")) == [FIRING, "[WARNING] Load on web1"]
    cron.playbook(check("Root disk", "OK"), check("Load", "OK"))
    cron.run()
    assert titles(webhook, "/pager") == [FIRING, RESOLVED]
    assert sorted(titles(webhook, "/chat")[2:]) == ["[RESOLVED] Load on web1", RESOLVED]


def test_a_channel_that_no_longer_routes_an_alert_still_hears_it_resolve(cron: Cron, webhook: Webhook) -> None:
    """CRITICAL (pager and chat), then WARNING (chat only), then OK: the pager was told it fires, so it
    must be told when it resolves, even though a warning no longer goes to the pager."""
    cron.inventory(
        {"pager": webhook.url(path="/pager"), "chat": webhook.url(path="/chat")},
        routes=[{"match": {"severity": "critical"}, "channels": ["pager"], "continue": True},
                {"channels": ["chat"]}],
    )
    for status in ("CRITICAL", "WARNING", "OK"):
        cron.playbook(check("Root disk", status))
        cron.run()
    assert titles(webhook, "/chat") == [FIRING, "[WARNING] Root disk on web1", RESOLVED]
    assert titles(webhook, "/pager") == [FIRING, RESOLVED]


def test_repeat_interval_sends_a_reminder(cron: Cron, webhook: Webhook) -> None:
    cron.inventory({"hook": webhook.url()}, routes=[{"channels": ["hook"], "repeat_interval": "1s"}])
    cron.playbook(check("Root disk", "CRITICAL"))
    cron.run()
    assert titles(webhook) == [FIRING]
    time.sleep(1.1)
    cron.run()
    assert titles(webhook) == [FIRING, f"{FIRING} (still firing)"]
    assert "Still firing, for " in webhook.requests[-1].json()["message"]


def test_send_resolved_false_tells_the_next_problem_anew(cron: Cron, webhook: Webhook) -> None:
    cron.inventory({"hook": webhook.url()}, routes=[{"channels": ["hook"], "send_resolved": False}])
    for status in ("CRITICAL", "OK", "OK", "CRITICAL"):
        cron.playbook(check("Root disk", status))
        cron.run()
    assert titles(webhook) == [FIRING, FIRING]


def test_group_by_host_sends_one_message_for_two_checks(cron: Cron, webhook: Webhook) -> None:
    cron.inventory({"hook": webhook.url()}, routes=[{"channels": ["hook"], "group_by": ["host"]}])
    cron.playbook(check("Root disk", "CRITICAL"), check("Load", "CRITICAL"))
    cron.run()
    (message,) = [r.json() for r in webhook.requests]
    assert message["title"] == "[FIRING:2] host=web1 severity=critical"
    assert "== CRITICAL Root disk on web1" in message["message"]
    assert "== CRITICAL Load on web1" in message["message"]
    cron.run()
    assert len(webhook.requests) == 1
    cron.playbook(check("Root disk", "OK"), check("Load", "OK"))
    cron.run()
    (_, resolved) = [r.json() for r in webhook.requests]
    assert resolved["title"] == "[RESOLVED:2] host=web1 severity=critical"
    assert "== RESOLVED Root disk on web1" in resolved["message"]
    assert "== RESOLVED Load on web1" in resolved["message"]


# ---- alert rules on metrics ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, expr, annotation, expected",
    [
        pytest.param("check", "fixed_value > 90", "value is {{ value }}", "value is 95", id="a check's metric"),
        pytest.param("collector", 'constant_value{source="test"} > 90',
                     "{{ labels.source }} value is {{ value }}", "test value is 95", id="a collector's sample"),
    ],
)
def test_an_alert_rule_fires_and_resolves(
    cron: Cron, webhook: Webhook, source: str, expr: str, annotation: str, expected: str
) -> None:
    cron.inventory({"hook": webhook.url()})
    rule = {"name": "HighValue", "expr": expr, "severity": "critical", "notify": ["hook"],
            "annotations": {"summary": annotation}}
    for value, titles_now in ((95, ["[CRITICAL] HighValue on web1"]), (95, []),
                              (50, ["[RESOLVED] HighValue on web1"]), (50, [])):
        if source == "check":
            task = {"name": "Probe", "fixed": {"status": "OK", "value": value}}
            cron.playbook(task, alerts=[rule])
        else:
            cron.playbook(check("Root disk", "OK"), collectors=[{"constant": {"value": value}}], alerts=[rule])
        before = len(webhook.requests)
        ran = cron.run()
        assert ran.code == 0, ran.err  # a rule alerts; the checks' status is the exit code
        assert told(webhook, before) == titles_now
    firing = webhook.requests[0].json()["message"]
    assert f"Summary: {expected}" in firing.splitlines()
    assert expected in firing.splitlines()[0]  # the summary annotation leads the message


def test_for_is_measured_across_runs(cron: Cron, webhook: Webhook) -> None:
    """`for: 1s`: pending on the first run, firing on a run at least a second later (the state store)."""
    cron.inventory({"hook": webhook.url()})
    rule = {"name": "HighValue", "expr": "fixed_value > 90", "for": "1s", "notify": ["hook"]}
    cron.playbook({"name": "Probe", "fixed": {"status": "OK", "value": 95}}, alerts=[rule])
    cron.run()
    assert titles(webhook) == []
    time.sleep(1.1)
    cron.run()
    assert titles(webhook) == ["[WARNING] HighValue on web1"]  # a rule's severity defaults to warning


# ---- --check ---------------------------------------------------------------------------------------


def _dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return list(db.iterdump())


def test_check_mode_shows_the_routing_and_changes_nothing(cron: Cron, webhook: Webhook) -> None:
    state = cron.agent.cwd / "state" / "state.db"
    cron.inventory({"hook": webhook.url()})
    cron.playbook(check("Root disk", "CRITICAL", notify=["hook"]))
    scratch = cron.agent.cwd / "tmp"
    scratch.mkdir()
    ran = cron.run("--check", env={"TMPDIR": str(scratch)})
    assert ran.code == 2
    assert "ROUTING  (--check: what each channel would be told)" in ran.out
    assert 'check{check="Root disk",host="web1",play="Web"}  -> hook: firing' in ran.out
    assert f"{FIRING}  -> would send" in ran.out
    assert webhook.requests == [] and not state.exists()
    assert list(scratch.iterdir()) == []  # not even a scratch database left behind

    cron.run()
    assert titles(webhook) == [FIRING]  # what --check rendered is still news to the channel

    cron.playbook(check("Root disk", "OK", notify=["hook"]))
    before = _dump(state)
    ran = cron.run("--check")
    assert "-> hook: resolved" in ran.out
    assert _dump(state) == before
    cron.run()
    assert titles(webhook) == [FIRING, RESOLVED]


# ---- crashes and damage ----------------------------------------------------------------------------


def test_kill_9_at_any_moment_loses_nothing_and_repeats_little(cron: Cron, webhook: Webhook) -> None:
    """Runs killed with SIGKILL at random moments, ten times (five while the receiver refuses, five
    while it accepts): the next run works, and the channel accepted the firing at least once (the
    outbox kept it) and at most twice (at-least-once: a kill between its answer and the bookkeeping)."""
    cron.inventory({"hook": webhook.url()}, delivery={"attempts": 1, "retry_after": "0s"})
    cron.playbook(check("Root disk", "CRITICAL", notify=["hook"]), {"name": "Slow", "hangs": {"seconds": 0.3}})
    rng = random.Random(20240611)
    webhook.status = 500
    accepted_from = 0
    for attempt in range(10):
        if attempt == 5:
            webhook.status, accepted_from = 200, len(webhook.requests)
        proc = subprocess.Popen(
            [sys.executable, "-m", "ce_agent", "run", "site.yml", "-i", "inventory.yml"],
            cwd=cron.agent.cwd, env=cron.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(rng.uniform(0.0, 0.9))  # a whole run takes about 0.75 s here
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it had finished
        proc.wait(timeout=10)
    ran = cron.run()
    assert ran.code == 2 and ran.err == "", ran.err
    accepted = told(webhook, accepted_from)
    assert set(accepted) == {FIRING} and 1 <= len(accepted) <= 2, accepted
    cron.run()
    assert told(webhook, accepted_from) == accepted
    with sqlite3.connect(cron.agent.cwd / "state" / "state.db") as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)


@pytest.mark.parametrize("status, expected", [pytest.param("CRITICAL", [FIRING], id="critical"),
                                              pytest.param("OK", [], id="ok")])
def test_a_corrupt_state_database_is_moved_aside(
    cron: Cron, webhook: Webhook, status: str, expected: list[str]
) -> None:
    state = cron.agent.cwd / "state"
    state.mkdir()
    (state / "state.db").write_bytes(b"this is not a database, it is what a full disk left behind\n" * 200)
    cron.inventory({"hook": webhook.url()})
    cron.playbook(check("Root disk", status, notify=["hook"]))
    ran = cron.run()
    assert ran.code == CODE[status]
    (line,) = ran.err.splitlines()
    assert line.startswith(f"{state / 'state.db'} was damaged (")
    assert "moved it to state.db.corrupt-" in line and line.endswith("started a fresh state database")
    assert len(list(state.glob("state.db.corrupt-*"))) == 1
    assert titles(webhook) == expected
    ran = cron.run()
    assert ran.err == "" and titles(webhook) == expected
