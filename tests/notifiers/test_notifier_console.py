"""The `console` notifier: a title line and the body on stdout (or stderr), and it never fails."""

from __future__ import annotations

import sys

import pytest

from ce_agent.contracts import Notification, Status
from ce_agent.notifiers.console import ConsoleNotifier
from ce_agent.options import convert_options


def note(title: str = "web1: Root disk CRITICAL", body: str = "/ 95.2% used\n3.1 GiB free") -> Notification:
    return Notification(channel="term", title=title, body=body, status=Status.CRITICAL)


TITLE = "web1: Root disk CRITICAL"
PRINTED = f"{TITLE}\n/ 95.2% used\n3.1 GiB free\n"


@pytest.mark.parametrize(
    ("options", "notification", "out", "err"),
    [
        pytest.param({}, note(), PRINTED, "", id="stdout-by-default"),
        pytest.param({"stream": "stderr"}, note(), "", PRINTED, id="stderr"),
        pytest.param({}, note(body=""), f"{TITLE}\n", "", id="title-only-when-no-body"),
        pytest.param({}, note(body=TITLE), f"{TITLE}\n", "", id="body-same-as-title"),
        pytest.param({}, note(body="one line\n"), f"{TITLE}\none line\n", "", id="no-doubled-newline"),
    ],
)
def test_prints_title_then_body(make_notifier, capsys, options, notification, out, err) -> None:
    make_notifier(ConsoleNotifier, **options).send(notification)

    assert capsys.readouterr() == (out, err)


def test_a_closed_stream_does_not_fail_the_send(make_notifier, monkeypatch, tmp_path) -> None:
    closed = open(tmp_path / "gone", "w")  # noqa: SIM115 - closed on purpose before use
    closed.close()
    monkeypatch.setattr(sys, "stdout", closed)

    make_notifier(ConsoleNotifier).send(note())


def test_stream_must_be_stdout_or_stderr() -> None:
    options, errors = convert_options(ConsoleNotifier.Options, {"stream": "printer"})
    assert options is None
    assert "'stream'" in errors[0].message
