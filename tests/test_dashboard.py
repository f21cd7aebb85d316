"""`ce-agent status`: the dashboard from a real state database or a real agent's API, plain, rich and exported."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from ce_agent import dashboard
from ce_agent.store import Store
from tests.agentproc import AgentProcess
from tests.conftest import Agent

INVENTORY = "all:\n  hosts:\n    localhost: {}\n"
HOSTILE = "[bold]x[/bold] <script>alert(1)</script>"
# three checks, one of each status, a hostile summary with an escape sequence, host metrics and two SLOs
PLAYBOOK = f"""\
- name: Shop
  hosts: localhost
  collectors:
    - name: host
      system: {{include: [cpu, memory, disk, load], interval: 0.05}}
      interval: 1s
    - constant: {{value: 7}}
      interval: 1s
  checks:
    - name: api
      fixed: {{status: OK, summary: all good}}
      interval: 1s
    - name: disk
      fixed: {{status: WARNING, summary: "{HOSTILE} \\e[31mred"}}
      interval: 1s
    - name: db
      fixed: {{status: CRITICAL, summary: down}}
      interval: 1s
  slos:
    - name: api-availability
      objective: 99
      window: 30d
      sli: {{check: api}}
    - name: db-availability
      objective: 99
      window: 30d
      sli: {{check: db}}
