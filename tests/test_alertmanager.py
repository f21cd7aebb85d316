"""The `alertmanager` notifier end to end: `ce-agent run`, as cron runs it, against a real Alertmanager
(Debian's prometheus-alertmanager) on 127.0.0.1, whose own webhook receiver shows what it notifies.

Each test starts its Alertmanagers (one, a gossip cluster of two, one behind basic auth) on free
ports and kills them at teardown; every wait has a deadline.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Agent, Ran
from tests.receivers import Webhook

SUMMARY = {"OK": "/ 41% used", "WARNING": "/ 85% used", "CRITICAL": "/ 95% used"}
PASSWORD = "Am-Canary-Pa55word-7q"
#: Alertmanager's own grouping, short so that its notifications come within a test's patience
AM_ROUTE = {"receiver": "hook", "group_by": ["alertname", "host"], "group_wait": "1s", "group_interval": "1s",
            "repeat_interval": "1h"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 20.0, every: float = 0.2) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def when(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Alertmanager:
    """One real Alertmanager process on 127.0.0.1."""

    binary: Path
    workdir: Path
    hook: str  # its webhook receiver's URL
    port: int = field(default_factory=free_port)
    cluster_port: int | None = None
    peers: list[int] = field(default_factory=list)
    web_config: str | None = None  # --web.config.file contents (basic auth)
    auth: tuple[str, str] | None = None  # what the test itself uses to read the API
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Alertmanager:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {"route": AM_ROUTE,
                  "receivers": [{"name": "hook", "webhook_configs": [{"url": self.hook, "send_resolved": True}]}]}
        (self.workdir / "am.yml").write_text(yaml.safe_dump(config))
        args = [str(self.binary), f"--config.file={self.workdir / 'am.yml'}",
                f"--storage.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn"]
        if self.cluster_port is None:
            args.append("--cluster.listen-address=")  # no gossip
        else:
            args += [f"--cluster.listen-address=127.0.0.1:{self.cluster_port}", "--cluster.settle-timeout=2s",
                     "--cluster.peer-timeout=2s", *(f"--cluster.peer=127.0.0.1:{p}" for p in self.peers)]
        if self.web_config is not None:
            (self.workdir / "web.yml").write_text(self.web_config)
            args.append(f"--web.config.file={self.workdir / 'web.yml'}")
        log = open(self.workdir / "am.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        wait_for(f"Alertmanager on port {self.port} to be ready", self._ready, timeout=30)
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"Alertmanager exited: {(self.workdir / 'am.log').read_text()[-2000:]}")
        try:
            return self._get("/-/ready").status == 200
        except (OSError, urllib.error.URLError):
            return False

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(self.url + path)
        if self.auth is not None:
            import base64

            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        return urllib.request.urlopen(request, timeout=5)

    def alerts(self) -> list[dict[str, Any]]:
        """GET /api/v2/alerts: the alerts it holds as active (or silenced, inhibited), not resolved ones."""
        with self._get("/api/v2/alerts") as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def alertmanagers(alertmanager_binary: Path, tmp_path: Path, webhook: Webhook) -> Iterator[Callable[..., Alertmanager]]:
    """A factory of Alertmanagers (not started) whose webhook is the `webhook` fixture; all killed at teardown."""
    made: list[Alertmanager] = []

    def make(**kwargs: Any) -> Alertmanager:
        am = Alertmanager(alertmanager_binary, tmp_path / f"am{len(made)}", webhook.url("http", "/am"), **kwargs)
        made.append(am)
        return am

    try:
        yield make
    finally:
        for am in made:
            am.stop()


class Cron:
    """One machine's playbook and inventory, and `ce-agent run` called on them as cron would."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def inventory(self, channel: dict[str, Any], **extra: Any) -> None:
        # retry_after 1s: a run a few seconds later retries what a down Alertmanager left in the outbox
        variables = {"channels": {"am": {"alertmanager": channel}}, "delivery": {"retry_after": "1s"}, **extra}
        inventory = {"all": {"vars": variables, "hosts": {"web1": {"address": "127.0.0.1"}}}}
        self.agent.write("inventory.yml", yaml.safe_dump(inventory, sort_keys=False))

    def check(self, status: str) -> None:
        task = {"name": "Root disk", "fixed": {"status": status, "summary": SUMMARY[status]}, "notify": ["am"]}
        self.agent.write("site.yml", yaml.safe_dump([{"name": "Web", "hosts": "web1", "checks": [task]}], sort_keys=False))

    def run(self) -> Ran:
        ran = self.agent("run", "site.yml", "-i", "inventory.yml", "--format", "json", timeout=60)
        assert "Traceback" not in ran.err, ran.err
        return ran

    def outbox(self) -> int:
        with sqlite3.connect(self.agent.cwd / "state" / "state.db") as db:
            return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


