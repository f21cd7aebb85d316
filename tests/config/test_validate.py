"""`ce-agent validate`: every error in one pass, each as FILE:LINE:COL: message, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ce_agent.cli import app

INVENTORY = """\
all:
  vars:
    channels:
      ops: "json://127.0.0.1:9/hook"
      local: {console: {}}
  hosts:
    localhost: {}
  children:
    web:
      hosts:
        web1: {address: 127.0.0.1}
"""


def validate(tmp_path: Path, playbook: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    (tmp_path / "inventory.yml").write_text(INVENTORY)
    (tmp_path / "site.yml").write_text(textwrap.dedent(playbook))
    result = CliRunner().invoke(
        app, ["validate", str(tmp_path / "site.yml"), "-i", str(tmp_path / "inventory.yml"), *args], env=env
    )
    return result.exit_code, result.output


@pytest.mark.parametrize(
    "playbook, expected",
    [
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - dsik: {path: /}
            """,
            "site.yml:3:7: unknown check plugin 'dsik'; did you mean 'disk'?",
            id="unknown plugin with a hint",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk: {pth: /}
            """,
            "site.yml:3:14: disk: unknown option 'pth' (did you mean 'path'?); valid options: path, warning, critical",
            id="unknown option lists the valid ones",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk:
                    warning: [1, 2]
            """,
            "site.yml:4:18: disk: option 'warning': expected a number, a percentage or a Nagios range",
            id="wrong type",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk: {path: /}
                  notify: [ops, opz]
            """,
            "site.yml:4:21: unknown channel 'opz' for host 'localhost'; did you mean 'ops'?",
            id="unknown channel",
        ),
        pytest.param(
            """\
            - hosts: webz
              checks:
                - disk: {}
            """,
            "site.yml:1:10: hosts 'webz': no host or group matches 'webz'",
            id="unknown host pattern",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - system: {}
            """,
            "site.yml:3:7: 'system' is a collector plugin; move it under 'collectors:'",
            id="a collector under checks",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk: {warning: "{{ disk_warn }}"}
            """,
            "site.yml:3:13: disk options: undefined variable: 'disk_warn' is undefined",
            id="undefined template variable",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk: {}
                  timeout: soon
            """,
            "site.yml:4:16: 'timeout': expected a duration such as 30s, 5m or 1h, got 'soon'",
            id="bad duration",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk: {}
                  schedule: "*/5 * * *"
            """,
            "site.yml:4:17: 'schedule': a cron schedule has 5 fields (minute hour day month weekday) or 6 with seconds, got 4",
            id="cron with 4 fields",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk: {}
                  schedule: "61 * * * *"
            """,
            "site.yml:4:17: 'schedule': not a valid cron expression: '61 * * * *'",
            id="cron out of range",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk: {}
                  retries: 0
            """,
            "site.yml:4:16: 'retries' must be a whole number of at least 1, got 0",
            id="bad retries",
        ),
        pytest.param(
            """\
            - hosts: localhost
              chekcs: []
            """,
            "site.yml:2:3: unknown play key 'chekcs'; did you mean 'checks'?; valid keys:",
            id="unknown play key",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk: {}
                  file: {path: /}
            """,
            "site.yml:4:7: a check names one plugin, this one names 2: disk, file",
            id="two plugins in one task",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk: {path: /
            """,
            "site.yml:4:1: invalid YAML:",
            id="bad YAML",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - command: !!python/object/apply:os.system ["touch /tmp/pwned"]
            """,
            "site.yml:3:16: the YAML tag tag:yaml.org,2002:python/object/apply:os.system is not allowed",
            id="python tags are refused",
        ),
        pytest.param(
            "hosts: localhost\n",
            "site.yml:1:1: a playbook must be a list of plays",
            id="a mapping instead of a list",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - command: {argv: "{{ env.CE_TEST_SURELY_UNSET }}"}
            """,
            "site.yml:3:16: command options: environment variable CE_TEST_SURELY_UNSET is not set",
            id="missing environment variable",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - 5: {}
            """,
            "site.yml:3:7: 5 is not a plugin name",
            id="a number as plugin key",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk: {}
                  timout: 5s
            """,
            "site.yml:4:7: unknown task key 'timout' (did you mean 'timeout'?)",
            id="a typo in a task key",
        ),
        pytest.param(
            """\
            - hosts: [localhost]
              checks:
                - disk: {}
            """,
            "site.yml:1:10: 'hosts' must be a string, got a list",
            id="hosts as a list",
        ),
        pytest.param(
            """\
            - hosts: ""
              checks:
                - disk: {}
            """,
            "site.yml:1:10: 'hosts' is empty",
            id="empty hosts",
        ),
        pytest.param(
            """\
            - hosts: ~
              checks:
                - disk: {}
            """,
            "site.yml:1:10: 'hosts' is empty",
            id="null hosts",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk: {}
                  timeout: .inf
            """,
            "site.yml:4:16: 'timeout': expected a finite duration, got inf",
            id="infinite timeout",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk: {}
                  timeout: .nan
            """,
            "site.yml:4:16: 'timeout': expected a finite duration, got nan",
            id="NaN timeout",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk: {}
                  timeout: 1000000d
            """,
            "site.yml:4:16: 'timeout': a timeout must be at most 1d, got '1000000d'",
            id="huge timeout",
        ),
        pytest.param(
            """\
            - hosts: localhost
              vars: {t: 0}
              checks:
                - disk: {}
                  timeout: "{{ t }}"
            """,
            "site.yml:5:16: 'timeout': a timeout must be more than 0, got 0",
            id="templated zero timeout",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk: {}
                  interval: 0s
            """,
            "site.yml:4:17: 'interval': an interval must be at least 1s, got '0s'",
            id="zero interval",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk: {}
                  schedule: "0 3 * * *"
                  timezone: Mars/Olympus
            """,
            "site.yml:5:17: 'timezone': unknown timezone 'Mars/Olympus' (expected an IANA name such as Europe/Berlin)",
            id="unknown timezone",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk: {}
                  interval: 10s
                  jitter: 20s
            """,
            "site.yml:5:15: 'jitter': `jitter` must be between 0s and the interval (10s), got 20s",
            id="jitter above the interval",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk: {}
                  schedule: "0 3 * * *"
                  jitter: 5s
            """,
            "site.yml:5:15: 'jitter': `jitter` applies to `interval` schedules only",
            id="jitter on a cron schedule",
        ),
        pytest.param(
            """\
            - hosts: localhost
              checks:
                - disk: {}
                  interval: 1m
                  timezone: Europe/Berlin
            """,
            "site.yml:5:17: 'timezone': `timezone` applies to cron schedules only",
            id="timezone on an interval",
        ),
    ],
)
def test_one_error_one_line(tmp_path: Path, playbook: str, expected: str) -> None:
    code, output = validate(tmp_path, playbook)
    assert code == 2, output
    assert expected in output, output
    assert "Traceback" not in output


