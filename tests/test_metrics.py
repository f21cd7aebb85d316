"""Prometheus export of a run: the families, awkward names made valid, and `run --textfile-dir`."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ce_agent import __version__
from ce_agent.contracts import Metric, Result, Status
from ce_agent.metrics import build_registry, label_name, metric_name, render_text, write_textfile
from tests.conftest import Agent
from tests.outcomes import Job, Outcome

NOW = 1_700_000_000.0


def check(name: str, status: Status = Status.OK, metrics: list[Metric] | None = None, **job: Any) -> Outcome:
    return Outcome(Job(name, **job), Result(status, "summary", metrics or []))


def collector(name: str, samples: list[Metric], **job: Any) -> Outcome:
    return Outcome(Job(name, kind="collector", plugin_name="system", **job), Result(Status.OK, "n samples"), 0.1,
                   samples)


def exported(outcomes: list[Outcome]) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The rendered text parsed back: family name -> {sorted label pairs: value}."""
    text = render_text(build_registry(outcomes, NOW))
    return {
        family.name: {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        for family in text_string_to_metric_families(text)
    }


def series(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def test_a_check_gives_its_status_duration_last_run_and_metrics() -> None:
    families = exported([check("Disk /", Status.CRITICAL, [Metric("disk_used_percent", 93.5, "%", {"mount": "/"})],
                               plugin_name="disk")])
    ids = {"check": "Disk /", "host": "web1", "play": "Site", "plugin": "disk"}
    assert families["ce_check_status"] == {series(**ids): 2.0}
    assert families["ce_check_last_duration_seconds"] == {series(**ids): 0.25}
    assert families["ce_check_last_run_timestamp_seconds"] == {series(**ids): NOW}
    assert families["ce_check_metric"] == {
        series(check="Disk /", host="web1", play="Site", metric="disk_used_percent", unit="%", mount="/"): 93.5,
    }
    assert families["ce_build_info"] == {series(version=__version__): 1.0}
    assert families["ce_export_skipped_samples"] == {series(reason="no_value"): 0, series(reason="duplicate"): 0}


def test_collector_samples_are_gauges_of_their_own_name() -> None:
    families = exported([collector("Numbers", [
        Metric("system_disk_used_percent", 40, "%", {"mountpoint": "/"}),
        Metric("system_disk_used_percent", 70, "%", {"mountpoint": "/home"}),
        Metric("system_load1", 0.5),
    ])])
    where = {"host": "web1", "play": "Site", "collector": "Numbers"}
    assert families["ce_system_disk_used_percent"] == {
        series(**where, mountpoint="/"): 40, series(**where, mountpoint="/home"): 70,
    }
    assert families["ce_system_load1"] == {series(**where): 0.5}
    assert "ce_check_status" not in families  # a collector is not a check


@pytest.mark.parametrize(
    "given, expected",
    [
        pytest.param("disk_used", "disk_used", id="already valid"),
        pytest.param("http.response time", "http_response_time", id="dots and spaces"),
        pytest.param("load-1m", "load_1m", id="dashes"),
        pytest.param("9lives", "_9lives", id="a leading digit"),
        pytest.param("temp°C", "temp_C", id="unicode"),
        pytest.param("a:b", "a:b", id="a colon is allowed in metric names"),
        pytest.param("", "_", id="empty"),
    ],
)
def test_metric_names_are_sanitised(given: str, expected: str) -> None:
    assert metric_name(given) == expected


@pytest.mark.parametrize(
    "given, expected",
    [
        pytest.param("mount", "mount", id="already valid"),
        pytest.param("a.b-c d", "a_b_c_d", id="dots, dashes and spaces"),
        pytest.param("a:b", "a_b", id="no colon in label names"),
        pytest.param("__x", "label__x", id="the reserved __ prefix is avoided"),
        pytest.param("1st", "_1st", id="a leading digit"),
        pytest.param("Größe", "Gr__e", id="unicode"),
    ],
)
def test_label_names_are_sanitised(given: str, expected: str) -> None:
    assert label_name(given) == expected


def test_awkward_names_and_values_still_give_valid_text() -> None:
    families = exported([
        check("Ünïcode check", metrics=[
            Metric("weird.name-1", 1, "s", {"__x": "reserved", "path": 'C:\\dir "quoted"\nnext', "host": "db1"}),
            Metric("unknown", None),
            Metric("not a number", math.nan),
            Metric("infinite", math.inf),
        ]),
        collector("Weird", [Metric("my.sample-x", 3, "", {"région": "Zürich"})]),
    ])
    (labels, value), = [(dict(k), v) for k, v in families["ce_check_metric"].items() if dict(k)["metric"] == "weird.name-1"]
    assert value == 1
    assert labels["label__x"] == "reserved"
    assert labels["path"] == 'C:\\dir "quoted"\nnext'  # escaped in the text, intact once parsed
    assert labels["host"] == "web1" and labels["exported_host"] == "db1"  # ours wins, theirs is kept aside
    assert labels["check"] == "Ünïcode check"
    assert [dict(k)["metric"] for k in families["ce_check_metric"]] == ["weird.name-1", "infinite"]
    assert families["ce_export_skipped_samples"][series(reason="no_value")] == 2
    assert families["ce_my_sample_x"] == {series(host="web1", play="Site", collector="Weird", r_gion="Zürich"): 3}


def test_a_duplicate_series_keeps_the_last_value_and_is_counted() -> None:
    families = exported([
        check("Twice", metrics=[Metric("m", 1, labels={"a.b": "x"}), Metric("m", 2, labels={"a-b": "x"})]),
        collector("C", [Metric("s", 1), Metric("s", 5)]),
    ])
    assert list(families["ce_check_metric"].values()) == [2]
    assert list(families["ce_s"].values()) == [5]
    assert families["ce_export_skipped_samples"][series(reason="duplicate")] == 2


def test_series_of_one_family_with_different_label_names_share_them_all() -> None:
    """Two collectors yield one name with different labels: each series gets every label name of the
    family, empty where it had none (Prometheus reads an empty label as absent)."""
    text = render_text(build_registry([
        collector("A", [Metric("thing", 1, labels={"x": "1"})]),
        collector("B", [Metric("thing", 2, labels={"y": "2"})]),
    ], NOW))
    lines = sorted(line for line in text.splitlines() if line.startswith("ce_thing{"))
    assert lines == [
        'ce_thing{collector="A",host="web1",play="Site",x="1",y=""} 1.0',
        'ce_thing{collector="B",host="web1",play="Site",x="",y="2"} 2.0',
    ]


def test_a_sample_named_like_one_of_our_families_is_renamed() -> None:
    families = exported([check("c"), collector("C", [Metric("check_status", 7), Metric("build_info", 8)])])
    assert list(families["ce_check_status"].values()) == [0]
    assert list(families["ce_check_status_sample"].values()) == [7]
    assert list(families["ce_build_info_sample"].values()) == [8]


def test_a_sample_named_total_is_a_counter() -> None:
    """Prometheus' convention (which promtool checks): NAME_total is a counter, and only a counter."""
    text = render_text(build_registry([collector("C", [Metric("sent_bytes_total", 10), Metric("sent_bytes", 3)])], NOW))
    types = {f.name: (f.type, [s.name for s in f.samples]) for f in text_string_to_metric_families(text)}
    assert types["ce_sent_bytes"] == ("counter", ["ce_sent_bytes_total"])
    assert types["ce_sent_bytes_sample"] == ("gauge", ["ce_sent_bytes_sample"])  # the name was the counter's


def test_every_family_has_help_and_a_type() -> None:
    text = render_text(build_registry([check("c", metrics=[Metric("m", 1)]), collector("C", [Metric("s", 1)])], NOW))
    names = [f.name for f in text_string_to_metric_families(text)]
    for name in names:
        assert f"# HELP {name} " in text
        assert f"# TYPE {name} gauge" in text
    assert "_total" not in text  # no counter here: every family is a gauge


def test_label_values_are_scrubbed() -> None:
    text = render_text(build_registry([check("c", metrics=[Metric("m", 1, labels={"url": "https://u:hunter2@x"})])],
                                      NOW, lambda s: s.replace("hunter2", "****")))
    assert "hunter2" not in text and "u:****@x" in text


def test_the_textfile_is_replaced_whole_with_mode_0644(tmp_path: Path) -> None:
    old = tmp_path / "ce-agent.prom"
    old.write_text("old\n")
    os.chmod(old, 0o600)
    target = write_textfile(tmp_path, "ce_build_info 1.0\n")
    assert target == old
    assert old.read_text() == "ce_build_info 1.0\n"
    assert stat.S_IMODE(old.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ce-agent.prom"]  # no temporary file left


def test_writing_into_a_missing_directory_raises_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_textfile(tmp_path / "missing", "x 1\n")
    assert list(tmp_path.iterdir()) == []


PLAYBOOK = """\
- name: Export
  hosts: localhost
  checks:
    - name: Fixed warning
      fixed: {status: WARNING, value: 3.5}
  collectors:
    - name: System
      system: {}
"""


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CE_AGENT_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is missing and CE_AGENT_REQUIRE_PROMTOOL=1")
        pytest.skip("promtool is missing (Debian package prometheus)")
    return found


def test_run_writes_a_textfile_that_prometheus_accepts(agent: Agent) -> None:
    agent.write("site.yml", PLAYBOOK)
    out = agent.cwd / "textfiles"
    out.mkdir()
    ran = agent("run", "site.yml", "--textfile-dir", str(out))
    assert ran.code == 1, ran.err  # the check's WARNING, as without the option
    prom = out / "ce-agent.prom"
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644
    text = prom.read_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (status,) = families["ce_check_status"].samples
    assert status.labels == {"check": "Fixed warning", "host": "localhost", "play": "Export", "plugin": "fixed"}
    assert status.value == 1
    (value,) = families["ce_check_metric"].samples
    assert value.labels["metric"] == "fixed_value" and value.value == 3.5
    memory = families["ce_system_memory_used_percent"].samples
    assert [s.labels for s in memory] == [{"host": "localhost", "play": "Export", "collector": "System"}]
    assert 0 <= memory[0].value <= 100
    assert families["ce_system_network_sent_bytes"].type == "counter"

    checked = subprocess.run([_promtool(), "check", "metrics"], input=text, capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    "where",
    [
        pytest.param("missing", id="a directory that does not exist"),
        pytest.param("file", id="a file, not a directory"),
    ],
)
def test_a_textfile_that_cannot_be_written_warns_and_keeps_the_exit_code(agent: Agent, where: str) -> None:
    agent.write("site.yml", PLAYBOOK)
    agent.write("file", "not a directory\n")
    ran = agent("run", "site.yml", "--textfile-dir", str(agent.cwd / where))
    assert ran.code == 1, ran.err
    warnings = [line for line in ran.err.splitlines() if "--textfile-dir" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: --textfile-dir: cannot write "), ran.err


def test_a_run_without_textfile_dir_does_not_import_prometheus_client(agent: Agent) -> None:
    agent.write("site.yml", PLAYBOOK)
    agent.write("probe.py", """\
        import sys
        from ce_agent.cli import main
        sys.argv = ["ce-agent", "run", "site.yml"{extra}]
        try:
            main()
        except SystemExit:
            pass
        print("IMPORTED", "prometheus_client" in sys.modules)
        """)
    env = {**os.environ, "PYTHONPATH": str(agent.pythonpath[0]), "CE_AGENT_STATE_DIR": str(agent.cwd / "state")}
    probe = (agent.cwd / "probe.py").read_text()
    results = {}
    for name, extra in (("without", ""), ("with", ', "--textfile-dir", "."')):
        (agent.cwd / "probe.py").write_text(probe.replace("{extra}", extra))
        proc = subprocess.run([sys.executable, "probe.py"], cwd=agent.cwd, capture_output=True, text=True,
                              timeout=60, env=env)
        results[name] = proc.stdout.strip().splitlines()[-1:]
    # the probe itself can tell: with the option it is imported
    assert results == {"without": ["IMPORTED False"], "with": ["IMPORTED True"]}


def test_metrics_prints_the_newest_stored_values_without_a_daemon(agent: Agent) -> None:
    agent.write("site.yml", PLAYBOOK)
    out = agent.cwd / "textfiles"
    out.mkdir()
    assert agent("run", "site.yml", "--textfile-dir", str(out)).code == 1
    assert agent("run", "site.yml").code == 1  # a second run: the newest values are shown, once
    ran = agent("metrics")
    assert ran.code == 0, ran.err
    families = {f.name: f for f in text_string_to_metric_families(ran.out)}
    (status,) = families["ce_check_status"].samples
    assert status.labels["check"] == "Fixed warning" and status.value == 1
    memory = families["ce_system_memory_used_percent"].samples
    assert [s.labels for s in memory] == [{"host": "localhost", "play": "Export", "collector": "System"}]
    assert families["ce_system_network_sent_bytes"].type == "counter"
    # the same families as the textfile of a run, apart from the values that changed since
    textfile = {f.name for f in text_string_to_metric_families((out / "ce-agent.prom").read_text())}
    assert set(families) == textfile
    checked = subprocess.run([_promtool(), "check", "metrics"], input=ran.out, capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    data = json.loads(agent("metrics", "--format", "json").out)
    assert [(c["check"], c["status"]) for c in data["checks"]] == [("Fixed warning", "WARNING")]
    assert {s["name"] for s in data["samples"]} >= {"system_memory_used_percent", "system_network_sent_bytes_total"}


def test_metrics_of_an_empty_state_says_so(agent: Agent) -> None:
    ran = agent("metrics")
    assert ran.code == 0 and "no state in" in ran.err
    assert "ce_check_status" not in ran.out


def test_node_exporter_reads_the_textfile(agent: Agent) -> None:
    import socket
    import time
    import urllib.request

    exporter = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if exporter is None:
        if os.environ.get("CE_AGENT_REQUIRE_NODE_EXPORTER") == "1":
            pytest.fail("node_exporter is missing and CE_AGENT_REQUIRE_NODE_EXPORTER=1")
        pytest.skip("node_exporter is missing (Debian package prometheus-node-exporter)")
    agent.write("site.yml", PLAYBOOK)
    out = agent.cwd / "textfiles"
    out.mkdir()
    assert agent("run", "site.yml", "--textfile-dir", str(out)).code == 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # only the textfile collector: the test needs nothing else of the machine
    proc = subprocess.Popen([exporter, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
                             "--collector.textfile", f"--collector.textfile.directory={out}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
                    text = reply.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(10)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (status,) = families["ce_check_status"].samples
    assert status.labels["check"] == "Fixed warning" and status.value == 1
    # node_exporter reports a textfile it could not parse in this gauge: 0 means it read ours cleanly
    assert families["node_textfile_scrape_error"].samples[0].value == 0


def test_cron_jobs_sharing_a_state_and_a_textfile_keep_each_others_series(agent: Agent) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    agent.write("fast.yml", "- name: Fast\n  hosts: localhost\n  checks:\n    - {name: ping, command: 'true'}\n")
    agent.write("slow.yml", "- name: Slow\n  hosts: localhost\n  checks:\n    - {name: backup, command: 'false'}\n")
    out = agent.cwd / "textfiles"
    out.mkdir()

    def statuses() -> dict[tuple[str, str], float]:
        text = (out / "ce-agent.prom").read_text()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        return {(s.labels["play"], s.labels["check"]): s.value for s in families["ce_check_status"].samples}

    agent("run", "fast.yml", "--textfile-dir", str(out))
    assert statuses() == {("Fast", "ping"): 0}
    for playbook in ("slow.yml", "fast.yml"):  # neither job's run takes the other's series away
        agent("run", playbook, "--textfile-dir", str(out))
        assert statuses() == {("Fast", "ping"): 0, ("Slow", "backup"): 1}, playbook
    # a check removed from a play that is run again is gone from the file; the other job's stays
    agent.write("fast.yml", "- name: Fast\n  hosts: localhost\n  checks:\n    - {name: ping6, command: 'true'}\n")
    agent("run", "fast.yml", "--textfile-dir", str(out))
    assert statuses() == {("Fast", "ping6"): 0, ("Slow", "backup"): 1}