@pytest.fixture
def cron(agent: Agent) -> Cron:
    return Cron(agent)


def am_notified(webhook: Webhook, status: str) -> list[dict[str, Any]]:
    """The alerts of Alertmanager's own webhook notifications that said `status` (firing, resolved)."""
    return [alert for r in webhook.requests if r.path == "/am" for alert in r.json()["alerts"]
            if alert["status"] == status]


# ---- the life of an alert --------------------------------------------------------------------------


def test_fires_stays_active_with_resends_and_resolves(cron: Cron, alertmanagers: Callable[..., Alertmanager],
                                                      webhook: Webhook) -> None:
    am = alertmanagers().start()
    cron.inventory({"url": am.url, "resend_interval": "1s", "ttl": "2m", "labels": {"source": "ce-agent"},
                    "generator_url": "http://status.example/{host}/{check}"})
    cron.check("CRITICAL")
    before = time.time()
    ran = cron.run()
    assert [(n["channel"], n["sent"]) for n in ran.json()["notifications"]] == [("am", True)]

    (alert,) = am.alerts()
    assert alert["labels"] == {"alertname": "Root disk", "check": "Root disk", "host": "web1", "play": "Web",
                               "severity": "critical", "source": "ce-agent"}
    assert alert["annotations"]["summary"] == "/ 95% used"
    assert alert["annotations"]["description"] == "Root disk on web1 is CRITICAL: / 95% used"
    assert alert["generatorURL"] == "http://status.example/web1/Root%20disk"
    assert alert["status"]["state"] == "active"
    starts, ends = when(alert["startsAt"]), when(alert["endsAt"])
    assert before - 1 <= starts <= time.time()
    assert 110 <= ends - starts <= 130  # ttl
    # Alertmanager groups it and notifies its receiver after its own group_wait
    (told,) = wait_for("Alertmanager's firing notification", lambda: am_notified(webhook, "firing"))
    assert told["labels"]["alertname"] == "Root disk"

    time.sleep(1.2)  # past resend_interval: the next run re-sends it
    ran = cron.run()
    assert [(n["channel"], n["sent"]) for n in ran.json()["notifications"]] == [("am", True)]
    (again,) = am.alerts()
    assert again["fingerprint"] == alert["fingerprint"]
    assert when(again["startsAt"]) == starts  # the same alert, not a new one
    assert when(again["endsAt"]) > ends
    time.sleep(1.5)  # Alertmanager's group_interval: a re-send is no news, nothing more is notified
    assert len(am_notified(webhook, "firing")) == 1
    text = cron.agent("run", "site.yml", "-i", "inventory.yml").out  # and `run` says what it was
    assert "[CRITICAL] Root disk on web1  (re-send)  -> sent" in text, text

    cron.check("OK")
    resolved_at = time.time()
    ran = cron.run()
    assert [(n["channel"], n["sent"]) for n in ran.json()["notifications"]] == [("am", True)]
    assert am.alerts() == []  # ended: Alertmanager lists only alerts still active
    (gone,) = wait_for("Alertmanager's resolved notification", lambda: am_notified(webhook, "resolved"))
    assert when(gone["startsAt"]) == when(alert["startsAt"])
    assert when(alert["startsAt"]) <= when(gone["endsAt"]) <= resolved_at + 30
    assert cron.outbox() == 0

    cron.run()  # nothing more to say
    assert am.alerts() == []


def test_a_run_within_resend_interval_sends_nothing(cron: Cron, alertmanagers: Callable[..., Alertmanager]) -> None:
    am = alertmanagers().start()
    cron.inventory({"url": am.url})  # resend_interval 1m
    cron.check("WARNING")
    assert len(cron.run().json()["notifications"]) == 1
    assert cron.run().json()["notifications"] == []
    (alert,) = am.alerts()
    assert alert["labels"]["severity"] == "warning"


def test_a_change_of_severity_ends_the_alert_under_its_old_labels(cron: Cron,
                                                                   alertmanagers: Callable[..., Alertmanager]) -> None:
    am = alertmanagers().start()
    cron.inventory({"url": am.url})
    cron.check("WARNING")
    cron.run()
    (warning,) = am.alerts()
    cron.check("CRITICAL")
    cron.run()
    (critical,) = am.alerts()  # the warning one ended: only one alert for one problem
    assert critical["labels"]["severity"] == "critical"
    assert when(critical["startsAt"]) == when(warning["startsAt"])


# ---- Alertmanager unreachable ----------------------------------------------------------------------


