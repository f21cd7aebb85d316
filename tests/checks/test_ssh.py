"""`command` checks over ssh, through the real `ce-agent run`, against a real sshd started on 127.0.0.1."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from ce_agent import remote
from tests.checks.conftest import NAGIOS_PLUGINS
from tests.conftest import Agent

DUMMY = f"{NAGIOS_PLUGINS}/check_dummy"
SECRET = "s3cret-Passw0rd"
#: sshd lets in only the user it runs as, unless it runs as root: we log in as ourselves either way
USER = pwd.getpwuid(os.geteuid()).pw_name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True)
    return path


@dataclass
class SSHServer:
    """A throwaway sshd on 127.0.0.1 that lets `client_key` in as USER, logging every connection."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path
    host_key: Path
    client_key: Path

    def log_count(self, text: str) -> int:
        return self.log.read_text().count(text)

    def descendants(self) -> list[psutil.Process]:
        """What runs under this sshd: its sessions and the remote commands they started."""
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def remote_processes(self, marker: str) -> list[psutil.Process]:
        found = []
        for proc in self.descendants():
            try:
                if marker in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except psutil.NoSuchProcess:
                continue
        return found


@pytest.fixture
def sshd(tmp_path: Path, sshd_binary: Path, nagios_plugins: Path) -> Iterator[SSHServer]:
    folder = tmp_path / "sshd"
    folder.mkdir()
    host_key = keygen(folder / "host_key")
    client_key = keygen(tmp_path / "client_key")
    (folder / "authorized_keys").write_text((tmp_path / "client_key.pub").read_text())
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(textwrap.dedent(f"""\
        ListenAddress 127.0.0.1
        Port {port}
        HostKey {host_key}
        AuthorizedKeysFile {folder}/authorized_keys
        PidFile {folder}/sshd.pid
        UsePAM no
        StrictModes no
        PermitRootLogin prohibit-password
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        LogLevel VERBOSE
        # a login shell such as bash reads ~/.bashrc for ssh commands; the user's own may print noise
        SetEnv HOME={folder}
        """))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # root's sshd needs its privilege separation directory
    log = folder / "sshd.log"
    process = subprocess.Popen([str(sshd_binary), "-D", "-e", "-f", str(config), "-E", str(log)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = SSHServer(port, process, log, host_key, client_key)
    deadline = time.monotonic() + 10
    while not (log.exists() and "Server listening" in log.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"sshd did not start: {log.read_text() if log.exists() else 'no log'}")
        time.sleep(0.05)
    try:
        yield server
    finally:
        state = tmp_path / "state"
        remote.close_masters(state)
        sessions = server.descendants()
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for proc in sessions:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        shutil.rmtree(remote.control_dir(state, create=False), ignore_errors=True)


def ssh_vars(server: SSHServer, **extra: Any) -> dict[str, Any]:
    return {
        "ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": server.port,
        "ansible_user": USER, "ansible_ssh_private_key_file": str(server.client_key), **extra,
    }


def write(agent: Agent, host_vars: dict[str, Any], checks: list[dict[str, Any]], play_vars: dict[str, Any] | None = None
          ) -> None:
    agent.write("inventory.yml", yaml.safe_dump({"all": {"hosts": {"box": host_vars}}}))
    play = {"name": "Remote", "hosts": "box", "checks": checks}
    if play_vars:
        play["vars"] = play_vars
    agent.write("site.yml", yaml.safe_dump([play], sort_keys=False))


def run(agent: Agent, *args: str) -> tuple[int, dict[str, Any], str]:
    ran = agent("run", "site.yml", "-i", "inventory.yml", "--format", "json", *args)
    assert "Traceback" not in ran.err, ran.err
    try:
        return ran.code, ran.json(), ran.err
    except ValueError:
        pytest.fail(f"no JSON report (exit {ran.code}): {ran.out}\n{ran.err}")


# --- real plugins over ssh ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "status", "summary"),
    [
        pytest.param({"argv": [DUMMY, "0", "all good"]}, "OK", "OK: all good", id="check_dummy 0 is OK"),
        pytest.param({"argv": [DUMMY, "1", "slow"]}, "WARNING", "WARNING: slow", id="check_dummy 1 is WARNING"),
        pytest.param({"argv": [DUMMY, "2", "down"]}, "CRITICAL", "CRITICAL: down", id="check_dummy 2 is CRITICAL"),
        pytest.param({"argv": [DUMMY, "3", "no idea"]}, "UNKNOWN", "UNKNOWN: no idea", id="check_dummy 3 is UNKNOWN"),
        pytest.param(f"{DUMMY} 2 'two words and \"quotes\"'", "CRITICAL", 'CRITICAL: two words and "quotes"',
                     id="free-form cmd with quotes"),
        pytest.param({"argv": ["printf", "[%s]", "a b", "it's", '"q"', "$HOME", "*", ";", "&&", "`id`", ""]},
                     "OK", "[a b][it's][\"q\"][$HOME][*][;][&&][`id`][]", id="argv words reach the remote command as they are"),
        pytest.param({"argv": ["sh", "-c", 'echo "$GREETING in $(pwd)"'], "env": {"GREETING": "hello, 'world'"},
                      "cwd": "/usr"}, "OK", "hello, 'world' in /usr", id="env and cwd apply remotely"),
        pytest.param({"argv": ["/nonexistent/check_nothing"]}, "UNKNOWN", None, id="a missing remote program"),
        pytest.param({"argv": ["true"], "cwd": "/nonexistent"}, "UNKNOWN", None, id="a missing remote directory"),
        pytest.param({"argv": ["sh", "-c", "echo bye; exit 255"]}, "UNKNOWN",
                     "exit code 255 (ssh or the remote command): bye", id="the remote command exits 255"),
    ],
)
def test_remote_statuses(tmp_path: Path, sshd: SSHServer, task: Any, status: str, summary: str | None) -> None:
    agent = Agent(tmp_path)
    write(agent, ssh_vars(sshd), [{"name": "remote", "command": task}])
    code, report, _ = run(agent)
    (result,) = report["results"]
    assert (result["status"], code) == (status, {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}[status]), result
    if summary is not None:
        assert result["summary"] == summary
    assert sshd.log_count(f"Accepted publickey for {USER} ") == 1


def test_perfdata_of_a_remote_plugin(tmp_path: Path, sshd: SSHServer) -> None:
    agent = Agent(tmp_path)
    write(agent, ssh_vars(sshd), [
        {"name": "load", "command": f"{NAGIOS_PLUGINS}/check_load -w 1000,1000,1000 -c 2000,2000,2000"},
        {"name": "threshold", "command": {"argv": ["echo", "OK - queue | queue=42;;;0"], "critical": 10}},
    ])
    code, report, _ = run(agent)
    load, threshold = report["results"]
    assert load["status"] == "OK" and load["summary"].startswith("LOAD OK - total load average:"), load
    assert [(m["name"], m["warn"], m["crit"], m["min"]) for m in load["metrics"]] == [
        ("load1", "1000.000", "2000.000", 0), ("load5", "1000.000", "2000.000", 0), ("load15", "1000.000", "2000.000", 0)
    ]
    assert (threshold["status"], threshold["metrics"][0]["value"]) == ("CRITICAL", 42), threshold
    assert code == 2


def test_checks_share_one_connection_within_and_across_runs(tmp_path: Path, sshd: SSHServer) -> None:
    agent = Agent(tmp_path)
    checks = [{"name": f"c{i}", "command": {"argv": [DUMMY, "0", f"check {i}"]}} for i in range(6)]
    write(agent, ssh_vars(sshd), checks)
    for attempt in range(2):
        code, report, _ = run(agent)  # forks 10: the six checks start together
        assert code == 0, report
        assert [r["summary"] for r in report["results"]] == [f"OK: check {i}" for i in range(6)]
        # one TCP connection and one login for all of them, the second run included
        assert sshd.log_count("Connection from 127.0.0.1") == 1, sshd.log.read_text()
        assert sshd.log_count(f"Accepted publickey for {USER} ") == 1
        assert sshd.log_count("Starting session: command") == 1 + 6 * (attempt + 1)
    # what stays after `ce-agent run`: one master, in a private directory, until ControlPersist ends
    (socket_path,) = remote.masters(tmp_path / "state")
    assert socket_path.parent.stat().st_mode & 0o777 == 0o700
    assert len(str(socket_path)) <= 100
    # the host key was accepted on first use, into the agent's own known_hosts (hashed, as Debian's ssh_config says)
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{sshd.port}", "-f", str(tmp_path / "state/ssh/known_hosts")],
                           capture_output=True, text=True, check=True).stdout
    assert sshd.host_key.with_suffix(".pub").read_text().split()[1] in found
    master = [p for p in psutil.process_iter(["cmdline"]) if str(socket_path) in " ".join(p.info["cmdline"] or [])]
    assert len(master) == 1
    assert remote.close_masters(tmp_path / "state") == 1
    master[0].wait(timeout=5)
    assert list(remote.masters(tmp_path / "state")) == []


