"""`ce-agent agent`: the real daemon on a free port, its schedules, endpoints, logs, signals and systemd protocol."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agentproc import AgentProcess
from tests.conftest import Agent

INVENTORY = """\
all:
  hosts:
    localhost: {}
"""

# every second: a fast check, a Python plugin that hangs, a command that ignores SIGTERM and forks
BUSY = """\
- name: Busy
  hosts: localhost
  checks:
    - name: fast
      fixed: {status: OK, summary: all good}
      interval: 1s
    - name: stuck plugin
      hangs: {}
      interval: 1s
      timeout: 1s
    - name: stubborn command
      command:
        argv: [sh, -c, "trap '' TERM; sleep 297 & echo $! > {{ pidfile }}; sleep 297; echo never"]
      interval: 1s
      timeout: 1s
  collectors:
    - constant: {value: 7}
      schedule: "* * * * * *"
"""


@pytest.fixture
def start(agent: Agent, test_plugins: Path) -> Iterator:
    """Start `ce-agent agent` on a free port with the given playbook; stopped at the end of the test."""
    started: list[AgentProcess] = []

    def start(playbook: str, *args: str, inventory: str = INVENTORY, env: dict[str, str] | None = None,
              wait: bool = True) -> AgentProcess:
        agent.write("pb.yml", playbook)
        agent.write("inv.yml", inventory)
        proc = AgentProcess(agent.cwd, ["pb.yml", "-i", "inv.yml", "--listen", "127.0.0.1:0", *args],
                            env={"PYTHONUNBUFFERED": "1", **(env or {})}, pythonpath=[test_plugins])
        started.append(proc)
        return proc.started() if wait else proc

    yield start
    for proc in started:
        proc.kill()


def _leftovers() -> list[str]:
    """Processes of the stubborn command still around (none may outlive its timeout or the agent)."""
    import psutil

    return [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])
            if (p.info["cmdline"] or [])[:2] == ["sleep", "297"] or "sleep 297" in " ".join(p.info["cmdline"] or [])]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_checks_run_on_schedule_and_hung_ones_time_out_without_holding_up_the_others(start, agent: Agent) -> None:
    pidfile = agent.cwd / "child.pid"
    proc = start(BUSY, "-e", f"pidfile={pidfile}")
    fast = {"check": "fast", "host": "localhost", "play": "Busy"}
    proc.wait_for(lambda: (proc.metric("ce_check_runs_total", status="ok", **fast) or 0) >= 4, 20, "4 runs of fast")
    # the hung ones are UNKNOWN "timed out after 1s" and are not started again while still stuck
    for name in ("stuck plugin", "stubborn command"):
        labels = {"check": name, "host": "localhost", "play": "Busy"}
        proc.wait_for(lambda: proc.metric("ce_check_status", **labels) == 3, 10, f"{name} UNKNOWN")
        proc.wait_for(lambda: proc.metric("ce_check_timeouts_total", **labels), 10, f"{name} timeouts counted")
    status = json.loads(proc.get("/api/v1/status")[1])
    tasks = {t["name"]: t for t in status["tasks"]}
    assert tasks["stubborn command"]["summary"] == "timed out after 1s"
    assert tasks["fast"]["status"] == "OK" and tasks["fast"]["schedule"] == "every 1s"
    # the command's whole process group is killed at the timeout, its background child too
    child = int(pidfile.read_text())
    proc.wait_for(lambda: not _alive(child), 5, "the forked child to be killed")
    # the Python plugin cannot be killed: its next due runs are counted as skipped, not piled up
    stuck = {"check": "stuck plugin", "host": "localhost", "play": "Busy"}
    proc.wait_for(lambda: proc.metric("ce_scheduler_skipped_runs_total", **stuck), 10, "skipped runs of the stuck plugin")
    before = proc.metric("ce_check_runs_total", status="ok", **fast) or 0
    time.sleep(2.2)
    assert (proc.metric("ce_check_runs_total", status="ok", **fast) or 0) >= before + 2, "fast kept its schedule"
    lateness = proc.metric("ce_scheduler_lateness_seconds_count")
    assert lateness and lateness >= 4
    assert proc.metric("ce_constant_value", collector="constant", host="localhost") == 7
    assert proc.stop() == 0
    assert _leftovers() == []


@pytest.mark.parametrize("path, code, content_type, expected", [
    pytest.param("/livez", 200, "text/plain", "ok", id="livez"),
    pytest.param("/readyz", 200, "text/plain", "ok", id="readyz"),
    pytest.param("/healthz", 200, "text/plain", "ok", id="healthz"),
    pytest.param("/api/v1/status", 200, "application/json", '"tasks"', id="status-json"),
    pytest.param("/api/v1/alerts", 200, "application/json", "[", id="alerts-json"),
    pytest.param("/", 200, "text/html", '<meta http-equiv="refresh"', id="status-page-refreshes"),
    pytest.param("/metrics", 200, "text/plain; version=0.0.4", "ce_build_info", id="metrics"),
    pytest.param("/nope", 404, "text/plain", "not found", id="unknown-path"),
])
def test_endpoints(start, path: str, code: int, content_type: str, expected: str) -> None:
    proc = start(QUIET)
    got, body, headers = proc.get(path)
    assert (got, expected in body) == (code, True), body
    assert headers["Content-Type"].startswith(content_type)


QUIET = """\
- name: Quiet
  hosts: localhost
  checks:
    - name: ok check
      fixed: {status: OK, summary: fine}
      interval: 1s
    - name: bad check
      fixed: {status: CRITICAL, summary: "disk <full> & on fire"}
      interval: 1s
