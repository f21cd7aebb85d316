"""The `apprise` notifier against real receivers on 127.0.0.1: a webhook, an SMTP server, a dead port."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time

import pytest

from ce_agent.contracts import DeliveryError, Notification, Status
from ce_agent.notifiers.apprise import AppriseNotifier
from ce_agent.options import convert_options

CANARY = "CANARY123secret"


def alert(
    status: Status = Status.CRITICAL, title: str = "web1: Root disk CRITICAL", body: str = "/ 95.2% used"
) -> Notification:
    return Notification(channel="ops", title=title, body=body, status=status, host="web1", check="Root disk")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param({}, "missing required option 'urls'", id="urls-required"),
        pytest.param({"urls": []}, "length >= 1", id="urls-not-empty"),
        pytest.param({"urls": "json://h"}, "expected array", id="urls-is-a-list"),
        pytest.param({"urls": ["json://h"], "format": "rtf"}, "'format'", id="format-text-markdown-html"),
        pytest.param({"urls": ["json://h"], "timeout": "soon"}, "duration", id="timeout-is-a-duration"),
        pytest.param({"urls": ["json://h"], "url": "json://h"}, "unknown option 'url'", id="unknown-option"),
    ],
)
def test_invalid_options_are_rejected_with_the_reason(raw: dict, error: str) -> None:
    options, errors = convert_options(AppriseNotifier.Options, raw)
    assert options is None
    assert error in errors[0].message


def test_options_defaults() -> None:
    options, errors = convert_options(AppriseNotifier.Options, {"urls": ["json://127.0.0.1/"]})
    assert errors == []
    assert (options.timeout, options.format) == (10.0, "text")


@pytest.mark.parametrize(
    ("status", "apprise_type"),
    [
        pytest.param(Status.OK, "success", id="ok-is-success"),
        pytest.param(Status.WARNING, "warning", id="warning-is-warning"),
        pytest.param(Status.CRITICAL, "failure", id="critical-is-failure"),
        pytest.param(Status.UNKNOWN, "info", id="unknown-is-info"),
    ],
)
def test_json_webhook_receives_title_body_and_type(webhook, make_notifier, status, apprise_type) -> None:
    notifier = make_notifier(AppriseNotifier, urls=[webhook.url("json", "/alerts")], timeout="5s")

    notifier.send(alert(status))

    [request] = webhook.requests
    assert request.path == "/alerts"
    payload = request.json()
    assert payload["title"] == "web1: Root disk CRITICAL"
    assert payload["message"] == "/ 95.2% used"
    assert payload["type"] == apprise_type


def test_form_webhook_receives_title_and_body(webhook, make_notifier) -> None:
    make_notifier(AppriseNotifier, urls=[webhook.url("form", "/hook")]).send(alert())

    [request] = webhook.requests
    assert request.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    form = request.form()
    assert (form["title"], form["message"]) == ("web1: Root disk CRITICAL", "/ 95.2% used")


def test_every_url_gets_the_message(webhook, make_notifier) -> None:
    urls = [webhook.url("json", "/one"), webhook.url("form", "/two")]
    make_notifier(AppriseNotifier, urls=urls).send(alert())

    assert sorted(r.path for r in webhook.requests) == ["/one", "/two"]


def test_receiver_answering_500_is_a_transient_delivery_error(webhook, make_notifier) -> None:
    webhook.status = 500
    notifier = make_notifier(AppriseNotifier, urls=[webhook.url("json", "/alerts", f"user:{CANARY}@")])

    with pytest.raises(DeliveryError) as caught:
        notifier.send(alert())

    assert caught.value.transient
    message = str(caught.value)
    assert f"json://user:****@127.0.0.1:{webhook.port}/alerts" in message
    assert "500" in message
    assert CANARY not in message
    assert len(webhook.requests) == 1


def test_nothing_listening_fails_quickly(dead_port, make_notifier) -> None:
    notifier = make_notifier(AppriseNotifier, urls=[f"json://127.0.0.1:{dead_port}/alerts"])

    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        notifier.send(alert())

    assert time.monotonic() - started < 3
    assert caught.value.transient
    assert "connection error" in str(caught.value).lower()


def test_timeout_option_bounds_a_receiver_that_never_answers(webhook, make_notifier) -> None:
    webhook.delay = 30
    notifier = make_notifier(AppriseNotifier, urls=[webhook.url()], timeout="0.3s")

    started = time.monotonic()
    with pytest.raises(DeliveryError):
        notifier.send(alert())

    # Apprise's own read timeout is 4 s, and the whole-service bound set from the option 1.6 s:
    # failing well before either shows the option became the request's read timeout.
    assert time.monotonic() - started < 1.2
    assert len(webhook.requests) == 1


def test_read_timeout_written_in_the_url_wins_over_the_option(webhook, make_notifier) -> None:
    webhook.delay = 0.4
    notifier = make_notifier(AppriseNotifier, urls=[webhook.url() + "?rto=5"], timeout="0.1s")

    notifier.send(alert())

    assert len(webhook.requests) == 1


@pytest.mark.parametrize(
    ("url", "named", "reason"),
    [
        pytest.param("nosuchservice://host/path", "nosuchservice://****", "Unparseable URL", id="unknown-scheme"),
        pytest.param(
            f"mailto://user:{CANARY}@127.0.0.1?to=ops@example.com&mode=bogus",
            "mailto://****",
            "secure mode specified (bogus) is invalid",
            id="bad-mail-mode",
        ),
        pytest.param("discord://123456", "discord://****", "Webhook Token", id="discord-without-token"),
        pytest.param("not even a url", "****", "", id="no-scheme"),
    ],
)
def test_invalid_url_is_a_permanent_error_naming_it_without_secrets(make_notifier, url, named, reason) -> None:
    notifier = make_notifier(AppriseNotifier, urls=[url])

    with pytest.raises(DeliveryError) as caught:
        notifier.send(alert())

    assert not caught.value.transient
    message = str(caught.value)
    assert message.startswith(f"invalid Apprise URL {named}")
    assert reason in message
    assert CANARY not in message


def test_mail_arrives_over_plain_smtp_with_the_title_as_subject(smtp_server, make_notifier) -> None:
    url = (
        f"mailto://{smtp_server.user}:{smtp_server.password}@127.0.0.1:{smtp_server.port}"
        "?from=agent@example.com&to=ops@example.com&mode=insecure"
    )
    make_notifier(AppriseNotifier, urls=[url], timeout="5s").send(alert())

    assert smtp_server.logins == [(smtp_server.user, smtp_server.password)]
    assert smtp_server.recipients == [["ops@example.com"]]
    [message] = smtp_server.messages
    assert message["Subject"] == "web1: Root disk CRITICAL"
    assert "ops@example.com" in message["To"]
    assert "/ 95.2% used" in message.get_body(("plain", "html")).get_content()


@pytest.mark.parametrize(
    ("body_format", "expected"),
    [
        pytest.param("markdown", "<strong>full</strong>", id="markdown-becomes-html"),
        pytest.param("text", "**full**", id="text-stays-literal"),
    ],
)
def test_format_tells_apprise_how_the_body_is_written(smtp_server, make_notifier, body_format, expected) -> None:
    url = (
        f"mailto://{smtp_server.user}:{smtp_server.password}@127.0.0.1:{smtp_server.port}"
        "?from=agent@example.com&to=ops@example.com&mode=insecure&format=html"
    )
    make_notifier(AppriseNotifier, urls=[url], format=body_format).send(alert(body="disk **full**"))

    [message] = smtp_server.messages
    assert expected in message.get_body(("html",)).get_content()


def test_rejected_smtp_login_is_a_delivery_error_without_the_password(smtp_server, make_notifier) -> None:
    url = (
        f"mailto://{smtp_server.user}:{CANARY}@127.0.0.1:{smtp_server.port}"
        "?from=agent@example.com&to=ops@example.com&mode=insecure"
    )
    with pytest.raises(DeliveryError) as caught:
        make_notifier(AppriseNotifier, urls=[url], timeout="5s").send(alert())

    assert caught.value.transient
    # smtplib tries each mechanism the server offers (PLAIN, then LOGIN) before giving up.
    assert set(smtp_server.logins) == {(smtp_server.user, CANARY)}
    assert smtp_server.messages == []
    assert CANARY not in str(caught.value)


@pytest.mark.parametrize(
    "url_template",
    [
        pytest.param("json://user:{canary}@127.0.0.1:{dead}/alerts", id="json-password"),
        pytest.param("json://127.0.0.1:{dead}/hooks/{canary}", id="json-path-token"),
        pytest.param("json://user:{canary}@127.0.0.1:{hook}/alerts", id="json-password-500"),
        pytest.param("form://127.0.0.1:{hook}/hooks/{canary}?token={canary}", id="form-token-500"),
        pytest.param(
            "mailto://user:{canary}@127.0.0.1:{dead}?from=agent@example.com&to=ops@example.com&mode=insecure", id="mail"
        ),
        pytest.param("mailto://user:{canary}@127.0.0.1?to=x&mode=bogus", id="invalid-mail"),
    ],
)
def test_a_secret_never_reaches_the_error_the_output_or_the_logs(
    webhook, dead_port, make_notifier, capsys, caplog, url_template
) -> None:
    webhook.status = 500
    caplog.set_level(logging.DEBUG)
    url = url_template.format(canary=CANARY, dead=dead_port, hook=webhook.port)
    notifier = make_notifier(AppriseNotifier, urls=[url], timeout="2s")

    with pytest.raises(DeliveryError) as caught:
        notifier.send(alert())

    out, err = capsys.readouterr()
    assert caplog.records, "Apprise logged nothing: the log check would prove nothing"
    for where, text in [("error", str(caught.value)), ("stdout", out), ("stderr", err), ("logs", caplog.text)]:
        assert CANARY not in text, f"the secret leaked into {where}"


def test_apprise_is_imported_only_when_sending_and_keeps_no_files(webhook, tmp_path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from ce_agent.contracts import Notification, Status, TaskContext
        from ce_agent.notifiers.apprise import AppriseNotifier
        from ce_agent.options import convert_options

        options, errors = convert_options(AppriseNotifier.Options, {{"urls": ["{webhook.url()}"]}})
        notifier = AppriseNotifier(options, TaskContext("t", "h"))
        assert "apprise" not in sys.modules, "imported before anything was sent"
        notifier.send(Notification("c", "title", "body", Status.OK))
        assert "apprise" in sys.modules
        """
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "XDG_DATA_HOME": str(home / "d")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30)

    assert done.returncode == 0, done.stderr
    assert len(webhook.requests) == 1
    assert list(home.iterdir()) == [], "Apprise wrote persistent storage under HOME"


