"""Secrets never leave (issue 7, point 5): canary passwords and tokens in channel URLs, `env` and `file`
lookups, every channel failing, at -v: zero occurrences in stdout, stderr, the log file, /metrics,
/api/v1/*, the status page, the state database (and its WAL) and what the receivers are sent.

One test drives every command that prints something over one state directory, then a real daemon
over the same files; a second part checks the warning for an inventory others can read that holds a
secret written out. Narrower proofs of the same guarantee, not repeated here:
tests/test_run_notify.py::test_a_down_channel_never_shows_its_password,
tests/test_agent.py::test_logs_are_json_lines_with_check_host_and_play_and_never_a_secret,
tests/test_run.py::test_env_and_file_lookups_are_redacted, tests/notifiers/test_redact.py."""

from __future__ import annotations

import base64
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.agentproc import AgentProcess
from tests.conftest import Agent
from tests.receivers import SmtpServer, Webhook


def _canary(kind: str) -> str:
    # letters and digits, long enough that every rule of ce_agent/redact.py takes it for a token
    return f"Cnry{kind}{secrets.token_hex(8)}"


@pytest.fixture
def canaries() -> dict[str, str]:
    return {
        "url password": _canary("Pw") + "+/=",  # written percent-encoded in the URL, as a user must
        "url path token": _canary("Path"),
        "url query token": _canary("Query"),
        "mail password": _canary("Mail"),
        "env lookup": _canary("Env"),
        "file lookup": _canary("File"),
    }


def forms(canary: str) -> set[bytes]:
    """The ways a secret can be written: as is, percent-encoded, and base64 (alone, and as HTTP basic auth)."""
    found = {canary, quote(canary, safe=""), quote(canary)}
    for text in (canary, f"alerts:{canary}", f"bob:{canary}"):
        found.add(base64.b64encode(text.encode()).decode().rstrip("="))
    return {f.encode() for f in found}


def assert_no_canary(where: str, data: bytes | str, canaries: dict[str, str]) -> None:
    blob = data.encode() if isinstance(data, str) else data
    for name, canary in canaries.items():
        for form in forms(canary):
            assert form not in blob, f"the {name} canary ({form!r}) is in {where}"


def _inventory(canaries: dict[str, str], dead_port: int, webhook: Webhook, smtp: SmtpServer) -> str:
    password = quote(canaries["url password"], safe="")
    return f"""\
all:
  vars:
    channels:
      down: "json://alerts:{password}@127.0.0.1:{dead_port}/hook"
      refused: "json://127.0.0.1:{webhook.port}/hooks/{canaries['url path token']}?token={canaries['url query token']}"
      envpw: "json://bob:{{{{ env.CANARY_ENV | urlquote }}}}@127.0.0.1:{webhook.port}/env"
      filetoken: "json://127.0.0.1:{dead_port}/t/{{{{ file('token.txt') }}}}"
      mail: "mailto://{smtp.user}:{canaries['mail password']}@127.0.0.1:{smtp.port}?from=a@example.com&to=ops@example.com&mode=insecure"
  hosts:
    localhost: {{}}
"""


PLAYBOOK = """\
- name: Leaky
  hosts: localhost
  checks:
    - name: env check
      fixed: {status: CRITICAL, summary: "env says {{ env.CANARY_ENV }}"}
      labels: {token: "{{ env.CANARY_ENV }}"}
      notify: [down, refused, envpw, filetoken, mail]
      interval: 1s
    - name: file check
      fixed: {status: WARNING, summary: "file says {{ file('token.txt') }}"}
      labels: {secret: "{{ file('token.txt') }}"}
      notify: [down, refused, envpw, filetoken, mail]
      interval: 1s
    - name: raising check
      raises: {message: "boom {{ env.CANARY_ENV }} {{ file('token.txt') }}"}
      notify: [down, refused]
      interval: 1s
"""

CHANNELS = ("down", "refused", "envpw", "filetoken", "mail")