"""


def test_status_page_and_alerts_api_show_tasks_and_firing_alerts(start) -> None:
    proc = start(QUIET)
    alerts = proc.wait_for(lambda: json.loads(proc.get("/api/v1/alerts")[1])["alerts"], 10, "an alert")
    assert [(a["labels"]["check"], a["state"], a["status"]) for a in alerts] == [("bad check", "firing", "CRITICAL")]
    page = proc.get("/")[1]
    assert "ok check" in page and "disk &lt;full&gt; &amp; on fire" in page  # escaped
    assert "<full>" not in page


def test_metrics_pass_promtool_and_are_scraped_by_a_real_prometheus(start, agent: Agent, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CE_AGENT_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is required (CE_AGENT_REQUIRE_PROMTOOL=1) but missing")
        pytest.skip("promtool not installed")
    proc = start(QUIET)
    proc.wait_for(lambda: proc.metric("ce_check_status", check="bad check") == 2, 10, "a result")
    text = proc.get("/metrics")[1]
    for family in ("ce_check_status", "ce_check_duration_seconds_bucket", "ce_check_runs_total",
                   "ce_scheduler_lateness_seconds_bucket", "ce_scheduler_skipped_runs_total", "ce_outbox_depth",
                   "ce_notification_delivery_failures_total", "ce_plugin_load_errors", "ce_build_info",
                   "ce_config_last_reload_successful"):
        assert family in text, family
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    prometheus = shutil.which("prometheus")
    if prometheus is None:  # Debian's `prometheus` package brings both
        assert os.environ.get("CE_AGENT_REQUIRE_PROMTOOL") != "1", "prometheus is required with promtool"
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        prom_port = s.getsockname()[1]
    config = tmp_path / "prometheus.yml"
    config.write_text(f"global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: ce\n"
                      f"    static_configs: [{{targets: ['127.0.0.1:{proc.port}']}}]\n")
    server = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{prom_port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import urllib.parse
        import urllib.request

        def scraped(promql: str) -> object:
            query = urllib.parse.quote(promql)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/query?query={query}", timeout=2) as r:
                    return json.load(r)["data"]["result"]
            except OSError:
                return None

        result = proc.wait_for(lambda: scraped('ce_check_status{check="bad check"}'), 30, "Prometheus to scrape the agent")
        assert result[0]["value"][1] == "2"
        (up,) = scraped('up{job="ce"}')
        assert up["value"][1] == "1" and up["metric"]["instance"] == f"127.0.0.1:{proc.port}"
    finally:
        server.terminate()
        server.wait(10)


BROKEN = """\
- name: Quiet
  hosts: localhost
  checks:
    - name: ok check
      fixed: {status: OK}
      interval: 1s
      timeout: forever
"""

RELOADED = """\
- name: Quiet
  hosts: localhost
  checks:
    - name: new check
      fixed: {status: WARNING, summary: added by reload}
      interval: 1s