def test_runs_at_the_same_time_share_one_connection(tmp_path: Path, sshd: SSHServer) -> None:
    # a cron `ce-agent run` and the daemon with the same state directory: two processes, one login
    agent = Agent(tmp_path)
    write(agent, ssh_vars(sshd), [{"name": f"c{i}", "command": {"argv": [DUMMY, "1", f"c{i}"]}} for i in range(3)])
    env = {**os.environ, "CE_AGENT_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": ""}
    procs = [subprocess.Popen([sys.executable, "-m", "ce_agent", "run", "site.yml", "-i", "inventory.yml"], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, out + err
    assert sshd.log_count("Connection from 127.0.0.1") == 1, sshd.log.read_text()
    assert sshd.log_count("Starting session: command") == 1 + 2 * 3


def test_the_daemon_shares_one_connection_and_closes_it_when_it_stops(tmp_path: Path, sshd: SSHServer) -> None:
    from tests.agentproc import AgentProcess

    agent = Agent(tmp_path)
    write(agent, ssh_vars(sshd), [{"name": "remote", "command": {"argv": [DUMMY, "2", "down"]}, "interval": "1s"}])
    proc = AgentProcess(tmp_path, ["site.yml", "-i", "inventory.yml", "--listen", "127.0.0.1:0"]).started()
    try:
        labels = {"check": "remote", "host": "box", "play": "Remote"}
        proc.wait_for(lambda: (proc.metric("ce_check_runs_total", status="critical", **labels) or 0) >= 3, 20,
                      "three runs over ssh")
        assert sshd.log_count("Connection from 127.0.0.1") == 1, sshd.log.read_text()
        (socket_path,) = remote.masters(tmp_path / "state")
        master = [p for p in psutil.process_iter(["cmdline"]) if str(socket_path) in " ".join(p.info["cmdline"] or [])]
        assert proc.stop() == 0
        psutil.wait_procs(master, timeout=5)
        assert not any(p.is_running() for p in master), "the agent's ssh master outlived it"
        assert list(remote.masters(tmp_path / "state")) == []
    finally:
        proc.kill()


def test_a_hanging_remote_command_is_killed_there_too(tmp_path: Path, sshd: SSHServer) -> None:
    agent = Agent(tmp_path)
    # a shell that waits for two sleeps: the process group is killed, not just the first process
    script = "sleep 61.4242 & sleep 62.4242; :"
    write(agent, ssh_vars(sshd), [{"name": "hang", "command": {"argv": ["sh", "-c", script]}, "timeout": "2s"}])
    env = {**os.environ, "CE_AGENT_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": ""}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "ce_agent", "run", "site.yml", "-i", "inventory.yml", "--format",
                             "json"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while len(sshd.remote_processes(".4242")) < 3 and proc.poll() is None:  # sh and both sleeps
            time.sleep(0.05)
        assert {" ".join(p.cmdline()) for p in sshd.remote_processes(".4242") if p.name() == "sleep"} == {
            "sleep 61.4242", "sleep 62.4242"}
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    (result,) = json.loads(out)["results"]
    assert (proc.returncode, result["status"], result["summary"]) == (3, "UNKNOWN", "timed out after 2s"), err
    assert time.monotonic() - started < 15
    deadline = time.monotonic() + 5
    while sshd.remote_processes(".4242") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sshd.remote_processes(".4242") == []


# --- failures are UNKNOWN, said plainly -----------------------------------------------------------


def closed_port(server: SSHServer, tmp_path: Path) -> dict[str, Any]:
    return ssh_vars(server, ansible_port=free_port())


def wrong_key(server: SSHServer, tmp_path: Path) -> dict[str, Any]:
    return ssh_vars(server, ansible_ssh_private_key_file=str(keygen(tmp_path / "stranger_key")))


def no_ssh_client(server: SSHServer, tmp_path: Path) -> dict[str, Any]:
    return ssh_vars(server, ansible_ssh_executable="/nonexistent/ssh")


def changed_host_key(server: SSHServer, tmp_path: Path) -> dict[str, Any]:
    other = keygen(tmp_path / "other_host_key").with_suffix(".pub").read_text().split()
    known = tmp_path / "state" / "ssh" / "known_hosts"
    known.parent.mkdir(parents=True)
    known.write_text(f"[127.0.0.1]:{server.port} {other[0]} {other[1]}\n")
    return ssh_vars(server)


@pytest.mark.parametrize(
    ("make_vars", "summary"),
    [
        pytest.param(closed_port, "ssh: connection refused ({user}@127.0.0.1 port {port})", id="closed port"),
        pytest.param(wrong_key, "ssh: authentication failed ({user}@127.0.0.1 port {port})", id="key not authorized"),
        pytest.param(changed_host_key, "ssh: host key verification failed ({user}@127.0.0.1 port {port})",
                     id="host key changed"),
        pytest.param(no_ssh_client, "ssh: cannot run /nonexistent/ssh: No such file or directory", id="no ssh client"),
    ],
)
def test_ssh_failures_are_unknown(tmp_path: Path, sshd: SSHServer, make_vars: Any, summary: str) -> None:
    agent = Agent(tmp_path)
    host_vars = make_vars(sshd, tmp_path)
    write(agent, host_vars, [{"name": "remote", "command": {"argv": [DUMMY, "2", "down"]}}])
    code, report, _ = run(agent)
    (result,) = report["results"]
    assert (code, result["status"]) == (3, "UNKNOWN"), result
    assert result["summary"] == summary.format(user=USER, port=host_vars["ansible_port"])
    if make_vars is not no_ssh_client:
        assert result["details"], "ssh's own message is kept in the details"


def test_connection_variables_from_play_vars_are_checked_when_run(tmp_path: Path, sshd: SSHServer) -> None:
    agent = Agent(tmp_path)
    host_vars = {"ansible_host": "127.0.0.1", "ansible_ssh_private_key_file": str(sshd.client_key)}
    checks = [{"name": "remote", "command": {"argv": [DUMMY, "1", "from play vars"]}},
              {"name": "bad port", "command": {"argv": [DUMMY, "0", "never"]}, "vars": {"ansible_port": 70000}}]
    write(agent, host_vars, checks, play_vars={"connection": "ssh", "ansible_user": USER,
                                               "ansible_port": "{{ %d }}" % sshd.port})
    code, report, _ = run(agent)
    good, bad = report["results"]
    assert (good["status"], good["summary"]) == ("WARNING", "WARNING: from play vars")
    assert (bad["status"], bad["summary"]) == ("UNKNOWN", "ansible_port: must be a port number from 1 to 65535, got 70000")
    assert code == 3


def test_a_local_host_runs_commands_locally(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    write(agent, {"connection": "local", "ansible_port": 1}, [{"name": "here", "command": "hostname"}])
    code, report, _ = run(agent)
    (result,) = report["results"]
    assert (code, result["summary"]) == (0, socket.gethostname())


# --- user errors in the inventory ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "inventory", "where", "message"),
    [
        pytest.param("inventory.yml", "all:\n  hosts:\n    box:\n      ansible_connection: ssh\n"
                     "      ansible_port: abc\n      ansible_password: {secret}\n",
                     ":5:21:", "ansible_port: must be a port number from 1 to 65535, got 'abc'", id="port not a number"),
        pytest.param("inventory.yml", "all:\n  vars:\n    ansible_port: 70000\n    ansible_password: {secret}\n",
                     ":3:19:", "ansible_port: must be a port number from 1 to 65535, got 70000", id="port too big"),
        pytest.param("inventory.yml", "all:\n  hosts:\n    box: {{connection: telnet, ansible_password: {secret}}}\n",
                     ":3:23:", "connection: 'telnet' is not supported; use local or ssh",
                     id="connection telnet"),
        pytest.param("inventory.yml", "all:\n  hosts:\n    box:\n      connection: 'postgres://me:{secret}@db/x'\n",
                     ":4:19:", "connection: must be local or ssh",
                     id="a connection string is not shown"),
        pytest.param("inventory.yml", "all:\n  hosts:\n    box:\n      ansible_ssh_common_args: \"-o 'ProxyJump=a\"\n",
                     ":4:32:", "ansible_ssh_common_args: cannot split it like a shell would: No closing quotation",
                     id="unbalanced quote in ssh args"),
        pytest.param("hosts.ini", "box ansible_connection=paramiko ansible_password={secret}\n",
                     ":1:1:", "ansible_connection: 'paramiko' is not supported; use local or ssh",
                     id="INI host line"),
        pytest.param("hosts.ini", "[web]\nbox\n[web:vars]\nansible_port=port22\nansible_ssh_pass={secret}\n",
                     ":4:1:", "ansible_port: must be a port number from 1 to 65535, got 'port22'",
                     id="INI group vars"),
    ],
)
def test_bad_connection_variables_are_located_errors(
    tmp_path: Path, name: str, inventory: str, where: str, message: str
) -> None:
    agent = Agent(tmp_path)
    agent.write(name, inventory.format(secret=SECRET))
    agent.write("site.yml", "- hosts: all\n  checks:\n    - command: hostname\n")
    for command in (["run", "site.yml", "-i", name], ["validate", "site.yml", "-i", name]):
        ran = agent(*command)
        assert ran.code == 2, (ran.out, ran.err)
        lines = ran.err.strip().splitlines()
        assert lines[0] == f"{name}{where} {message}", ran.err
        assert "Traceback" not in ran.err and SECRET not in ran.err + ran.out


# --- the control directory ------------------------------------------------------------------------


def test_control_directory_is_short_and_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 6)
    directory = remote.control_dir(deep)
    try:
        assert len(str(directory / ("x" * 16))) + 17 <= 104
        assert directory.stat().st_mode & 0o777 == 0o700 and directory.parent.stat().st_mode & 0o777 == 0o700
        assert remote.control_dir(deep) == directory != remote.control_dir(tmp_path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(remote.control_dir(tmp_path), ignore_errors=True)
    # someone else's (or a world-writable) directory is refused, not used
    runtime = Path("/tmp") / f"cer{os.getpid()}"  # short enough for sockets, unlike tmp_path
    runtime.mkdir()
    try:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        shared = runtime / f"ce-agent-ssh-{os.geteuid()}"
        shared.mkdir()
        shared.chmod(0o777)
        with pytest.raises(remote.RemoteError, match="not a private directory"):
            remote.control_dir(tmp_path)
    finally:
        shutil.rmtree(runtime)


def test_remote_command_line_is_quoted_and_bounded() -> None:
    target = remote.SSHTarget(host="web1", user="ops", port=2222, key_file="/k", args=("-o", "ProxyJump=bastion"))
    session = remote.SSHSession(target, None, timeout=9.5)
    argv = session.command(["check_x", "a b", "it's"], {"LC_ALL": "C"}, None)
    assert argv[:7] == ["ssh", "-l", "ops", "-p", "2222", "-i", "/k"]
    assert argv[7:9] == ["-o", "ProxyJump=bastion"]  # before the defaults: the user's options win
    assert "ConnectTimeout=7" in argv and "BatchMode=yes" in argv and "ControlMaster=no" in argv
    assert argv[-3:-1] == ["--", "web1"]
    assert argv[-1] == "timeout -s KILL 10 env LC_ALL=C check_x 'a b' 'it'\"'\"'s'"
    shutil.rmtree(remote.control_dir(None, create=False), ignore_errors=True)