def test_canaries_appear_nowhere_with_every_channel_failing(
    agent: Agent, test_plugins: Path, canaries: dict[str, str], dead_port: int, webhook: Webhook,
    smtp_server: SmtpServer,
) -> None:
    webhook.status = 500
    agent.write("inventory.yml", _inventory(canaries, dead_port, webhook, smtp_server))
    agent.write("site.yml", PLAYBOOK)
    agent.write("token.txt", canaries["file lookup"] + "\n")
    env = {"CANARY_ENV": canaries["env lookup"]}
    printed: list[tuple[str, str]] = []

    def ce_agent(*args: str) -> int:
        ran = agent(*args, env=env, timeout=120)
        assert "Traceback" not in ran.err, ran.err
        printed.append((" ".join(args), ran.out + ran.err))
        return ran.code

    files = ("site.yml", "-i", "inventory.yml")
    assert ce_agent("validate", *files) == 0
    for attempt in range(3):  # again and again: the outbox retries what failed, with its errors stored
        assert ce_agent("run", *files, "-v") == 2
        webhook.status = 400 if attempt == 0 else 500  # a refusal, then a server error
    assert ce_agent("run", *files, "--format", "json", "-v") == 2
    assert ce_agent("run", *files, "--check", "-v") == 2
    for channel in CHANNELS:
        assert ce_agent("notify", "test", channel, "-i", "inventory.yml") == 2
    for command in (["alerts", "list"], ["alerts", "list", "--format", "json"], ["alerts", "history"],
                    ["alerts", "history", "--format", "json"]):
        assert ce_agent(*command) == 0
    assert any("not delivered yet" in out for _, out in printed)  # the channels did fail, and it was said
    # the lookups did reach the output, masked: a canary missing for want of being printed proves nothing
    assert any("env says ****" in out and "file says ****" in out for _, out in printed)

    log = agent.cwd / "agent.log"
    proc = AgentProcess(agent.cwd, [*files, "--listen", "127.0.0.1:0", "--log-file", str(log), "-v"],
                        env={"PYTHONUNBUFFERED": "1", "CE_AGENT_STATE_DIR": str(agent.cwd / "state-daemon"), **env},
                        pythonpath=[test_plugins])  # a state of its own: its alerts are new, so it notifies
    try:
        record = proc.wait_for(lambda: log.exists() and "serving /metrics" in log.read_text() and log.read_text(),
                               30, "the agent to listen")
        proc.port = int(record.split("serving /metrics", 1)[1].split('"', 1)[0].rsplit(":", 1)[1])
        proc.wait_for(lambda: "delivery to" in log.read_text() and "failed" in log.read_text(), 30,
                      "a failed delivery logged")
        served = {path: proc.get(path)[1] for path in ("/metrics", "/api/v1/status", "/api/v1/alerts", "/")}
        assert "Leaky" in served["/api/v1/status"] + served["/"]
        assert proc.stop() == 0
    finally:
        proc.kill()

    checked = 0
    for what, out in printed:
        assert_no_canary(f"the output of `ce-agent {what}`", out, canaries)
        checked += 1
    assert_no_canary("the daemon's stdout and stderr", "\n".join(proc.lines + proc.errors), canaries)
    assert_no_canary("the log file", log.read_bytes(), canaries)
    for path, body in served.items():
        assert_no_canary(f"GET {path}", body, canaries)
    state_files = [p for d in ("state", "state-daemon") for p in (agent.cwd / d).rglob("*") if p.is_file()]
    assert sum(p.name == "state.db" for p in state_files) == 2
    for path in state_files:
        assert_no_canary(str(path.relative_to(agent.cwd)), path.read_bytes(), canaries)
    # what the channels were told is output too: the summary's env and file values are masked there
    assert webhook.requests
    for request in webhook.requests:
        assert_no_canary(f"the message POSTed to {request.path}", request.body, canaries)
    assert smtp_server.messages == [] and smtp_server.logins  # the mail login was tried and refused