"""


def test_sighup_reloads_and_an_invalid_config_keeps_the_old_one_running(start, agent: Agent) -> None:
    proc = start(QUIET)
    ok = {"check": "ok check", "host": "localhost", "play": "Quiet"}
    proc.wait_for(lambda: proc.metric("ce_check_runs_total", status="ok", **ok), 10, "a first run")
    agent.write("pb.yml", BROKEN)
    proc.signal(signal.SIGHUP)
    failed = proc.wait_for(lambda: proc.log("reload failed"), 10, "the failed reload logged")
    assert "pb.yml:7:16" in failed["message"] and "'timeout'" in failed["message"], failed
    assert failed["level"] == "ERROR"
    assert proc.metric("ce_config_last_reload_successful") == 0
    assert proc.metric("ce_config_reloads_total", result="failure") == 1
    code, body, _ = proc.get("/readyz")
    assert code == 503 and "configuration is invalid" in body
    runs = proc.metric("ce_check_runs_total", status="ok", **ok) or 0
    proc.wait_for(lambda: (proc.metric("ce_check_runs_total", status="ok", **ok) or 0) > runs, 5,
                  "the old config to keep running")
    agent.write("pb.yml", RELOADED)
    proc.signal(signal.SIGHUP)
    proc.wait_for(lambda: proc.metric("ce_check_status", check="new check") == 1, 10, "the new task")
    assert proc.metric("ce_config_last_reload_successful") == 1
    assert proc.get("/readyz")[0] == 200
    assert proc.metric("ce_check_status", check="ok check") is None, "a removed task's series are gone"
    assert proc.log("configuration reloaded: 1 tasks (1 added, 2 removed)")
    assert proc.stop() == 0


def test_sigterm_stops_within_10s_kills_running_commands_and_leaves_state_that_loads(start, agent: Agent) -> None:
    pidfile = agent.cwd / "child.pid"
    playbook = BUSY.replace("timeout: 1s", "timeout: 60s")
    proc = start(playbook, "-e", f"pidfile={pidfile}")
    proc.wait_for(pidfile.exists, 10, "the stubborn command to start")
    child = int(pidfile.read_text())
    began = time.monotonic()
    code = proc.stop(timeout=15)
    took = time.monotonic() - began
    assert code == 0 and took < 10, (code, took)
    assert not _alive(child), "a running command was left behind"
    assert _leftovers() == []
    assert proc.log("stopping") and proc.log("stopped")
    with sqlite3.connect(agent.cwd / "state" / "state.db") as db:
        assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM results WHERE check_name = 'fast'").fetchone()[0] >= 1


def test_under_systemd_it_sends_ready_watchdog_reloading_and_stopping(start, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(10)
        proc = start(QUIET, env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"})
        messages: list[tuple[float, str]] = []

        def receive_until(text: str, after: int = 0) -> None:
            while not any(text in m for _, m in messages[after:]):
                messages.append((time.monotonic(), sock.recv(4096).decode()))

        receive_until("READY=1")
        listen_until = time.monotonic() + 2.0
        while time.monotonic() < listen_until:  # received as sent: the times are the agent's
            messages.append((time.monotonic(), sock.recv(4096).decode()))
        proc.signal(signal.SIGHUP)
        receive_until("RELOADING=1")
        pings = [t for t, m in messages if m == "WATCHDOG=1" and t < listen_until]
        assert len(pings) >= 3, messages
        # the first ping may have waited in the socket with READY while the test started the agent
        gaps = [b - a for a, b in zip(pings[1:], pings[2:])]
        assert gaps and all(0.3 < gap < 0.9 for gap in gaps), gaps  # half of WATCHDOG_USEC
        receive_until("READY=1", after=len(messages))  # the reload ends with READY again
        proc.signal(signal.SIGTERM)
        receive_until("STOPPING=1")
        assert proc.proc.wait(10) == 0


def test_logs_are_json_lines_with_check_host_and_play_and_never_a_secret(start, agent: Agent, dead_port: int) -> None:
    inventory = f"""\
all:
  vars:
    channels:
      hook: "json://bob:{{{{ env.HOOK_PASSWORD }}}}@127.0.0.1:{dead_port}/x"
  hosts:
    localhost: {{}}