"""
# db CRITICAL and disk WARNING fire at once; db's SLO burns its whole budget and pages (SLOBurnRate)
MINIMAL = "ce-agent: 3 checks: 1 OK, 1 WARNING, 1 CRITICAL; 3 alerts firing; SLOs 1/2 met"


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory, test_plugins: Path) -> Agent:
    """A state database written by two real `ce-agent run`s of PLAYBOOK (shared: the tests only read it)."""
    agent = Agent(tmp_path_factory.mktemp("dashboard"), [test_plugins])
    agent.write("pb.yml", PLAYBOOK)
    agent.write("inv.yml", INVENTORY)
    for _ in range(2):
        ran = agent("run", "pb.yml", "-i", "inv.yml")
        assert ran.code == 2, ran.err
    return agent


def lines_matching(text: str, *cells: str) -> list[str]:
    """The lines of a plain table whose cells, split on runs of spaces, start with these."""
    return [line for line in text.splitlines() if re.split(r"\s{2,}", line)[:len(cells)] == list(cells)]


# ---- plain text from the state database ------------------------------------------------------------


@pytest.mark.parametrize("mode, present, absent", [
    pytest.param("minimal", [], ["Active alerts", "Checks:", "SLOs:", "Resources", "Recent runs"], id="minimal"),
    pytest.param("compact", ["Active alerts: 3 (2 critical, 1 warning)", "SLOs: 1 of 2 met"],
                 ["Checks:", "Resources", "Recent runs"], id="compact: counts, alerts, SLOs"),
    pytest.param("full", ["Checks: 3", "Active alerts: 3 (2 critical, 1 warning)", "SLOs: 1 of 2 met", "Resources",
                          "Recent runs: 6"], [], id="full: also checks, resources, recent runs"),
])
def test_modes_show_their_sections_as_plain_text_off_a_terminal(state: Agent, mode: str, present: list[str],
                                                                 absent: list[str]) -> None:
    ran = state("status", "--mode", mode)
    assert (ran.code, ran.err) == (0, "")
    assert "\x1b" not in ran.out  # not a terminal: no colours, no cursor movement
    if mode == "minimal":
        assert ran.out == MINIMAL + "\n"
        return
    first, second = ran.out.splitlines()[:2]
    assert re.fullmatch(r"ce-agent status  \S+  \(state database .*state\.db\)", first), first
    assert second == MINIMAL.removeprefix("ce-agent: ")
    for text in present:
        assert text in ran.out.splitlines()
    for text in absent:
        assert not any(line.startswith(text) for line in ran.out.splitlines()), text


def test_full_lists_checks_worst_first_alerts_by_severity_slos_bars_and_runs(state: Agent) -> None:
    out = state("status").out
    checks = out.split("Checks: 3\n")[1].split("\n\n")[0].splitlines()
    assert [re.split(r"\s{2,}", line)[:4] for line in checks] == [
        ["STATUS", "HOST", "PLAY", "CHECK"], ["CRITICAL", "localhost", "Shop", "db"],
        ["WARNING", "localhost", "Shop", "disk"], ["OK", "localhost", "Shop", "api"]]
    alerts = out.split("Active alerts: 3 (2 critical, 1 warning)\n")[1].split("\n\n")[0].splitlines()[1:]
    assert [re.split(r"\s{2,}", line)[:5] for line in alerts] == [
        ["critical", "firing", "CRITICAL", "localhost", "db"],
        ["critical", "firing", "CRITICAL", "localhost",
         "SLOBurnRate db-availability long_window=1h short_window=5m"],
        ["warning", "firing", "WARNING", "localhost", "disk"]]
    assert lines_matching(out, "api-availability", "localhost", "99%", "30d", "100.000%", "100.0%", "ok")
    assert lines_matching(out, "db-availability", "localhost", "99%", "30d", "0.000%", "-9900.0%", "breached")
    for resource in ("cpu", "memory", "disk /"):
        (row,) = lines_matching(out, "localhost", resource)
        assert re.search(r"  \[[#-]{20}\]  \d+\.\d%$", row), row
    (load,) = lines_matching(out, "localhost", "load 1m 5m 15m")
    assert re.fullmatch(r"localhost\s+load 1m 5m 15m\s+\d+\.\d\d \d+\.\d\d \d+\.\d\d", load)
    runs = out.split("Recent runs: 6\n")[1].splitlines()
    assert len(runs) == 7 and runs[0].split() == ["AT", "STATUS", "HOST", "CHECK", "TOOK", "SUMMARY"]
    assert sorted(re.split(r"\s{2,}", line)[1] for line in runs[1:]) == ["CRITICAL"] * 2 + ["OK"] * 2 + ["WARNING"] * 2


def test_hostile_text_is_shown_literally_and_escape_sequences_never_reach_the_terminal(state: Agent) -> None:
    plain = state("status").out
    assert f"{HOSTILE}  [31mred" in plain and "\x1b" not in plain
    # the terminal form, drawn by rich in this process from the same real database
    store, _ = Store.open(state.cwd / "state" / "state.db", time.time())
    with store:
        snapshot = dashboard.snapshot_from_store(store, time.time())
    from rich.console import Console

    console = Console(record=True, file=io.StringIO(), width=200, force_terminal=True, color_system="truecolor")
    dashboard.render_rich(snapshot, "full", console)
    drawn = console.export_text()
    # the checks table and both runs among the recent ones: markup shown, not interpreted
    assert drawn.count(f"{HOSTILE}  [31mred") == 3
    assert "\x1b[31mred" not in console.file.getvalue()  # type: ignore[attr-defined]
    assert "━" in drawn  # the resource bars


def test_no_state_yet_is_an_empty_dashboard_and_a_note(agent: Agent) -> None:
    ran = agent("status", "--mode", "minimal")
    assert (ran.code, ran.out) == (0, "ce-agent: 0 checks; 0 alerts firing\n")
    assert ran.err.startswith("note: no state in ") and ran.err.count("\n") == 1
    full = agent("status").out
    assert "SLOs: none (add `slos:` to a play)" in full and "Resources: no samples of the `system` collector" in full


# ---- export ------------------------------------------------------------------------------------


class Balanced(HTMLParser):
    """Fails on an end tag that does not close the innermost open element; `open` lists those left open."""

    VOID = {"meta", "br", "hr", "img", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def well_formed_html(content: str) -> None:
    assert content.startswith("<!DOCTYPE html>")
    parser = Balanced()
    parser.feed(content)
    parser.close()
    assert parser.open == []
    text = "".join(parser.text)
    assert f"{HOSTILE}  [31mred" in text  # escaped in the source, literal on the page
    assert "<script" not in content and "\x1b" not in content


def well_formed_svg(content: str) -> None:
    root = ET.fromstring(content)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "ce-agent status  " in "".join(root.itertext()).replace("\xa0", " ")  # rich draws spaces as nbsp
    assert "<script" not in content and "https://cdnjs" not in content  # no font fetched from a CDN


def plain_minimal(content: str) -> None:
    assert content == MINIMAL + "\n"


@pytest.mark.parametrize("name, mode, valid", [
    pytest.param("status.html", "full", well_formed_html, id="html"),
    pytest.param("status.svg", "compact", well_formed_svg, id="svg"),
    pytest.param("status.txt", "minimal", plain_minimal, id="any other suffix: plain text"),
])
def test_export_writes_the_file_instead_of_stdout(state: Agent, name: str, mode: str,
                                                  valid: Callable[[str], None]) -> None:
    target = state.cwd / name
    ran = state("status", "--mode", mode, "--export", name)
    assert (ran.code, ran.out, ran.err) == (0, "", "")
    valid(target.read_text(encoding="utf-8"))
    assert [p.name for p in state.cwd.iterdir() if p.name.endswith(".tmp")] == []


# ---- bad options and an unreachable agent: exit 2, one line ------------------------------------


@pytest.mark.parametrize("args, env, message", [
    pytest.param(["--mode", "huge"], {}, "error: --mode must be one of full, compact, minimal, got 'huge'", id="mode"),
    pytest.param(["--watch", "0"], {}, "error: --watch must be a number of seconds above 0, got 0", id="watch 0"),
    pytest.param(["--watch", "-2"], {}, "error: --watch must be a number of seconds above 0, got -2", id="watch < 0"),
    pytest.param(["--agent", "ftp://x"], {},
                 "error: --agent must be a URL such as http://127.0.0.1:9464, got 'ftp://x'", id="agent not http"),
    pytest.param(["--agent", "http://127.0.0.1:{dead}"], {},
                 "error: cannot reach the agent at http://127.0.0.1:{dead}/api/v1/status: Connection refused",
                 id="agent unreachable"),
    pytest.param(["--mode", "minimal"], {"CE_AGENT_URL": "127.0.0.1:{dead}"},
                 "error: cannot reach the agent at http://127.0.0.1:{dead}/api/v1/status: Connection refused",
                 id="CE_AGENT_URL unreachable, HOST:PORT as --listen takes it"),
    pytest.param(["--export", "no/such/dir/x.html", "--agent", "http://127.0.0.1:{dead}"], {},
                 "error: cannot reach the agent at http://127.0.0.1:{dead}/api/v1/status: Connection refused",
                 id="nothing is written when the agent is unreachable"),
])
def test_bad_options_and_an_unreachable_agent_exit_2_with_one_line(agent: Agent, dead_port: int, args: list[str],
                                                                  env: dict[str, str], message: str) -> None:
    ran = agent("status", *[a.format(dead=dead_port) for a in args],
                env={k: v.format(dead=dead_port) for k, v in env.items()})
    assert (ran.code, ran.out, ran.err) == (2, "", message.format(dead=dead_port) + "\n")


def test_an_export_that_cannot_be_written_exits_2(state: Agent) -> None:
    ran = state("status", "--export", "no/such/dir/x.html")
    assert (ran.code, ran.out) == (2, "")
    assert re.fullmatch(r"error: --export: cannot write no/such/dir/x\.html: No such file or directory\n", ran.err)


# ---- a running agent's API -------------------------------------------------------------------


def test_agent_api_shows_the_agents_tasks_alerts_and_resources(agent: Agent, test_plugins: Path) -> None:
    agent.write("pb.yml", PLAYBOOK)
    agent.write("inv.yml", INVENTORY)
    proc = AgentProcess(agent.cwd, ["pb.yml", "-i", "inv.yml", "--listen", "127.0.0.1:0"],
                        env={"PYTHONUNBUFFERED": "1"}, pythonpath=[test_plugins]).started()
    try:
        def all_ran() -> bool:
            tasks = json.loads(proc.get("/api/v1/status")[1])["tasks"]
            alerts = json.loads(proc.get("/api/v1/alerts")[1])["alerts"]
            return all(t["last_run"] for t in tasks) and len(alerts) >= 2
        proc.wait_for(all_ran, 15, "every task to run and db, disk to fire")
        url = f"http://127.0.0.1:{proc.port}"
        ran = agent("status", "--agent", url, env={"CE_AGENT_STATE_DIR": str(agent.cwd / "elsewhere")})
        minimal = agent("status", "--mode", "minimal", env={"CE_AGENT_URL": url})

        # a watch outlives its agent: the agent stops after the first snapshot, Ctrl-C after the second
        def sleep(_seconds: float) -> None:
            if proc.proc.poll() is not None:
                raise KeyboardInterrupt
            assert proc.stop() == 0

        watched = io.StringIO()
        code = dashboard.run_status(dashboard.StatusOptions(mode="minimal", watch=1.0, agent_url=url),
                                    warn=pytest.fail, out=watched, sleep=sleep)
    finally:
        assert proc.stop() == 0
    assert code == 0
    live, stale = watched.getvalue().split("\n\n")
    assert stale.startswith(live.rstrip("\n") + " (not refreshed: ")
    assert stale.endswith(f": cannot reach the agent at {url}/api/v1/status: Connection refused)\n")
    assert (ran.code, ran.err) == (0, "")
    out = ran.out
    assert out.splitlines()[0].endswith(f"(agent {url})")
    assert re.fullmatch(r"agent, up \S+, ready", out.splitlines()[1])
    assert lines_matching(out, "CRITICAL", "localhost", "Shop", "db")
    assert lines_matching(out, "WARNING", "localhost", "Shop", "disk")[0].endswith(f"{HOSTILE}  [31mred")
    assert lines_matching(out, "OK", "localhost", "Shop", "api")
    assert lines_matching(out, "critical", "firing", "CRITICAL", "localhost", "db")
    # the SLOs as the agent last evaluated them (its /api/v1/status has them)
    assert [line.split()[:2] for line in out.splitlines() if line.split()[:1] in (["api-availability"], ["db-availability"])] == [
        ["api-availability", "localhost"], ["db-availability", "localhost"]], out
    assert re.search(r"^localhost\s+cpu\s+\[[#-]{20}\]", out, re.M), out  # the agent's /metrics
    assert "Recent runs: 3" in out
    assert minimal.code == 0
    assert re.fullmatch(r"ce-agent: 3 checks: 1 OK, 1 WARNING, 1 CRITICAL; [23] alerts firing(; SLOs 1/2 met)?\n",
                        minimal.out)  # the SLOs once evaluated (with the first results)


# ---- --watch ------------------------------------------------------------------------------------


class Output:
    """Everything a child writes to a pipe or a pseudo-terminal, read as it comes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = b""
        self.times: list[float] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # a pseudo-terminal whose child is gone: EIO
                return
            if not chunk:
                return
            self.data += chunk
            self.times.append(time.monotonic())

    def count(self, text: str) -> int:
        """Occurrences of `text` in what was written, colours and cursor moves left out."""
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self.data.decode(errors="replace")).count(text)