def test_a_down_alertmanager_gets_the_alert_when_it_is_back(cron: Cron,
                                                             alertmanagers: Callable[..., Alertmanager]) -> None:
    am = alertmanagers()  # its port chosen, nothing listening yet
    cron.inventory({"url": am.url, "timeout": "2s"})
    cron.check("CRITICAL")
    ran = cron.run()
    (note,) = ran.json()["notifications"]
    assert not note["sent"] and "cannot connect" in note["error"], note
    assert cron.outbox() == 1
    time.sleep(1.2)
    cron.run()  # still down: the waiting message is tried again, and no re-send piles up behind it
    assert cron.outbox() == 1

    am.start()
    time.sleep(2.2)  # the outbox's retry_after, doubled by the second run's failure
    ran = cron.run()
    assert [n["sent"] for n in ran.json()["notifications"]] == [True]
    (alert,) = am.alerts()
    assert alert["labels"]["alertname"] == "Root disk"
    assert cron.outbox() == 0


def test_an_ha_cluster_with_one_member_down_still_gets_the_alert(cron: Cron, alertmanagers: Callable[..., Alertmanager],
                                                                  webhook: Webhook) -> None:
    one_port, two_port = free_port(), free_port()
    one = alertmanagers(cluster_port=one_port, peers=[two_port]).start()
    two = alertmanagers(cluster_port=two_port, peers=[one_port]).start()
    wait_for("the two members to see each other", lambda: len(json.loads(one._get("/api/v2/status").read())
                                                                   ["cluster"]["peers"]) == 2)
    cron.inventory({"url": [two.url, one.url], "timeout": "2s"})
    cron.check("CRITICAL")
    cron.run()
    assert len(one.alerts()) == 1 and len(two.alerts()) == 1  # every member is told (they gossip no alerts)

    two.stop()
    cron.check("WARNING")
    ran = cron.run()
    assert [n["sent"] for n in ran.json()["notifications"]] == [True], ran.json()
    assert "did not take the alerts" in ran.err  # the member that is down is named in the log
    assert [a["labels"]["severity"] for a in one.alerts()] == ["warning"]
    assert cron.outbox() == 0
    wait_for("the cluster's warning notification",
             lambda: [a for a in am_notified(webhook, "firing") if a["labels"]["severity"] == "warning"])


# ---- credentials -----------------------------------------------------------------------------------


def _bcrypt(password: str) -> str | None:
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
        if crypt.METHOD_BLOWFISH not in crypt.methods:
            return None
        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 4))
    except ImportError:
        return None


def test_basic_auth_against_alertmanager_web_config_and_the_password_never_shows(
        cron: Cron, alertmanagers: Callable[..., Alertmanager]) -> None:
    hashed = _bcrypt(PASSWORD)
    if hashed is None:
        pytest.skip("no bcrypt (crypt's METHOD_BLOWFISH) to write Alertmanager's --web.config.file with; "
                    "tests/notifiers/test_notifier_alertmanager.py checks the header with a recording receiver")
    am = alertmanagers(web_config=yaml.safe_dump({"basic_auth_users": {"ce-agent": hashed}}),
                       auth=("ce-agent", PASSWORD)).start()
    cron.inventory({"url": am.url, "resend_interval": "1s", "ttl": "2m",
                    "basic_auth": {"username": "ce-agent", "password": "wrong-" + PASSWORD}})
    cron.check("CRITICAL")
    ran = cron.run()
    (note,) = ran.json()["notifications"]
    assert not note["sent"] and "HTTP 401" in note["error"] and "not retried" in note["error"], note
    outputs = [ran.out, ran.err]

    # the password fixed: the alert, refused once, goes out at the next re-send, not after repeat_interval (4h)
    cron.inventory({"url": am.url, "resend_interval": "1s", "ttl": "2m",
                    "basic_auth": {"username": "ce-agent", "password": PASSWORD}})
    time.sleep(1.2)
    ran = cron.run()
    assert [n["sent"] for n in ran.json()["notifications"]] == [True], ran.json()
    (alert,) = am.alerts()
    assert alert["labels"]["severity"] == "critical"
    outputs += [ran.out, ran.err]
    for args in (["validate", "site.yml", "-i", "inventory.yml"], ["notify", "test", "am", "-i", "inventory.yml"]):
        done = cron.agent(*args, timeout=60)
        assert done.code == 0, done.err
        outputs += [done.out, done.err]
    for text in outputs:
        assert PASSWORD not in text
    state = (cron.agent.cwd / "state" / "state.db").read_bytes()
    assert PASSWORD.encode() not in state


# ---- notify test, validate ---------------------------------------------------------------------------


def test_notify_test_posts_an_alert_that_ends_by_itself(agent: Agent, cron: Cron,
                                                       alertmanagers: Callable[..., Alertmanager],
                                                       webhook: Webhook) -> None:
    am = alertmanagers().start()
    cron.inventory({"url": am.url})
    ran = agent("notify", "test", "am", "-i", "inventory.yml", timeout=60)
    assert ran.code == 0, ran.err
    assert "sent a test notification to channel 'am'" in ran.out
    (alert,) = am.alerts()
    assert alert["labels"] == {"alertname": "CeAgentTestNotification", "host": "web1", "severity": "none"}
    assert 250 <= when(alert["endsAt"]) - when(alert["startsAt"]) <= 350
    wait_for("Alertmanager's notification of the test alert", lambda: am_notified(webhook, "firing"))