"""
    playbook = QUIET.replace("summary: \"disk <full> & on fire\"}", "summary: \"disk <full> & on fire\"}\n"
                             "      notify: [hook]\n      labels: {token: \"{{ env.HOOK_PASSWORD }}\"}")
    proc = start(playbook, inventory=inventory, env={"HOOK_PASSWORD": "s3cret-hunter2"})
    warning = proc.wait_for(lambda: proc.log("delivery to hook failed"), 20, "a failed delivery logged")
    assert warning["level"] == "WARNING"
    state = proc.wait_for(lambda: proc.log("bad check is CRITICAL"), 10, "a state change logged")
    assert {k: state[k] for k in ("check", "host", "play")} == {"check": "bad check", "host": "localhost", "play": "Quiet"}
    assert set(state) >= {"time", "level", "logger", "message"}
    assert proc.metric("ce_notification_delivery_failures_total", channel="hook") >= 1
    served = [proc.get(path)[1] for path in ("/api/v1/alerts", "/api/v1/status", "/", "/metrics")]
    assert "token" in served[0] and "s3cret-hunter2" not in "".join(served)
    proc.stop()
    stored = b"".join(p.read_bytes() for p in (agent.cwd / "state").iterdir() if p.is_file())
    assert b"s3cret-hunter2" not in stored
    everything = "\n".join(proc.lines + proc.errors)
    assert "s3cret-hunter2" not in everything
    assert all(line.startswith("{") for line in proc.lines), [l for l in proc.lines if not l.startswith("{")]


def test_log_file_is_private_and_rotated_by_size(start, agent: Agent) -> None:
    log = agent.cwd / "logs" / "agent.log"
    log.parent.mkdir()
    proc = start(QUIET, "--log-file", str(log), "--log-rotate", "size:2KB", "--log-keep", "2", "--log-level", "debug",
                 wait=False)
    proc.wait_for(lambda: log.exists() and "serving /metrics" in log.read_text(), 20, "the log file")
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    proc.wait_for(lambda: (agent.cwd / "logs" / "agent.log.1").exists(), 20, "a rotation")
    assert proc.lines == []  # nothing on stdout when logging to a file
    proc.wait_for(lambda: (agent.cwd / "logs" / "agent.log.2").exists(), 20, "a second rotation")
    time.sleep(3)  # more rotations: still only the two newest are kept
    assert sorted(p.name for p in log.parent.iterdir()) == ["agent.log", "agent.log.1", "agent.log.2"]
    assert all(json.loads(line) for line in log.read_text().splitlines())
    assert proc.stop() == 0


@pytest.mark.parametrize("args, message", [
    pytest.param(["--listen", "localhost"], "invalid listen address 'localhost'", id="listen-without-port"),
    pytest.param(["--listen", "127.0.0.1:99999"], "the port must be a number", id="listen-bad-port"),
    pytest.param(["--log-rotate", "weekly"], "bad log rotation 'weekly'", id="bad-rotation"),
    pytest.param(["--log-level", "loud"], "bad log level 'loud'", id="bad-level"),
])
def test_bad_options_are_one_line_and_exit_2(agent: Agent, args: list[str], message: str) -> None:
    agent.write("pb.yml", QUIET)
    agent.write("inv.yml", INVENTORY)
    ran = agent("agent", "pb.yml", "-i", "inv.yml", *args, timeout=30)
    assert ran.code == 2 and message in ran.err and "Traceback" not in ran.err, ran.err
    assert len(ran.err.strip().splitlines()) == 1


def test_an_invalid_playbook_at_start_lists_every_error_and_exits_2(agent: Agent) -> None:
    agent.write("pb.yml", BROKEN.replace("interval: 1s", "schedule: '61 * * * *'"))
    agent.write("inv.yml", INVENTORY)
    ran = agent("agent", "pb.yml", "-i", "inv.yml", timeout=30)
    assert ran.code == 2 and "Traceback" not in ran.err
    assert "pb.yml:6:17: 'schedule'" in ran.err and "pb.yml:7:16: 'timeout'" in ran.err, ran.err
    assert ran.err.strip().endswith("2 errors; the agent did not start")


def test_a_port_in_use_is_one_line_and_exit_2(agent: Agent) -> None:
    agent.write("pb.yml", QUIET)
    agent.write("inv.yml", INVENTORY)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = agent("agent", "pb.yml", "-i", "inv.yml", "--listen", f"127.0.0.1:{port}", timeout=30)
    assert ran.code == 2 and "already in use" in ran.err and "Traceback" not in ran.err, ran.err


def test_a_channel_that_is_down_gets_the_notification_later_exactly_once(start, webhook) -> None:
    webhook.status = 503
    inventory = f"""\
all:
  vars:
    channels:
      hook: "json://127.0.0.1:{webhook.port}/alerts"
    delivery: {{attempts: 1, retry_after: 1s, max_retry_after: 1s}}
  hosts:
    localhost: {{}}