def test_a_task_key_typo_and_an_unknown_plugin_are_both_reported(tmp_path: Path) -> None:
    code, output = validate(tmp_path, """\
        - hosts: localhost
          checks:
            - nosuch: {}
              timout: 3s
        """)
    assert code == 2
    assert "site.yml:3:7: unknown check plugin 'nosuch'" in output
    assert "site.yml:4:7: unknown task key 'timout' (did you mean 'timeout'?)" in output
    assert output.rstrip().endswith("2 errors")


def test_every_error_in_one_pass(tmp_path: Path) -> None:
    code, output = validate(
        tmp_path,
        """\
        - hosts: localhost
          checks:
            - dsik: {}
            - disk: {pth: /}
            - disk: {}
              notify: [nope]
        - hosts: nosuch
          checks:
            - memory: {}
        """,
    )
    assert code == 2
    errors = [line for line in output.splitlines() if "site.yml:" in line]
    assert [line.split(": ", 1)[0].rsplit("/", 1)[-1] for line in errors] == [
        "site.yml:3:7",
        "site.yml:4:14",
        "site.yml:6:16",
        "site.yml:7:10",
    ], output
    assert output.rstrip().endswith("4 errors")


def test_a_valid_playbook(tmp_path: Path) -> None:
    code, output = validate(
        tmp_path,
        """\
        - name: Local
          hosts: localhost:web
          vars: {crit: 95}
          checks:
            - name: Root disk
              disk: {path: /, warning: "80%", critical: "{{ crit }}"}
              notify: [ops, local]
              schedule: "*/5 * * * *"
              tags: [disk]
          collectors:
            - system: {}
        """,
    )
    assert code == 0, output
    assert "ok: 1 playbook(s), 1 play(s), 4 task(s) on 2 host(s)" in output


