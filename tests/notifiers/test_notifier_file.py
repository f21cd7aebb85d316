"""The `file` notifier: one JSON line per notification, private file, whole lines under concurrency."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ce_agent.contracts import DeliveryError, Metric, Notification, Status
from ce_agent.notifiers.file import FileNotifier


def note(title: str = "web1: Root disk CRITICAL") -> Notification:
    return Notification(
        channel="archive",
        title=title,
        body="/ 95.2% used",
        status=Status.CRITICAL,
        host="web1",
        play="Local health",
        check="Root disk",
        summary="/ 95.2% used (3.1 GiB free of 50.0 GiB)",
        metrics=[Metric("disk_used_percent", 95.2, "%", {"path": "/"}, "80", "90", 0, 100)],
        labels={"severity": "critical", "host": "web1"},
    )


def test_each_notification_is_one_json_line_with_its_utc_time(make_notifier, tmp_path) -> None:
    path = tmp_path / "alerts.jsonl"
    notifier = make_notifier(FileNotifier, path=str(path))

    before = datetime.now(timezone.utc)
    notifier.send(note("first"))
    notifier.send(note("second"))
    after = datetime.now(timezone.utc)

    lines = path.read_text().splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    assert [r["title"] for r in records] == ["first", "second"]
    for record in records:
        when = datetime.fromisoformat(record.pop("time").replace("Z", "+00:00"))
        assert when.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= when <= after + timedelta(seconds=1)
    assert records[0] == note("first").as_dict()


def test_creates_directories_and_a_private_file(make_notifier, tmp_path) -> None:
    path = tmp_path / "a" / "b" / "alerts.jsonl"

    make_notifier(FileNotifier, path=str(path)).send(note())

    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_appends_to_what_is_there(make_notifier, tmp_path) -> None:
    path = tmp_path / "alerts.jsonl"
    path.write_text('{"kept": true}\n')

    make_notifier(FileNotifier, path=str(path)).send(note())

    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"kept": True}
    assert json.loads(lines[1])["title"] == "web1: Root disk CRITICAL"


def test_home_is_expanded(make_notifier, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))

    make_notifier(FileNotifier, path="~/notes/alerts.jsonl").send(note())

    assert (tmp_path / "notes" / "alerts.jsonl").is_file()


def _parent_is_a_file(tmp: Path) -> Path:
    (tmp / "blocker").write_text("")
    return tmp / "blocker" / "alerts.jsonl"


def _path_is_a_directory(tmp: Path) -> Path:
    (tmp / "dir").mkdir()
    return tmp / "dir"


@pytest.mark.parametrize(
    "make_bad_path",
    [
        pytest.param(_parent_is_a_file, id="parent-is-a-file"),
        pytest.param(_path_is_a_directory, id="path-is-a-directory"),
    ],
)
def test_os_errors_are_transient_delivery_errors(make_notifier, tmp_path, make_bad_path) -> None:
    path = make_bad_path(tmp_path)

    with pytest.raises(DeliveryError) as caught:
        make_notifier(FileNotifier, path=str(path)).send(note())

    assert caught.value.transient
    assert str(path) in str(caught.value)


def test_concurrent_writers_never_interleave_partial_lines(tmp_path) -> None:
    path, go = tmp_path / "shared.jsonl", tmp_path / "go"
    writers, lines_each = 6, 200
    # Lines well above PIPE_BUF (4 KiB) and any stdio buffer, where writers that seek to the end
    # themselves, or write a line in pieces, do tear each other's lines. All start together.
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from ce_agent.contracts import Notification, Status, TaskContext
        from ce_agent.notifiers.file import FileNotifier
        notifier = FileNotifier(FileNotifier.Options(path={str(path)!r}), TaskContext("t", "h"))
        open({str(tmp_path)!r} + "/ready-" + sys.argv[1], "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:
            time.sleep(0.001)
        for i in range({lines_each}):
            notifier.send(Notification("c", f"{{sys.argv[1]}}-{{i}}", "x" * 20000, Status.OK))
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)]) for n in range(writers)]
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("ready-*"))) < writers and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    assert [p.wait(timeout=60) for p in procs] == [0] * writers

    lines = path.read_bytes().splitlines()
    titles = [json.loads(line)["title"] for line in lines]
    assert sorted(titles) == sorted(f"{n}-{i}" for n in range(writers) for i in range(lines_each))


def _strict_json(text: str) -> dict:
    # json.loads alone accepts Infinity and NaN; a JSON reader elsewhere (jq, Go, JS) does not
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize(
    ("value", "low", "high", "written"),
    [
        pytest.param(float("inf"), 0.0, 100.0, {"value": None, "min": 0, "max": 100}, id="infinite value"),
        pytest.param(float("-inf"), 0.0, 100.0, {"value": None, "min": 0, "max": 100}, id="minus infinity"),
        pytest.param(float("nan"), 0.0, 100.0, {"value": None, "min": 0, "max": 100}, id="not a number"),
        pytest.param(1.5, float("-inf"), float("inf"), {"value": 1.5, "min": None, "max": None},
                     id="infinite bounds"),
        pytest.param(None, 0.0, None, {"value": None, "min": 0, "max": None}, id="unknown value stays null"),
        pytest.param(42.0, 0.0, 100.0, {"value": 42, "min": 0, "max": 100}, id="finite values unchanged"),
    ],
)  # fmt: skip
def test_non_finite_numbers_are_written_as_null(make_notifier, tmp_path, value, low, high, written) -> None:
    path = tmp_path / "alerts.jsonl"
    notification = note()
    notification.metrics = [Metric("odd_value", value, "", {"k": "v"}, None, None, low, high)]

    make_notifier(FileNotifier, path=str(path)).send(notification)

    [line] = path.read_text().splitlines()
    assert "Infinity" not in line and "NaN" not in line
    [metric] = _strict_json(line)["metrics"]
    assert {key: metric[key] for key in written} == written
    assert (metric["name"], metric["labels"]) == ("odd_value", {"k": "v"})