"""
    playbook = QUIET.replace("summary: \"disk <full> & on fire\"}", "summary: \"disk <full> & on fire\"}\n      notify: [hook]")
    proc = start(playbook, inventory=inventory)
    proc.wait_for(lambda: len(webhook.requests) >= 2, 20, "retries while the channel is down")
    webhook.status = 200
    proc.wait_for(lambda: proc.metric("ce_notifications_sent_total", channel="hook"), 20, "the delivery")
    time.sleep(2.5)
    accepted = [r for r in webhook.requests if r is webhook.requests[-1]]
    assert proc.metric("ce_notifications_sent_total", channel="hook") == 1
    assert proc.metric("ce_outbox_depth") == 0
    assert accepted and b"bad check" in accepted[0].body
    assert proc.stop() == 0


def test_alerts_of_one_group_finishing_apart_go_out_as_one_message(start, webhook) -> None:
    inventory = f"""\
all:
  vars:
    channels:
      hook: "json://127.0.0.1:{webhook.port}/alerts"
    routes:
      - channels: [hook]
        group_by: [play]
        group_wait: 3s
  hosts:
    localhost: {{}}
"""
    playbook = """\
- name: Grouped
  hosts: localhost
  checks:
    - name: quick failure
      command: {argv: [sh, -c, "echo CRITICAL quick; exit 2"]}
      schedule: "* * * * * */10"
    - name: slow failure
      command: {argv: [sh, -c, "sleep 1; echo CRITICAL slow; exit 2"]}
      schedule: "* * * * * */10"
"""
    proc = start(playbook, inventory=inventory)
    proc.wait_for(lambda: proc.metric("ce_check_status", check="slow failure") == 2, 15, "both checks to fail")
    proc.wait_for(lambda: webhook.requests, 10, "the group message")
    time.sleep(1)
    assert len(webhook.requests) == 1, [r.body for r in webhook.requests]
    body = json.loads(webhook.requests[0].body)
    assert body["title"] == "[FIRING:2] host=localhost severity=critical"
    assert "quick failure" in body["message"] and "slow failure" in body["message"]
    assert proc.stop() == 0


def test_readyz_says_so_while_the_state_cannot_be_written_and_recovers(start, agent: Agent) -> None:
    proc = start(QUIET)
    proc.wait_for(lambda: proc.metric("ce_check_status", check="ok check") == 0, 10, "a first result")
    # another process holds the database's write lock past the agent's 5 s busy timeout
    locker = sqlite3.connect(agent.cwd / "state" / "state.db", isolation_level=None, timeout=1)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        code, body, _ = proc.wait_for(lambda: (r := proc.get("/readyz", timeout=10))[0] == 503 and r, 20,
                                      "/readyz to report the state")
        assert "the state cannot be written" in body and "locked" in body, body
        assert proc.log("recording results failed")["level"] == "ERROR"
        assert proc.get("/livez")[0] == 200  # alive all the same: restarting would not help
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    proc.wait_for(lambda: proc.get("/readyz", timeout=10)[0] == 200, 20, "/readyz to recover")
    assert proc.stop() == 0


HOOKED = """\
all:
  vars:
    channels:
      hook: "json://127.0.0.1:{port}/alerts"
  hosts:
    localhost: {{}}
"""

RULED = """\
- name: Ruled
  hosts: localhost
  checks:
    - name: fast
      fixed: {status: OK}
      interval: 1s
    - name: failing
      fixed: {status: CRITICAL, summary: broken}
      interval: 1s
      notify: [hook]
  collectors:
    - constant: {value: 7}
      schedule: "* * * * * */3"
  alerts:
    - name: ConstantHigh
      expr: "constant_value > 1"
      notify: [hook]
"""


def _titles(webhook) -> list[str]:
    return [json.loads(r.body)["title"] for r in webhook.requests]


def test_a_restart_sends_nothing_again(start, webhook) -> None:
    inventory = HOOKED.format(port=webhook.port)
    proc = start(RULED, inventory=inventory)
    proc.wait_for(lambda: len(webhook.requests) >= 2, 15, "the two alerts")
    assert proc.stop() == 0
    again = start(RULED, inventory=inventory)
    # the collector runs every 3 s: the rule is not judged before it has reported
    again.wait_for(lambda: (again.metric("ce_collector_runs_total", collector="constant", result="success") or 0) >= 2,
                   15, "two collections after the restart")
    time.sleep(1)
    assert sorted(_titles(webhook)) == ["[CRITICAL] failing on localhost", "[WARNING] ConstantHigh on localhost"]
    assert again.stop() == 0


def test_a_check_removed_by_a_reload_resolves_on_the_channel_told_it_fired(start, agent: Agent, webhook) -> None:
    proc = start(RULED, inventory=HOOKED.format(port=webhook.port))
    proc.wait_for(lambda: "[CRITICAL] failing on localhost" in _titles(webhook), 15, "the failing check's alert")
    agent.write("pb.yml", RULED.replace("""    - name: failing
      fixed: {status: CRITICAL, summary: broken}
      interval: 1s
      notify: [hook]
