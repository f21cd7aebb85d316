"""A group message waiting out its group_wait takes in the alerts of later evaluations (Alertmanager's grouping)."""

from __future__ import annotations

import pytest

from ce_agent.alerting.pipeline import compose, merge_parts
from ce_agent.contracts import Status


def _part(key: str, kind: str = "firing", status: int = 2) -> dict:
    return {"key": key, "kind": kind, "prefix": "RESOLVED" if kind == "resolved" else Status(status).name,
            "title": f"{key} on web1", "lines": [f"{key} summary"], "status": 0 if kind == "resolved" else status,
            "labels": {"check": key, "host": "web1", "severity": "critical"}, "host": "web1", "play": "p",
            "summary": f"{key} summary", "metrics": []}


@pytest.mark.parametrize("waiting, new, expected", [
    pytest.param([_part("a")], [_part("b")], [("a", "firing"), ("b", "firing")], id="another alert joins the group"),
    pytest.param([_part("a", status=1)], [_part("a", status=2)], [("a", "firing")], id="a newer part replaces the older"),
    pytest.param([_part("a"), _part("b")], [_part("a", "resolved")], [("b", "firing")],
                 id="fired and resolved before the message left: dropped"),
    pytest.param([_part("a")], [_part("a", "resolved")], [], id="nothing left to tell"),
    pytest.param([_part("a", "resolved")], [_part("b")], [("a", "resolved"), ("b", "firing")],
                 id="a resolved part stays with a new firing one"),
])
def test_merging_parts(waiting: list[dict], new: list[dict], expected: list[tuple[str, str]]) -> None:
    assert [(p["key"], p["kind"]) for p in merge_parts(waiting, new)] == expected


def test_a_merged_group_reads_like_alertmanagers() -> None:
    message = compose("ops", merge_parts([_part("Disk /")], [_part("Disk /var"), _part("Load", "resolved")]))
    assert message.title == "[FIRING:2, RESOLVED:1] host=web1 severity=critical"
    assert message.body.splitlines()[0] == "== CRITICAL Disk / on web1"
    assert "== RESOLVED Load on web1" in message.body
    assert message.kind == "group" and message.status is Status.CRITICAL


def test_one_part_reads_as_a_single_alert() -> None:
    message = compose("ops", [_part("Disk /", status=1)])
    assert (message.title, message.kind, message.status) == ("[WARNING] Disk / on web1", "firing", Status.WARNING)


def test_a_group_says_flapping_and_stopped_flapping_not_firing() -> None:
    message = compose("ops", [_part("a", "flapping_stop"), _part("b", "resolved")])
    assert message.title.startswith("[STOPPED FLAPPING:1, RESOLVED:1]")