# -- an inventory others can read ---------------------------------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can enter (pytest's tmp_path is inside a 0700 directory of its own)."""
    path = Path(tempfile.mkdtemp(prefix="ce-agent-secrets-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


SECRET = "Wr1tten-0ut-Secret"
WARNED = "which other users can read (mode 0644): run `chmod 600 {file}` (or `chmod o-r`)"


@pytest.mark.parametrize(
    "file, text, mode, line",
    [
        pytest.param("inventory.yml", f'all:\n  vars:\n    channels:\n      ops: "json://bob:{SECRET}@127.0.0.1/x"\n'
                     "  hosts:\n    localhost: {}\n", 0o644, "inventory.yml:4:12: warning: the password of a URL",
                     id="a channel URL with a password, 0644: warned"),
        pytest.param("inventory.yml", 'all:\n  vars:\n    channels:\n      ops: "tgram://123456789:ABCdefGHIjkl/42"\n'
                     "  hosts:\n    localhost: {}\n", 0o644, "inventory.yml:4:12: warning: the token in the host of a URL",
                     id="a bot token in the host, 0644: warned"),
        pytest.param("inventory.yml", f'all:\n  vars:\n    channels:\n      ops: "json://127.0.0.1/x?token={SECRET}"\n'
                     "  hosts:\n    localhost: {}\n", 0o604, "inventory.yml:4:12: warning: the token in the query",
                     id="a token in the query, 0604: warned"),
        pytest.param("group_vars/all.yml", f"smtp_password: {SECRET}\n", 0o644,
                     "group_vars/all.yml:1:16: warning: the value of 'smtp_password'", id="a group_vars password: warned"),
        pytest.param("inventory.ini", f"[all:vars]\nansible_ssh_pass={SECRET}\n[web]\nlocalhost\n", 0o644,
                     "inventory.ini:2:1: warning: the value of 'ansible_ssh_pass'", id="an INI inventory: warned"),
        pytest.param("inventory.yml", f'all:\n  vars:\n    channels:\n      ops: "json://bob:{SECRET}@127.0.0.1/x"\n'
                     "  hosts:\n    localhost: {}\n", 0o640, None, id="readable by its group only: quiet"),
        pytest.param("inventory.yml", f'all:\n  vars:\n    channels:\n      ops: "json://bob:{SECRET}@127.0.0.1/x"\n'
                     "  hosts:\n    localhost: {}\n", 0o600, None, id="0600: quiet"),
        pytest.param("inventory.yml", 'all:\n  vars:\n    channels:\n      ops: "json://bob:{{ env.PW }}@127.0.0.1/x"\n'
                     "      mail: \"mailto://alerts@example.com\"\n"
                     "      hook: \"json://127.0.0.1:8080/alerts\"\n"
                     "    api_token: \"{{ file('/etc/token') }}\"\n"
                     "  hosts:\n    localhost: {}\n", 0o644, None, id="secrets read by env and file, 0644: quiet"),
    ],
)
def test_an_inventory_others_can_read_holding_a_secret_is_warned_about(
    shared_dir: Path, file: str, text: str, mode: int, line: str | None
) -> None:
    agent = Agent(shared_dir)
    path = shared_dir / "inv" / file
    path.parent.mkdir(parents=True, mode=0o755)
    (shared_dir / "inv").chmod(0o755)
    path.write_text(text)
    path.chmod(mode)
    agent.write("site.yml", "- hosts: localhost\n  checks:\n    - file: {path: .}\n")
    if file.startswith("group_vars/"):  # an inventory directory
        agent.write("inv/hosts.yml", "all:\n  hosts:\n    localhost: {}\n")
    inventory = "inv" if file.startswith("group_vars/") else f"inv/{file}"
    for command in ("validate", "run"):
        ran = agent(command, "site.yml", "-i", inventory, env={"PW": "x"}, timeout=60)
        assert ran.code == 0, ran.err  # a warning: every existing setup keeps working
        assert SECRET not in ran.out + ran.err
        warnings = [w for w in ran.err.splitlines() if "other users can read" in w]
        if line is None:
            assert warnings == []
        else:
            (warning,) = warnings
            assert warning.startswith(f"inv/{line}"), warning
            assert WARNED.format(file=f"inv/{file}").replace("0644", f"{mode:04o}") in warning, warning


def test_a_private_directory_keeps_a_readable_file_private(tmp_path: Path) -> None:
    """pytest's tmp_path lies in a 0700 directory: others cannot reach a 0644 file there, so no warning."""
    agent = Agent(tmp_path)
    agent.write("inventory.yml", f'all:\n  vars:\n    channels:\n      ops: "json://bob:{SECRET}@127.0.0.1/x"\n'
                "  hosts:\n    localhost: {}\n").chmod(0o644)
    agent.write("site.yml", "- hosts: localhost\n  checks:\n    - file: {path: .}\n")
    ran = agent("validate", "site.yml", "-i", "inventory.yml")
    assert (ran.code, ran.err) == (0, ""), ran.err


def test_the_warning_does_not_slow_loading(shared_dir: Path) -> None:
    """Judging files costs a few stat() calls and a walk of the data: 2,000 hosts load as fast as before."""
    agent = Agent(shared_dir)
    hosts = "".join(f"    h{i}: {{address: 127.0.0.1, password: \"{SECRET}{i}\"}}\n" for i in range(2000))
    agent.write("inventory.yml", f"all:\n  hosts:\n{hosts}").chmod(0o644)
    agent.write("site.yml", "- hosts: all\n  checks:\n    - file: {path: .}\n")
    started = time.monotonic()
    ran = agent("validate", "site.yml", "-i", "inventory.yml")
    assert ran.code == 0 and ran.err.count("other users can read") == 1, ran.err
    assert time.monotonic() - started < 10
