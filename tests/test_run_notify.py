"""`ce-agent run` notifies: one message per channel for each check that is not OK, through Apprise."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Agent
from tests.receivers import SmtpServer, Webhook

CANARY = "Canary-Pa55-7Q2x"


def setup(agent: Agent, channels: dict[str, str], status: str = "CRITICAL", notify: str = "[hook]") -> None:
    lines = "".join(f"      {name}: {spec}\n" for name, spec in channels.items())
    agent.write("inventory.yml", f"all:\n  vars:\n    channels:\n{lines}  hosts:\n    web1: {{address: 127.0.0.1}}\n")
    agent.write("site.yml", f"""\
        - name: Web
          hosts: web1
          checks:
            - name: Root disk
              fixed: {{status: {status}, summary: "/ 95.2% used", value: 95.2}}
              notify: {notify}
              severity: critical
              labels: {{team: ops}}
        """)


def test_a_problem_goes_to_the_webhook(agent: Agent, webhook: Webhook) -> None:
    setup(agent, {"hook": f'"{webhook.url()}"'})
    ran = agent("run", "site.yml", "-i", "inventory.yml", "--format", "json")
    assert ran.code == 2, ran.err
    (request,) = webhook.requests
    payload = request.json()
    assert payload["title"] == "[CRITICAL] Root disk on web1"
    assert payload["type"] == "failure"
    body = payload["message"]
    for line in ["/ 95.2% used", "Host: web1", "Play: Web", "Check: Root disk", "Severity: critical",
                 "Metrics: fixed_value=95.2"]:
        assert line in body
    assert ran.json()["notifications"] == [
        {"channel": "hook", "title": "[CRITICAL] Root disk on web1", "body": body, "sent": True, "error": None}
    ]


def test_nothing_is_sent_for_an_ok_check(agent: Agent, webhook: Webhook) -> None:
    setup(agent, {"hook": f'"{webhook.url()}"'}, status="OK")
    ran = agent("run", "site.yml", "-i", "inventory.yml", "--format", "json")
    assert ran.code == 0
    assert webhook.requests == []
    assert ran.json()["notifications"] == []


def test_check_mode_renders_and_sends_nothing(agent: Agent, webhook: Webhook) -> None:
    setup(agent, {"hook": f'"{webhook.url()}"'}, status="WARNING")
    ran = agent("run", "site.yml", "-i", "inventory.yml", "--check")
    assert ran.code == 1
    assert webhook.requests == []
    assert "[WARNING] Root disk on web1  -> would send" in ran.out
    assert "| Host: web1" in ran.out
    ran = agent("run", "site.yml", "-i", "inventory.yml", "--check", "--format", "json")
    (note,) = ran.json()["notifications"]
    assert (note["sent"], note["error"]) == (False, None)


def test_mail_through_smtp(agent: Agent, smtp_server: SmtpServer) -> None:
    url = (f"mailto://{smtp_server.user}:{smtp_server.password}@127.0.0.1:{smtp_server.port}"
           "?from=agent@example.com&to=ops@example.com&mode=insecure")
    setup(agent, {"mail": f'"{url}"'}, notify="[mail]")
    ran = agent("run", "site.yml", "-i", "inventory.yml")
    assert ran.code == 2, ran.err
    (message,) = smtp_server.messages
    assert message["Subject"] == "[CRITICAL] Root disk on web1"
    assert smtp_server.password not in ran.out + ran.err


def test_a_channel_with_several_urls_and_several_channels(agent: Agent, webhook: Webhook, tmp_path) -> None:
    setup(
        agent,
        {"both": json.dumps([webhook.url(path="/a"), webhook.url(path="/b")]), "log": "{file: {path: alerts.jsonl}}"},
        notify="[both, log]",
    )
    ran = agent("run", "site.yml", "-i", "inventory.yml", "--format", "json")
    assert sorted(r.path for r in webhook.requests) == ["/a", "/b"]
    (line,) = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert json.loads(line)["title"] == "[CRITICAL] Root disk on web1"
    # each URL of a channel is a delivery of its own
    assert [(n["channel"], n["sent"]) for n in ran.json()["notifications"]] == [("both", True), ("both", True), ("log", True)]


@pytest.mark.parametrize(
    "status, expected_error",
    [pytest.param(500, "failed", id="the receiver answers 500")],
)
def test_a_failing_receiver_is_reported(agent: Agent, webhook: Webhook, status: int, expected_error: str) -> None:
    webhook.status = status
    setup(agent, {"hook": f'"{webhook.url()}"'})
    ran = agent("run", "site.yml", "-i", "inventory.yml", "--format", "json")
    assert ran.code == 2  # the check's status, whatever happened to the message
    (note,) = ran.json()["notifications"]
    assert note["sent"] is False
    assert expected_error in note["error"]


def test_a_down_channel_never_shows_its_password(agent: Agent, dead_port: int, webhook: Webhook) -> None:
    """Every channel fails, at -v, with the password in the URL and in the environment: never printed."""
    setup(
        agent,
        {"down": f'"json://alerts:{CANARY}@127.0.0.1:{dead_port}/hook"',
         "envsecret": f'"json://alerts:{{{{ env.HOOK_PASSWORD }}}}@127.0.0.1:{dead_port}/x"',
         "bad": '"mailto://u:' + CANARY + '@127.0.0.1?mode=bogus"'},
        notify="[down, envsecret, bad]",
    )
    for index, args in enumerate((["-v"], ["-v", "--format", "json"], ["-v", "--check"])):
        state = {"CE_AGENT_STATE_DIR": str(agent.cwd / f"state-{index}")}  # each run notifies anew
        ran = agent("run", "site.yml", "-i", "inventory.yml", *args, env={"HOOK_PASSWORD": "Env-" + CANARY, **state})
        assert ran.code == 2, ran.err
        assert CANARY not in ran.out and CANARY not in ran.err, (args, ran.out, ran.err)
        assert "Traceback" not in ran.err
    fresh = {"HOOK_PASSWORD": "Env-" + CANARY, "CE_AGENT_STATE_DIR": str(agent.cwd / "fresh-state")}
    ran = agent("run", "site.yml", "-i", "inventory.yml", "--format", "json", env=fresh)
    notes = ran.json()["notifications"]
    assert [n["channel"] for n in notes] == ["down", "envsecret", "bad"]
    assert "warning: down: [CRITICAL] Root disk on web1: not delivered yet, will retry:" in ran.err
    assert [n["sent"] for n in notes] == [False, False, False]
    # nor in the state: the database, its WAL, anything in the state directories
    for path in agent.cwd.rglob("*"):
        if path.is_file() and ("state" in path.parts[-2] or path.name.startswith("state.db")):
            assert CANARY.encode() not in path.read_bytes(), path
    assert all(n["error"] for n in notes)


def test_a_secret_in_a_metric_label_reaches_no_channel(agent: Agent, webhook: Webhook, tmp_path) -> None:
    """The http check labels its metrics with the URL; a token templated into it is masked everywhere."""
    agent.write("inventory.yml", "all:\n  vars:\n    channels:\n      log: {file: {path: alerts.jsonl}}\n"
                "      screen: {console: {}}\n  hosts:\n    localhost: {}\n")
    agent.write("site.yml", f"""\
        - hosts: localhost
          checks:
            - name: Token page
              http: {{url: "{webhook.url(scheme='http', path='/nope')}?token={{{{ env.API_TOKEN }}}}", expect_status: 200}}
              notify: [log, screen]
        """)
    ran = agent("run", "site.yml", "-i", "inventory.yml", "-v", env={"API_TOKEN": "CANARYTOKEN987"})
    assert ran.code == 2, ran.err
    written = (tmp_path / "alerts.jsonl").read_text()
    assert "token=****" in written
    for text in (ran.out, ran.err, written):
        assert "CANARYTOKEN987" not in text


def test_json_output_stays_json_when_the_console_channel_prints(agent: Agent) -> None:
    setup(agent, {"screen": "{console: {}}"}, notify="[screen]")
    ran = agent("run", "site.yml", "-i", "inventory.yml", "--format", "json")
    assert ran.code == 2
    assert ran.json()["notifications"][0]["sent"] is True
    assert "[CRITICAL] Root disk on web1" in ran.err  # the console notifier's output went to stderr


def test_channels_follow_play_and_task_vars(agent: Agent, webhook: Webhook) -> None:
    agent.write("inventory.yml", "all:\n  vars:\n    channels:\n"
                f"      team: \"{webhook.url(path='/')}{{{{ team }}}}\"\n  hosts:\n    localhost: {{}}\n")
    agent.write("site.yml", """\
        - name: A
          hosts: localhost
          vars: {team: alpha}
          checks:
            - {name: a, fixed: {status: WARNING}, notify: [team]}
            - {name: g, fixed: {status: WARNING}, notify: [team], vars: {team: gamma}}
        - name: B
          hosts: localhost
          vars: {team: beta}
          checks:
            - {name: b, fixed: {status: WARNING}, notify: [team]}
        """)
    ran = agent("run", "site.yml", "-i", "inventory.yml")
    assert ran.code == 1, ran.err
    assert sorted(r.path for r in webhook.requests) == ["/alpha", "/beta", "/gamma"]


def test_a_plugin_traceback_is_not_sent(agent: Agent, webhook: Webhook) -> None:
    agent.write("inventory.yml", f"all:\n  vars:\n    channels:\n      hook: \"{webhook.url()}\"\n  hosts:\n    localhost: {{}}\n")
    agent.write("site.yml", "- hosts: localhost\n  checks:\n    - {name: r, raises: {message: kaputt}, notify: [hook]}\n")
    ran = agent("run", "site.yml", "-i", "inventory.yml", "-v")
    assert ran.code == 3
    assert "Traceback" in ran.out  # -v shows it to the operator
    (request,) = webhook.requests
    assert "RuntimeError: kaputt" in request.json()["message"]
    assert "Traceback" not in request.json()["message"]
