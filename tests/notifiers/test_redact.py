"""Redactor: which parts of a channel URL are secrets, how they are scrubbed, and the privacy form."""

from __future__ import annotations

import logging

import pytest

from ce_agent.redact import RedactingFilter, Redactor

# (url, its privacy form, secrets that must be scrubbed, parts that must stay readable).
# The rules: the user-info password always; query values named like credentials always; in
# non-http(s) schemes also a host that is not a host name, and path segments and other query
# values of 8+ characters (addresses, #channels and @users excepted); in http(s) URLs only
# path segments and query values of 16+ characters mixing letters and digits.
URLS = [
    pytest.param(
        "mailtos://alerts:S3cr3t-Pw@smtp.example.com?to=ops@example.com&mode=starttls",
        "mailtos://alerts:****@smtp.example.com?to=ops@example.com&mode=starttls",
        ["S3cr3t-Pw"],
        ["alerts", "smtp.example.com", "ops@example.com", "starttls"],
        id="mailtos",
    ),
    pytest.param(
        "mailto://user:p%40ss%2Fword@127.0.0.1:2525/ops@example.com?from=agent@example.com",
        "mailto://user:****@127.0.0.1:2525/ops@example.com?from=agent@example.com",
        ["p%40ss%2Fword", "p@ss/word"],
        ["127.0.0.1", "ops@example.com", "agent@example.com"],
        id="mailto-encoded-password",
    ),
    pytest.param(
        "json://user:pass@host.example.com:8080/alerts",
        "json://user:****@host.example.com:8080/alerts",
        ["pass"],
        ["host.example.com", "alerts"],
        id="json-password",
    ),
    pytest.param(
        "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general",
        "slack://****/****/****/#general",
        ["T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7FQ"],
        ["#general"],
        id="slack-tokens",
    ),
    pytest.param(
        "discord://123456789012345678/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
        "discord://****/****",
        ["123456789012345678", "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"],
        [],
        id="discord-id-and-token",
    ),
    pytest.param(
        "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/-1001234567",
        "tgram://****/****",
        ["123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "-1001234567"],
        [],
        id="telegram-bot-token",
    ),
    pytest.param(
        "ntfys://user:pw@ntfy.example.com/alerts-9f3k2?priority=high",
        "ntfys://user:****@ntfy.example.com/****?priority=high",
        ["alerts-9f3k2"],
        ["ntfy.example.com", "high"],
        id="ntfy-topic",
    ),
    pytest.param(
        "ntfy://mysecrettopic",
        "ntfy://****",
        ["mysecrettopic"],
        [],
        id="ntfy-topic-as-host",
    ),
    pytest.param(
        "pagerduty://e93facc04764012d7bfb002500d5d1a6@A1BRTD4JDx/infra?region=eu",
        "pagerduty://****@****/infra?region=eu",
        ["e93facc04764012d7bfb002500d5d1a6", "A1BRTD4JDx"],
        ["infra", "region"],
        id="pagerduty-keys",
    ),
    pytest.param(
        "https://hooks.example.com/services/T000/B000/abcdef1234567890XYZ?apikey=k1&page=2",
        "https://hooks.example.com/services/T000/B000/****?apikey=****&page=2",
        ["abcdef1234567890XYZ", "k1"],
        ["hooks.example.com", "services"],
        id="https-token-in-path-and-query",
    ),
    pytest.param(
        "json://127.0.0.1:8080/hook?Token=abc&webhook_id=w1&Password=pw1&secret=s",
        "json://127.0.0.1:8080/hook?Token=****&webhook_id=****&Password=****&secret=****",
        ["abc", "w1", "pw1"],
        ["127.0.0.1", "hook"],
        id="credential-named-query-values",
    ),
]


@pytest.mark.parametrize(("url", "privacy", "secrets", "readable"), URLS)
def test_privacy_url(url: str, privacy: str, secrets: list[str], readable: list[str]) -> None:
    assert Redactor().privacy_url(url) == privacy


@pytest.mark.parametrize(("url", "privacy", "secrets", "readable"), URLS)
def test_add_url_scrubs_the_secrets_and_keeps_the_rest_readable(
    url: str, privacy: str, secrets: list[str], readable: list[str]
) -> None:
    redactor = Redactor()
    redactor.add_url(url)
    text = f"failed: {url} | " + " | ".join(secrets + readable)

    scrubbed = redactor.scrub(text)

    for secret in secrets:
        assert secret not in scrubbed
    for part in readable:
        assert f"| {part}" in scrubbed or f"{part} |" in scrubbed


@pytest.mark.parametrize(
    ("secrets", "text", "expected"),
    [
        pytest.param(["abcdefgh", "abcdefghij"], "x abcdefghij y", "x **** y", id="longest-first"),
        pytest.param(["pw"], "password: pw, user:pw@host", "password: ****, user:****@host", id="short-only-alone"),
        pytest.param(["p@ss word"], "p%40ss%20word and p@ss word", "**** and ****", id="percent-encoded-too"),
        pytest.param([], "nothing to hide", "nothing to hide", id="no-secrets"),
        pytest.param(["", "   ", None], "nothing to hide", "nothing to hide", id="blank-secrets-ignored"),
        pytest.param(["a.b*c"], "regex a.b*c aXbbc", "regex **** aXbbc", id="regex-characters-literal"),
    ],
)
def test_scrub(secrets: list[str], text: str, expected: str) -> None:
    redactor = Redactor()
    for secret in secrets:
        redactor.add(secret)
    assert redactor.scrub(text) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("mailtos://user:pw@host", "mailtos://****", id="scheme-kept"),
        pytest.param("no scheme at all", "****", id="nothing-kept"),
    ],
)
def test_scheme_only(url: str, expected: str) -> None:
    assert Redactor().scheme_only(url) == expected


def test_unparseable_url_is_a_secret_as_a_whole() -> None:
    redactor = Redactor()
    redactor.add_url("user:hunter2@somewhere")
    assert redactor.privacy_url("user:hunter2@somewhere") == "****"
    assert redactor.scrub("bad url user:hunter2@somewhere") == "bad url ****"


def test_logging_filter_scrubs_formatted_records(caplog: pytest.LogCaptureFixture) -> None:
    redactor = Redactor(["T0ken-1234567"])
    logger = logging.getLogger("ce_agent.tests.redact")
    scrubbing = RedactingFilter(redactor)
    logger.addFilter(scrubbing)
    try:
        with caplog.at_level(logging.INFO, logger="ce_agent.tests.redact"):
            logger.info("POST /hooks/%s failed", "T0ken-1234567")
    finally:
        logger.removeFilter(scrubbing)

    assert caplog.messages == ["POST /hooks/**** failed"]