""", ""))
    proc.signal(signal.SIGHUP)
    proc.wait_for(lambda: "[RESOLVED] failing on localhost" in _titles(webhook), 15, "its resolved message")
    time.sleep(1.5)
    assert proc.metric("ce_check_status", check="failing") is None
    assert _titles(webhook).count("[RESOLVED] failing on localhost") == 1
    assert proc.stop() == 0


def test_a_closed_stdout_and_stderr_do_not_stop_the_agent(agent: Agent, test_plugins: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    agent.write("pb.yml", QUIET)
    agent.write("inv.yml", INVENTORY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CE_AGENT_STATE_DIR": str(agent.cwd / "state"), "PYTHONPATH": str(test_plugins)}
    proc = subprocess.Popen([sys.executable, "-m", "ce_agent", "agent", "pb.yml", "-i", "inv.yml", "--listen",
                             f"127.0.0.1:{port}", "-v"], cwd=agent.cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # it is up and logging
        proc.stdout.close()  # like `ce-agent agent ... | head -1`
        time.sleep(3)  # every run logs at debug level: each write now fails
        assert proc.poll() is None, "the agent died of a closed pipe"
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=5) as reply:
            assert reply.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_readyz_reports_a_scheduler_that_stopped_ticking(start, agent: Agent) -> None:
    # a reload that hangs reading a file() lookup (a FIFO nobody writes: think of a dead NFS mount)
    # holds the scheduling loop: /readyz must say so, and the systemd watchdog pings stop with it
    fifo = agent.cwd / "secret.fifo"
    os.mkfifo(fifo)
    proc = start(QUIET)
    assert proc.get("/readyz")[0] == 200
    agent.write("pb.yml", QUIET.replace("summary: fine}", "summary: \"{{ file('%s') }}\"}" % fifo))
    proc.signal(signal.SIGHUP)
    code, body, _ = proc.wait_for(lambda: (r := proc.get("/readyz"))[0] == 503 and r, 15, "a stalled scheduler seen")
    assert "the scheduler has not ticked for" in body, body
    assert proc.get("/livez")[0] == 200
    with open(fifo, "w") as writer:  # the file answers at last: the reload completes
        writer.write("now readable")
    proc.wait_for(lambda: proc.get("/readyz")[0] == 200, 15, "the scheduler to tick again")
    proc.wait_for(lambda: proc.metric("ce_check_status", check="ok check") == 0, 10, "checks again")
    assert proc.stop() == 0


SLO_PLAYBOOK = """\
- name: Shop
  hosts: localhost
  checks:
    - name: api
      fixed: {status: OK}
      interval: 1s
  slos:
    - name: api-availability
      objective: 99
      window: 1d
      sli: {check: api}
"""


def test_slos_are_on_metrics_and_go_with_a_reload_that_removes_them(start, agent: Agent) -> None:
    proc = start(SLO_PLAYBOOK)
    ids = {"slo": "api-availability", "host": "localhost", "play": "Shop"}
    # evaluated with the first results, then once a minute
    assert proc.wait_for(lambda: proc.metric("ce_slo_objective_percent", **ids), 10, "the SLO exported") == 99
    assert proc.metric("ce_slo_sli_percent", **ids) == 100
    assert proc.metric("ce_slo_error_budget_remaining", **ids) == 1
    assert proc.metric("ce_slo_burn_rate", window="1h", **ids) == 0
    (slo,) = json.loads(proc.get("/api/v1/status")[1])["slos"]  # as `slo status --format json`, with play and host
    assert (slo["name"], slo["play"], slo["host"], slo["sli"], slo["status"]) == (
        "api-availability", "Shop", "localhost", 100, "ok") and slo["evaluated"]
    agent.write("pb.yml", SLO_PLAYBOOK.split("  slos:")[0])
    proc.signal(signal.SIGHUP)
    proc.wait_for(lambda: proc.log("configuration reloaded"), 10, "the reload")
    assert proc.metric("ce_slo_objective_percent", **ids) is None, "a removed SLO's series are gone"
    assert json.loads(proc.get("/api/v1/status")[1])["slos"] == []
    assert proc.stop() == 0