@pytest.mark.parametrize("terminal", [pytest.param(False, id="pipe: snapshots apart"),
                                      pytest.param(True, id="terminal: rich Live redraws")])
def test_watch_redraws_every_interval_and_ctrl_c_exits_0(state: Agent, terminal: bool) -> None:
    if terminal:
        import pty

        reading, writing = pty.openpty()
    else:
        reading, writing = os.pipe()
    env = {**os.environ, "CE_AGENT_STATE_DIR": str(state.cwd / "state"),
           "PYTHONPATH": os.pathsep.join(map(str, state.pythonpath)), "COLUMNS": "200"}
    started = time.monotonic()
    # SIGINT back to its default for the child: a shell that ran pytest in the background may have ignored it
    child = subprocess.Popen([sys.executable, "-m", "ce_agent", "status", "--mode", "minimal", "--watch", "1"],
                             cwd=state.cwd, env=env, stdout=writing, stderr=subprocess.PIPE,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(writing)
    output = Output(reading)
    try:
        deadline = started + 8
        while output.count("ce-agent:") < 2 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert output.count("ce-agent:") >= 2, output.data
        child.send_signal(signal.SIGINT)
        assert child.wait(5) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        output.reader.join(5)
        os.close(reading)
    assert child.stderr is not None and child.stderr.read() == b""
    if terminal:
        assert b"\x1b[" in output.data  # colours and the cursor moves of a redraw
        assert output.count("ce-agent: 3 checks: 1 OK") >= 2
    else:
        snapshots = output.data.decode().rstrip("\n").split("\n\n")
        assert len(snapshots) >= 2 and set(snapshots) == {MINIMAL}
        first, second = output.times[0], output.times[1]
        assert 0.8 <= second - first <= 2.5  # a second apart, not as fast as possible


# ---- pure parts ----------------------------------------------------------------------------------


def snapshot(checks: list[Any] = (), alerts: list[dict] = (), slos: list[str] | None = None) -> dict[str, Any]:
    data = dashboard._empty("test", 1_000_000.0)
    data["checks"] = [{"play": "P", "host": "h", "name": f"c{i}", "status": s, "summary": "", "last_run": None,
                       "duration_s": None} for i, s in enumerate(checks)]
    data["alerts"] = [dashboard._alert({"key": f"k{i}", "labels": {"check": f"c{i}", "severity": "warning"},
                                        "since_ts": 999_000.0, **a}, 1_000_000.0) for i, a in enumerate(alerts)]
    data["slos"] = None if slos is None else [{"name": f"s{i}", "play": "P", "host": "h", "objective": 99.0,
                                               "window": "30d", "sli": None, "budget_left": None, "status": s}
                                              for i, s in enumerate(slos)]
    return data


@pytest.mark.parametrize("data, line", [
    pytest.param(snapshot(), "ce-agent: 0 checks; 0 alerts firing", id="nothing"),
    pytest.param(snapshot(["OK", "OK", "UNKNOWN", None], slos=[]),
                 "ce-agent: 4 checks: 2 OK, 1 UNKNOWN, 1 not run yet; 0 alerts firing",
                 id="a task of the agent not run yet; no SLOs: no SLO part"),
    pytest.param(snapshot(["CRITICAL"], [{"state": "firing", "silenced": True}, {"state": "pending"}],
                          slos=["ok", "at_risk", "no_data"]),
                 "ce-agent: 1 check: 1 CRITICAL; 1 alert firing, 1 pending (1 silenced); SLOs 1/3 met",
                 id="pending and silenced alerts; only ok SLOs are met"),
    pytest.param(snapshot(["OK"], slos=None), "ce-agent: 1 check: 1 OK; 0 alerts firing",
                 id="SLOs unknown (the agent's API)"),
])
def test_summary_line(data: dict[str, Any], line: str) -> None:
    assert dashboard.summary_line(data) == line


@pytest.mark.parametrize("percent, bar", [
    pytest.param(0.0, "[" + "-" * 20 + "]", id="empty"),
    pytest.param(2.4, "[" + "-" * 20 + "]", id="under half a step rounds down"),
    pytest.param(50.0, "[" + "#" * 10 + "-" * 10 + "]", id="half"),
    pytest.param(100.0, "[" + "#" * 20 + "]", id="full"),
    pytest.param(130.0, "[" + "#" * 20 + "]", id="clamped above"),
    pytest.param(-5.0, "[" + "-" * 20 + "]", id="clamped below"),
])
def test_plain_bar(percent: float, bar: str) -> None:
    assert dashboard.plain_bar(percent) == bar


@pytest.mark.parametrize("given, url", [
    pytest.param("http://127.0.0.1:9464", "http://127.0.0.1:9464", id="as is"),
    pytest.param("127.0.0.1:9464", "http://127.0.0.1:9464", id="HOST:PORT"),
    pytest.param("https://mon.example.com/agent/", "https://mon.example.com/agent", id="a prefix, no trailing slash"),
])
def test_agent_url(given: str, url: str) -> None:
    assert dashboard.agent_url(given) == url


def test_every_problem_is_listed_and_ok_checks_only_fill_the_table() -> None:
    data = snapshot(["OK"] * 40 + ["CRITICAL"] + [None] * 2)
    lines = dashboard.render_plain(data, "full").split("Checks: 43\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[0] for line in lines[1:3]] == ["CRITICAL", "OK"]
    assert len(lines) == 1 + dashboard.MAX_CHECK_ROWS + 1
    assert lines[-1] == "... and 13 more without a problem"


def test_the_dashboard_module_does_not_import_rich_until_it_draws() -> None:
    code = ("import sys, ce_agent.dashboard as d; d.render_plain(d._empty('x', 0.0), 'full'); "
            "print('rich' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


@pytest.mark.parametrize("mode", [pytest.param("full", id="full"), pytest.param("compact", id="compact"),
                                  pytest.param("minimal", id="minimal")])
def test_a_narrow_terminal_never_splits_a_status_a_number_or_a_header(mode: str) -> None:
    from rich.console import Console

    data = snapshot(["CRITICAL", "WARNING"], [{"state": "firing", "labels": {
        "alertname": "SLOBurnRate", "slo": "checkout-availability-for-the-whole-web-shop", "severity": "critical",
        "host": "a-rather-long-host-name.example.com"}}], slos=["breached"])
    data["slos"][0].update(sli=95.9091, budget_left=-39.913, host="a-rather-long-host-name.example.com")
    data["checks"][0].update(summary="CRITICAL - the database answered after 12.5 seconds, far above the limit")
    console = Console(file=io.StringIO(), width=60, color_system=None, legacy_windows=False)
    dashboard.render_rich(data, mode, console)
    lines = console.file.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 60
    text = "\n".join(lines)
    if mode == "minimal":
        assert len(lines) == 1 and lines[0].startswith("ce-agent: 2 checks")
        return
    for whole in ("OBJECTIVE", "BUDGET LEFT", "breached", "95.909%", "-3991.3%", "CRITICAL", "SEVERITY", "critical"):
        assert whole in text, (whole, text)