@pytest.mark.parametrize(
    ("channel", "key", "message"),
    [
        pytest.param({"url": "am.example:9093"}, "url", "expected an http:// or https:// URL", id="no-scheme"),
        pytest.param({"url": "http://u:TopSecret99@am:9093"}, "url", "use basic_auth", id="credentials-in-url"),
        pytest.param({"url": "http://am:9093/?token=TopSecret99"}, "url", "use headers for a token", id="query-in-url"),
        pytest.param({"url": "https://am:9093", "ca_file": "/nonexistent/ca.pem"}, "ca_file",
                     "no such file: /nonexistent/ca.pem", id="missing-ca-file"),
        pytest.param({"url": "http://am:9093", "ttl": "1m", "resend_interval": "1m"}, "ttl", "twice resend_interval",
                     id="ttl-too-short"),
        pytest.param({"url": "http://am:9093", "bearer_token": "TopSecret99",
                      "basic_auth": {"username": "u", "password": "TopSecret99"}}, "basic_auth", "not both",
                     id="two-credentials"),
        pytest.param({"url": "http://am:9093", "headers": {"X-Token": "TopSecret99\nX: y"}}, "headers", "line break",
                     id="header-injection"),
        pytest.param({"url": "http://am:9093", "labels": {"data-center": "eu"}}, "labels", "not a label name",
                     id="bad-label"),
        pytest.param({"url": "http://am:9093", "timeout": "soon"}, "timeout", "", id="bad-duration"),
        pytest.param({"url": "http://am:9093", "password": "TopSecret99"}, "password", "unknown option",
                     id="unknown-option"),
    ],
)
def test_a_bad_channel_is_one_line_naming_file_line_and_key(agent: Agent, channel: dict[str, Any], key: str,
                                                           message: str) -> None:
    lines = yaml.safe_dump({"all": {"vars": {"channels": {"am": {"alertmanager": channel}}},
                                    "hosts": {"web1": {"address": "127.0.0.1"}}}}, sort_keys=False)
    agent.write("inventory.yml", lines)
    agent.write("site.yml", yaml.safe_dump([{"name": "Web", "hosts": "web1", "checks": [
        {"name": "Root disk", "fixed": {"status": "OK"}, "notify": ["am"]}]}]))
    ran = agent("validate", "site.yml", "-i", "inventory.yml", timeout=60)
    assert ran.code == 2, (ran.out, ran.err)
    problems = [line for line in (ran.out + ran.err).splitlines() if "channel 'am'" in line]
    assert len(problems) == 1, ran.err
    (problem,) = problems
    line_of_key = next(i for i, text in enumerate(lines.splitlines(), 1) if text.strip().startswith(f"{key}:"))
    # the key's line, or the next one where a block mapping (labels, headers, basic_auth) starts
    assert problem.startswith((f"inventory.yml:{line_of_key}:", f"inventory.yml:{line_of_key + 1}:")), (problem, lines)
    assert message in problem
    assert "TopSecret99" not in ran.out + ran.err


def test_the_daemon_re_sends_so_a_short_ttl_never_ends_a_firing_alert(cron: Cron, agent: Agent, test_plugins: Path,
                                                                       alertmanagers: Callable[..., Alertmanager]) -> None:
    from tests.agentproc import AgentProcess

    am = alertmanagers().start()
    # without re-sends Alertmanager would end it 3 s after the first post
    cron.inventory({"url": am.url, "resend_interval": "1s", "ttl": "3s"})
    task = {"name": "Root disk", "fixed": {"status": "CRITICAL", "summary": SUMMARY["CRITICAL"]}, "notify": ["am"],
            "interval": "1s"}
    agent.write("site.yml", yaml.safe_dump([{"name": "Web", "hosts": "web1", "checks": [task]}], sort_keys=False))
    proc = AgentProcess(agent.cwd, ["site.yml", "-i", "inventory.yml", "--listen", "127.0.0.1:0"],
                        pythonpath=[test_plugins]).started()
    try:
        (first,) = wait_for("the alert in Alertmanager", am.alerts)
        time.sleep(7)
        (later,) = am.alerts()
        assert later["status"]["state"] == "active" and when(later["startsAt"]) == when(first["startsAt"])
        assert when(later["endsAt"]) - when(first["endsAt"]) >= 4, (first["endsAt"], later["endsAt"])
        sent = proc.metric("ce_notifications_sent_total", channel="am") or 0
        assert 4 <= sent <= 10, sent  # about one post a second, not one per evaluation burst
    finally:
        assert proc.stop() == 0
