"""`ce-agent alerts`, `notify test` and `ping`: alert state read and changed from the command line."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import Agent, Ran
from tests.receivers import Webhook

CANARY = "Canary-Pa55-7Q2x"
KEY = 'check{check="Root disk",host="web1",play="Web"}'


def setup(agent: Agent, hook_url: str, status: str = "CRITICAL") -> None:
    """web1 with a `hook` channel, and a playbook whose `Root disk` check returns `status` and notifies hook."""
    agent.write("inventory.yml", f'all:\n  vars:\n    channels:\n      hook: "{hook_url}"\n'
                                 "  hosts:\n    web1: {address: 127.0.0.1}\n")
    agent.write("site.yml", f"""\
        - name: Web
          hosts: web1
          checks:
            - name: Root disk
              fixed: {{status: {status}, summary: "/ 95.2% used"}}
              notify: [hook]
              severity: critical
              labels: {{team: ops}}
        """)


def silence_id(ran: Ran) -> str:
    match = re.match(r"^silence ([0-9a-f]+) until \S+ \(2h\): ", ran.out)
    assert match, ran.out
    return match[1]


# ---- silences --------------------------------------------------------------------------------------


def test_a_silence_holds_notifications_until_it_is_lifted(agent: Agent, webhook: Webhook) -> None:
    setup(agent, webhook.url())
    ran = agent("alerts", "silence", "--match", "severity=critical", "--match", 'host=~"web.*"',
                "--duration", "2h", "--comment", "disk swap tonight")
    assert ran.code == 0, ran.err
    sid = silence_id(ran)
    first, second = ran.out.splitlines()
    assert first.endswith(': severity="critical", host=~"web.*"')
    assert second == "matches 0 active alerts now"

    listed = agent("alerts", "silences")
    assert listed.code == 0
    lines = listed.out.splitlines()
    assert re.match(rf"^{sid}  active   until \S+ \(2h left\)  by \S+$", lines[0]), lines
    assert lines[1:] == ['          matchers: severity="critical", host=~"web.*"', "          comment: disk swap tonight"]

    dry = agent("run", "site.yml", "-i", "inventory.yml", "--check")
    assert dry.code == 2, dry.err
    assert f"{KEY}  -> hook: held: silenced ({sid})" in dry.out

    silenced = agent("run", "site.yml", "-i", "inventory.yml", "-v")
    assert silenced.code == 2, silenced.err
    assert f"-> hook: held: silenced ({sid})" in silenced.out
    assert webhook.requests == []
    (alert,) = agent("alerts", "list", "--format", "json").json()["alerts"]
    assert (alert["state"], alert["silenced"], alert["silence"]) == ("firing", True, sid)
    assert f"; silenced ({sid})" in agent("alerts", "list").out.splitlines()[1]

    lifted = agent("alerts", "unsilence", sid)
    assert (lifted.code, lifted.out.strip()) == (0, f"silence {sid} expired")
    assert agent("alerts", "silences").out.strip() == "no active silences"
    assert f"{sid}  expired  ended " in agent("alerts", "silences", "--all").out

    told = agent("run", "site.yml", "-i", "inventory.yml")
    assert told.code == 2, told.err
    (request,) = webhook.requests
    assert request.json()["title"] == "[CRITICAL] Root disk on web1"
    (alert,) = agent("alerts", "list", "--format", "json").json()["alerts"]
    assert (alert["silenced"], alert["silence"]) == (False, None)


def test_a_silence_that_starts_later_does_not_hold_yet(agent: Agent, webhook: Webhook) -> None:
    setup(agent, webhook.url())
    ran = agent("alerts", "silence", "-m", "team=ops", "-d", "1h", "--start", "2999-01-01T22:00:00+00:00")
    assert ran.code == 0, ran.err
    assert re.match(r"^silence [0-9a-f]+ from 2999-01-0\dT\S+ until 2999-01-0\dT\S+: team=\"ops\"$",
                    ran.out.splitlines()[0]), ran.out
    assert " pending  from " in agent("alerts", "silences").out
    assert agent("run", "site.yml", "-i", "inventory.yml").code == 2
    assert len(webhook.requests) == 1


def test_a_new_silence_says_which_active_alerts_it_matches(agent: Agent, webhook: Webhook) -> None:
    setup(agent, webhook.url())
    agent("run", "site.yml", "-i", "inventory.yml")
    matching = agent("alerts", "silence", "-m", "check=Root disk", "-d", "1h")
    assert matching.out.splitlines()[1] == "matches 1 active alert now"
    other = agent("alerts", "silence", "-m", "check!=Root disk", "-d", "1h")
    assert other.out.splitlines()[1] == "matches 0 active alerts now"


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param([], "error: give at least one --match NAME=VALUE", id="no matcher"),
        pytest.param(["-m", "severity==critical"], "error: --match: invalid matcher 'severity==critical': '=='",
                     id="bad operator"),
        pytest.param(["-m", "1host=web1"], "error: --match: invalid matcher '1host=web1': invalid label name",
                     id="bad label name"),
        pytest.param(["-m", "host=~web(1"], "error: --match: invalid regular expression in matcher", id="bad regex"),
        pytest.param(["-m", "a=b", "-d", "soon"], "error: --duration: expected a duration such as 30s",
                     id="bad duration"),
        pytest.param(["-m", "a=b", "-d", "0s"], "error: --duration must be more than 0", id="zero duration"),
        pytest.param(["-m", "a=b", "--start", "tonight"], "error: --start: expected an ISO 8601 time", id="bad start"),
        pytest.param(["-m", "a=b", "--start", "2001-01-01T00:00:00Z"], "error: the silence would already be over",
                     id="already over"),
    ],
)
def test_a_bad_silence_is_refused_in_one_line(agent: Agent, args: list[str], message: str) -> None:
    ran = agent("alerts", "silence", "-d", "1h", *args)  # a later -d wins
    assert ran.code == 2
    assert ran.err.startswith(message), ran.err
    assert len(ran.err.splitlines()) == 1 and "Traceback" not in ran.err
    assert agent("alerts", "silences", "--all").out.strip() == "no silences"


def test_a_silence_needs_a_duration(agent: Agent) -> None:
    ran = agent("alerts", "silence", "-m", "a=b")
    assert ran.code == 2
    assert "Missing option '--duration'" in ran.err and "Traceback" not in ran.err


def test_unsilencing_an_unknown_id_says_so(agent: Agent) -> None:
    ran = agent("alerts", "unsilence", "deadbeef")
    assert ran.code == 2
    assert ran.err.strip().splitlines()[-1] == (
        "error: no silence with id 'deadbeef'; `ce-agent alerts silences --all` lists them"
    )
    assert "note: no state in " in ran.err  # nothing ran with this state directory yet
    sid = agent("alerts", "silence", "-m", "a=b", "-d", "1h").out.split()[1]
    assert agent("alerts", "unsilence", sid).code == 0
    again = agent("alerts", "unsilence", sid)
    assert again.code == 0 and again.out.startswith(f"silence {sid} had already ended at ")


def test_silences_as_json(agent: Agent) -> None:
    sid = agent("alerts", "silence", "-m", "a=b", "-d", "2h", "-c", "why").out.split()[1]
    (silence,) = agent("alerts", "silences", "--format", "json").json()["silences"]
    assert {k: silence[k] for k in ("id", "state", "matchers", "comment")} == {
        "id": sid, "state": "active", "matchers": ['a="b"'], "comment": "why"}
    assert silence["created_by"]
    assert silence["ends_ts"] - silence["starts_ts"] == pytest.approx(7200)


# ---- alerts list and history -------------------------------------------------------------------------


def test_alerts_list_shows_a_firing_check_and_history_its_life(agent: Agent, webhook: Webhook) -> None:
    assert agent("alerts", "list").out.strip() == "no active alerts"  # no state yet: nothing, and no error
    assert agent("alerts", "history").out.startswith("no alert events since ")
    setup(agent, webhook.url())
    assert agent("run", "site.yml", "-i", "inventory.yml").code == 2

    listed = agent("alerts", "list")
    assert listed.code == 0, listed.err
    lines = listed.out.splitlines()
    assert lines[0] == f"FIRING   CRITICAL  {KEY}"
    assert re.match(r"^ {19}since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d \(for [0-9.]+m?s\)$", lines[1]), lines
    assert lines[2] == " " * 19 + "labels: check=Root disk, host=web1, play=Web, severity=critical, team=ops"
    assert lines[3] == "1 active alert: 1 firing, 0 pending"
    (alert,) = agent("alerts", "list", "--format", "json").json()["alerts"]
    assert {k: alert[k] for k in ("key", "state", "status", "silenced", "silence", "flapping")} == {
        "key": KEY, "state": "firing", "status": "CRITICAL", "silenced": False, "silence": None, "flapping": False}
    assert alert["labels"] == {"check": "Root disk", "host": "web1", "play": "Web", "severity": "critical",
                               "team": "ops"}

    setup(agent, webhook.url(), status="OK")
    assert agent("run", "site.yml", "-i", "inventory.yml").code == 0
    assert agent("alerts", "list").out.strip() == "no active alerts"
    events = agent("alerts", "history", "--format", "json").json()["events"]
    assert [(e["kind"], e["status"], e["key"]) for e in events] == [("firing", "CRITICAL", KEY), ("resolved", "OK", KEY)]
    assert events[0]["summary"] == "/ 95.2% used"
    text = agent("alerts", "history", "--since", "1h").out.splitlines()
    assert [line.split()[1:3] for line in text] == [["firing", "CRITICAL"], ["resolved", "OK"]]
    assert text[0].endswith(f"{KEY}  / 95.2% used")
    assert [r.json()["title"] for r in webhook.requests] == ["[CRITICAL] Root disk on web1",
                                                            "[RESOLVED] Root disk on web1"]


def test_a_rule_waiting_for_its_for_is_listed_pending(agent: Agent) -> None:
    agent.write("inventory.yml", "all:\n  hosts:\n    localhost: {}\n")
    agent.write("site.yml", """\
        - name: Numbers
          hosts: localhost
          collectors:
            - constant: {value: 7}
          alerts:
            - {name: TooHigh, expr: "constant_value > 5", for: 1h, severity: warning}
        """)
    assert agent("run", "site.yml", "-i", "inventory.yml").code == 0
    (alert,) = agent("alerts", "list", "--format", "json").json()["alerts"]
    assert (alert["state"], alert["status"], alert["labels"]["alertname"]) == ("pending", "WARNING", "TooHigh")
    assert agent("alerts", "list").out.splitlines()[-1] == "1 active alert: 0 firing, 1 pending"
    assert agent("alerts", "history", "--format", "json").json()["events"] == []  # pending is not an event


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(["list", "--format", "xml"], "error: --format must be text or json, got 'xml'", id="list format"),
        pytest.param(["history", "--since", "last week"], "error: --since 'last week': expected a duration", id="history since"),
        pytest.param(["silences", "--format", "yaml"], "error: --format must be text or json", id="silences format"),
    ],
)
def test_bad_options_of_the_alerts_commands(agent: Agent, args: list[str], message: str) -> None:
    ran = agent("alerts", *args)
    assert ran.code == 2 and ran.err.startswith(message), ran.err


def test_the_state_dir_option_wins_over_the_environment(agent: Agent) -> None:
    other = agent.cwd / "other-state"
    agent("alerts", "silence", "-m", "a=b", "-d", "1h", "--state-dir", str(other))
    assert (other / "state.db").exists()
    assert agent("alerts", "silences").out.strip() == "no active silences"
    assert "matchers: a=\"b\"" in agent("alerts", "silences", "--state-dir", str(other)).out


# ---- notify test -------------------------------------------------------------------------------------


def test_notify_test_sends_a_fire_drill(agent: Agent, webhook: Webhook) -> None:
    setup(agent, webhook.url())
    ran = agent("notify", "test", "hook", "-i", "inventory.yml")
    assert ran.code == 0, ran.err
    assert ran.out.strip() == (f"sent a test notification to channel 'hook' (json://127.0.0.1:{webhook.port}/alerts)"
                               " for host web1")
    (request,) = webhook.requests
    payload = request.json()
    assert payload["title"] == "[TEST] ce-agent test notification from web1"
    assert payload["type"] == "success"  # status OK
    assert "a fire drill, nothing is wrong" in payload["message"]
    assert not (agent.cwd / "state").exists()  # a drill changes no alert state


@pytest.mark.parametrize(
    "args, path",
    [
        pytest.param([], "/all", id="localhost by default when the inventory lists it"),
        pytest.param(["--host", "web1"], "/web1", id="another host's own channels"),
    ],
)
def test_notify_test_resolves_the_channel_for_a_host(agent: Agent, webhook: Webhook, args: list[str], path: str) -> None:
    agent.write("inventory.yml", f"""\
        all:
          vars:
            channels: {{hook: "{webhook.url(path='/{{ where }}')}"}}
            where: all
          hosts:
            localhost: {{}}
            web1: {{where: web1}}
        """)
    ran = agent("notify", "test", "hook", "-i", "inventory.yml", *args)
    assert ran.code == 0, ran.err
    assert [r.path for r in webhook.requests] == [path]


def test_notify_test_down_channel_fails_without_its_password(agent: Agent, dead_port: int) -> None:
    setup(agent, f"json://alerts:{CANARY}@127.0.0.1:{dead_port}/hook")
    ran = agent("notify", "test", "hook", "-i", "inventory.yml")
    assert ran.code == 2
    assert ran.err.startswith("error: channel 'hook' did not accept the test notification: "), ran.err
    assert len(ran.err.strip().splitlines()) == 1 and "Traceback" not in ran.err
    assert CANARY not in ran.out + ran.err


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(["hok"], "unknown channel 'hok' for host 'web1'; did you mean 'hook'? (channels: hook)",
                     id="a typo in the channel"),
        pytest.param(["hook", "--host", "wbe1"], "error: unknown host 'wbe1'; did you mean 'web1'? (hosts: web1)",
                     id="a typo in the host"),
    ],
)
def test_notify_test_user_errors(agent: Agent, webhook: Webhook, args: list[str], message: str) -> None:
    setup(agent, webhook.url())
    ran = agent("notify", "test", *args, "-i", "inventory.yml")
    assert ran.code == 2
    assert ran.err.strip() == message
    assert webhook.requests == []


def test_notify_test_reports_a_broken_inventory(agent: Agent) -> None:
    agent.write("inventory.yml", "all: [not, a, mapping]\n")
    ran = agent("notify", "test", "hook", "-i", "inventory.yml")
    assert ran.code == 2
    assert ran.err.startswith("inventory.yml:1:") and "Traceback" not in ran.err, ran.err


# ---- ping and the heartbeat check --------------------------------------------------------------------


def heartbeat_playbook(agent: Agent) -> None:
    agent.write("inventory.yml", "all:\n  hosts:\n    localhost: {}\n")
    agent.write("site.yml", """\
        - name: Jobs
          hosts: localhost
          checks:
            - name: Backup ran
              heartbeat: {name: backup.daily, period: 1h, grace: 5m}
        """)


def heartbeat(agent: Agent) -> dict:
    ran = agent("run", "site.yml", "-i", "inventory.yml", "--format", "json")
    (result,) = ran.json()["results"]
    assert ran.code == result["code"]
    return result


def test_ping_feeds_the_heartbeat_check(agent: Agent) -> None:
    heartbeat_playbook(agent)
    never = heartbeat(agent)
    assert (never["status"], never["summary"]) == (
        "CRITICAL", "no ping yet for backup.daily; run `ce-agent ping backup.daily` from the job")

    pinged = agent("ping", "backup.daily")
    assert (pinged.code, pinged.out, pinged.err) == (0, "", "")  # silent: cron mails any output
    ok = heartbeat(agent)
    assert ok["status"] == "OK"
    assert re.fullmatch(r"backup\.daily pinged [0-9.]+m?s ago \(every 1h, grace 5m\)", ok["summary"]), ok["summary"]
    assert ok["metrics"][0]["name"] == "heartbeat_age_seconds" and ok["metrics"][0]["value"] < 60

    assert agent("ping", "backup.daily", "--start").code == 0
    assert heartbeat(agent)["summary"].startswith("backup.daily running, started ")

    assert agent("ping", "backup.daily", "--fail").code == 0
    failed = heartbeat(agent)
    assert failed["status"] == "CRITICAL"
    assert failed["summary"].startswith("backup.daily reported a failure ")

    assert agent("ping", "backup.daily").code == 0
    assert heartbeat(agent)["status"] == "OK"


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(["back up"], "error: invalid heartbeat name 'back up': use only letters, digits", id="a space"),
        pytest.param(["a/b"], "error: invalid heartbeat name 'a/b'", id="a slash"),
        pytest.param(["job", "--start", "--fail"], "error: give --start or --fail, not both", id="both flags"),
    ],
)
def test_ping_refuses(agent: Agent, args: list[str], message: str) -> None:
    ran = agent("ping", *args)
    assert ran.code == 2 and ran.err.startswith(message), ran.err
    assert not (agent.cwd / "state" / "state.db").exists()  # nothing recorded


def test_a_heartbeat_with_bad_options_fails_validation(agent: Agent) -> None:
    agent.write("inventory.yml", "all:\n  hosts:\n    localhost: {}\n")
    agent.write("site.yml", """\
        - hosts: localhost
          checks:
            - heartbeat: {name: backup, period: 1h, schedule: "0 2 * * *"}
            - heartbeat: {name: backup, schedule: "0 25 * * *"}
        """)
    ran = agent("validate", "site.yml", "-i", "inventory.yml")
    assert ran.code == 2
    assert "site.yml:3:" in ran.err and "heartbeat: period: give exactly one of 'period'" in ran.err
    assert "site.yml:4:" in ran.err and "heartbeat: schedule: not a valid cron expression: '0 25 * * *'" in ran.err


def test_alerts_json_documents_are_versioned(agent: Agent) -> None:
    for args in (["list"], ["history"], ["silences"]):
        document = json.loads(agent("alerts", *args, "--format", "json").out)
        assert document["version"] == 1


def test_history_keeps_every_change_while_an_alert_flaps(agent) -> None:
    # a check that alternates OK, CRITICAL, OK, ... on each run: it soon flaps, and nothing is
    # announced then, but `alerts history` still tells every firing and resolve
    counter = agent.cwd / "n"
    agent.write("site.yml", f"""\
        - name: Flappy
          hosts: localhost
          checks:
            - name: toggle
              command:
                argv: [sh, -c, "n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}; [ $((n % 2)) -eq 1 ] && echo OK || {{ echo CRIT; exit 2; }}"]
        """)
    agent.write("inventory.yml", "all:\n  hosts:\n    localhost: {}\n")
    for _ in range(24):
        agent("run", "site.yml", "-i", "inventory.yml")
    events = json.loads(agent("alerts", "history", "--format", "json").out)["events"]
    kinds = [e["kind"] for e in events]
    assert kinds.count("firing") == 12 and kinds.count("resolved") == 11, kinds
    assert "flapping_start" in kinds
    quiet = [e for e in events if "while flapping" in e["summary"]]
    assert quiet and all(e["kind"] in ("firing", "resolved") for e in quiet)