@pytest.mark.parametrize(
    "args, expected",
    [
        pytest.param(["/nonexistent/site.yml"], "/nonexistent/site.yml: no such playbook", id="missing playbook"),
        pytest.param(["{dir}"], "{dir}: is a directory, expected a playbook", id="a directory"),
        pytest.param(["{dir}/site.yml", "-i", "/nonexistent/inv.yml"], "/nonexistent/inv.yml: no such inventory file",
                     id="missing inventory"),
    ],
)
def test_files_that_are_not_there(tmp_path: Path, args: list[str], expected: str) -> None:
    (tmp_path / "site.yml").write_text("- hosts: localhost\n  checks:\n    - disk: {}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "ce_agent", "validate", *[a.format(dir=tmp_path) for a in args]],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert expected.format(dir=tmp_path) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_secret_in_a_bad_channel_is_not_printed(tmp_path: Path) -> None:
    code, output = validate(
        tmp_path,
        """\
        - hosts: localhost
          checks:
            - disk: {}
              notify: [secret]
        """,
    )
    assert code == 2  # 'secret' is not a channel in the inventory
    (tmp_path / "inventory.yml").write_text(
        INVENTORY.replace('ops: "json', 'secret: {apprise: {urls: ["json://u:{{ env.CANARY_PW }}@127.0.0.1/"], bogus: 1}}\n      ops: "json')
    )
    result = CliRunner().invoke(
        app, ["validate", str(tmp_path / "site.yml"), "-i", str(tmp_path / "inventory.yml")],
        env={**os.environ, "CANARY_PW": "Canary-Sekr3t-77"},
    )
    assert result.exit_code == 2
    assert "unknown option 'bogus'" in result.output
    assert "Canary-Sekr3t-77" not in result.output


def test_bad_extra_vars_quote(tmp_path: Path) -> None:
    code, output = validate(tmp_path, "- hosts: localhost\n  checks:\n    - disk: {}\n", "-e", "a='oops")
    assert code == 2
    assert "No closing quotation" in output and "Traceback" not in output


def test_numbers_become_text_where_text_is_expected(tmp_path: Path) -> None:
    code, output = validate(
        tmp_path,
        """\
        - hosts: localhost
          vars: {port: 8080}
          checks:
            - command: {argv: [check_http, -p, "{{ port }}", -t, 10, --ssl, true], env: {PORT: 8080, TLS: yes}}
        """,
    )
    assert code == 0, output


def test_one_error_on_many_hosts_is_one_line(tmp_path: Path) -> None:
    code, output = validate(
        tmp_path,
        """\
        - hosts: all
          checks:
            - disk: {pth: /}
        """,
    )
    assert code == 2
    lines = output.strip().splitlines()
    assert len(lines) == 2 and lines[-1] == "1 error", output


def test_depends_on_names_a_check_of_the_play_without_loops(tmp_path: Path) -> None:
    code, output = validate(
        tmp_path,
        """\
        - name: Local
          hosts: localhost
          checks:
            - {name: A, disk: {}, depends_on: [Nope]}
            - {name: B, disk: {}, depends_on: [B]}
            - {name: C, disk: {}, depends_on: [D]}
            - {name: D, disk: {}, depends_on: [C]}
            - {name: E, disk: {}, depends_on: [A]}
        """,
    )
    assert code == 2
    assert "site.yml:4:39: depends_on: no check named 'Nope' in play 'Local'" in output
    assert "site.yml:5:39: depends_on: 'B' cannot depend on itself" in output
    assert "site.yml:6:39: depends_on loop: C -> D -> C" in output
    assert output.rstrip().endswith("3 errors")


@pytest.mark.parametrize(
    "variable, expected",
    [
        pytest.param("routes: [{channels: [ops], contnue: true}]", "inventory.yml:3:13: routes: unknown key 'contnue'",
                     id="a typo in a route"),
        pytest.param('maintenance: [{schedule: "61 * * * *", duration: 2h}]',
                     "inventory.yml:3:18: maintenance: maintenance[0].schedule: not a valid cron expression",
                     id="a bad maintenance schedule"),
        pytest.param("routes: [{channels: [nochan]}]", "unknown channel 'nochan'", id="a route to an unknown channel"),
        pytest.param("delivery: {attempts: 0}", "delivery.attempts must be a whole number of at least 1",
                     id="bad delivery settings"),
    ],
)
def test_alerting_settings_in_the_inventory(tmp_path: Path, variable: str, expected: str) -> None:
    (tmp_path / "inventory.yml").write_text(
        INVENTORY.replace("  vars:\n", f"  vars:\n    {variable}\n", 1)
    )
    (tmp_path / "site.yml").write_text("- hosts: localhost\n  checks:\n    - {disk: {}, notify: [ops]}\n")
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "site.yml"), "-i", str(tmp_path / "inventory.yml")])
    assert result.exit_code == 2, result.output
    assert expected in result.output


def test_channels_no_task_uses_yet_are_validated_too(tmp_path: Path) -> None:
    (tmp_path / "inventory.yml").write_text(textwrap.dedent("""\
        all:
          vars:
            channels:
              used: {console: {}}
              spare: {file: {pth: /tmp/x}}
              typo: {nosuchnotifier: {}}
          hosts:
            localhost: {}
            web1: {}
        """))
    (tmp_path / "site.yml").write_text("- hosts: all\n  checks:\n    - {name: up, command: 'true', notify: [used]}\n")
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "site.yml"), "-i", str(tmp_path / "inventory.yml")])
    assert result.exit_code == 2
    lines = result.output.splitlines()
    # once each, though two hosts have them
    assert [line.split(": ", 1)[1] for line in lines[:-1]] == [
        "channel 'spare': file: missing required option 'path'",
        "channel 'spare': file: unknown option 'pth' (did you mean 'path'?); valid options: path",
        "channel 'typo': unknown notifier plugin 'nosuchnotifier' (known: alertmanager, apprise, console, file)",
    ], result.output
    assert lines[-1] == "3 errors"