# --- config_problems: what `ce-agent validate` says about an apprise channel -----------------------


def problems_of(*urls: str) -> list[str]:
    options, errors = convert_options(AppriseNotifier.Options, {"urls": list(urls)})
    assert errors == []
    return AppriseNotifier.config_problems(options)


@pytest.mark.parametrize(
    ("urls", "problems"),
    [
        pytest.param(["json://127.0.0.1:8080/alerts"], [], id="valid-json-url"),
        pytest.param(
            ["json://127.0.0.1/", f"mailtos://alerts:{CANARY}@smtp.example.com?to=ops@example.com"], [],
            id="valid-urls",
        ),
        pytest.param(["nosuchservice://host/path"], ["not a URL Apprise knows: nosuchservice://****"],
                     id="unknown-scheme"),
        pytest.param(
            [f"mailto://user:{CANARY}@127.0.0.1?to=ops@example.com&mode=bogus"],
            ["not a URL Apprise knows: mailto://****: The secure mode specified (bogus) is invalid."],
            id="mailto-with-bad-mode",
        ),
        pytest.param(
            ["discord://123456"],
            ["not a URL Apprise knows: discord://****: An invalid Discord Webhook Token (None) was specified."],
            id="discord-without-token",
        ),
        pytest.param(
            ["json://127.0.0.1/", f"nosuchservice://{CANARY}/x", f"ntfy://user:{CANARY}@ntfy.example.com/t?mode=weird"],
            [
                "urls[1]: not a URL Apprise knows: nosuchservice://****",
                "urls[2]: not a URL Apprise knows: ntfy://****: An invalid ntfy Mode (weird) was specified.",
            ],
            id="which-of-several-urls",
        ),
    ],
)  # fmt: skip
def test_config_problems_name_the_urls_apprise_cannot_use(urls: list[str], problems: list[str]) -> None:
    assert problems_of(*urls) == problems


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"mailto://user:{CANARY}@127.0.0.1?to=ops@example.com&mode=bogus", id="mail-password"),
        pytest.param(f"nosuchservice://user:{CANARY}@{CANARY}/{CANARY}?token={CANARY}", id="unknown-scheme"),
        pytest.param(f"tgram://{CANARY}/", id="telegram-bot-token"),
        pytest.param(f"slack://{CANARY}/{CANARY}", id="slack-tokens"),
        pytest.param(f"mailtos://user:pw@smtp.example.com?to=x@example.com&pass={CANARY}&mode=x", id="query-password"),
    ],
)
def test_config_problems_never_show_a_secret(url: str, capsys, caplog) -> None:
    caplog.set_level(logging.DEBUG)

    problems = problems_of(url)

    assert problems, "a valid URL would prove nothing"
    out, err = capsys.readouterr()
    assert caplog.records, "Apprise logged nothing: the log check would prove nothing"
    for where, text in [("problems", "\n".join(problems)), ("stdout", out), ("stderr", err), ("logs", caplog.text)]:
        assert CANARY not in text, f"the secret leaked into {where}"


def test_config_problems_send_nothing(webhook) -> None:
    assert problems_of(webhook.url("json", "/alerts"), webhook.url("form", "/hook")) == []
    assert webhook.requests == []
