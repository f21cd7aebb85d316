"""The `http` check against real HTTP and HTTPS servers on 127.0.0.1."""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from ce_agent.checks.http import BODY_MATCH_LIMIT, HttpCheck, display_url
from ce_agent.contracts import Check, Result, Status
from ce_agent.options import convert_options
from tests.checks.netservers import (
    UNRESOLVABLE,
    CertificateAuthority,
    IssuedCert,
    Route,
    Served,
    http_server,
    refused_port,
    server_context,
    silent_port,
)

MakeCheck = Callable[..., Check]

BIG = b"x" * BODY_MATCH_LIMIT + b"needle"
ROUTES = {
    "/": Route(200, b"<h1>hello world</h1>", {"Content-Type": "text/html; charset=utf-8"}),
    "/error": Route(500, b"boom"),
    "/empty": Route(204),
    "/old": Route(301, headers={"Location": "/new"}),
    "/new": Route(200, b"moved here"),
    "/twice": Route(302, headers={"Location": "/old"}),
    "/loop": Route(302, headers={"Location": "/loop"}),
    "/form": Route(303, headers={"Location": "/new"}),
    "/big": Route(200, BIG),
    "/latin1": Route(200, "café".encode("latin-1"), {"Content-Type": "text/plain; charset=iso-8859-1"}),
}
SUMMARY = re.compile(r"^HTTP (?P<code>\d+) (?P<reason>[\w ]*) in (?P<seconds>\d+\.\d{3})s(?P<rest>.*)$")


@pytest.fixture(scope="module")
def server() -> Iterator[Served]:
    with http_server(ROUTES) as served:
        yield served


def fetch(make_check: MakeCheck, url: str, timeout: float = 5.0, **options: object) -> Result:
    return make_check(HttpCheck, {"url": url, **options}, timeout=timeout).run()


@pytest.mark.parametrize(
    ("path", "options", "status", "code", "rest"),
    [
        pytest.param("/", {}, Status.OK, 200, "", id="200 is fine by default"),
        pytest.param("/empty", {}, Status.OK, 204, "", id="any 2xx is fine by default"),
        pytest.param("/nowhere", {}, Status.CRITICAL, 404, " (expected 200-399)", id="404 is not"),
        pytest.param("/error", {}, Status.CRITICAL, 500, " (expected 200-399)", id="nor is 500"),
        pytest.param("/nowhere", {"expect_status": 404}, Status.OK, 404, "", id="unless it is the expected code"),
        pytest.param("/", {"expect_status": [201, 204]}, Status.CRITICAL, 200, " (expected 201 or 204)",
                     id="a list of accepted codes"),
        pytest.param("/old", {}, Status.OK, 200, " after 1 redirect", id="redirects are followed"),
        pytest.param("/twice", {}, Status.OK, 200, " after 2 redirects", id="redirect chains too"),
        pytest.param("/old", {"follow_redirects": False}, Status.OK, 301, "",
                     id="an unfollowed redirect is a 3xx, fine by default"),
        pytest.param("/old", {"follow_redirects": False, "expect_status": 200}, Status.CRITICAL, 301,
                     " (expected 200)", id="unless 200 is expected"),
        pytest.param("/", {"expect_body": r"hello \w+"}, Status.OK, 200, "", id="body matches"),
        pytest.param("/", {"expect_body": "goodbye"}, Status.CRITICAL, 200, ", body does not match 'goodbye'",
                     id="body does not match"),
        pytest.param("/latin1", {"expect_body": "café"}, Status.OK, 200, "", id="the declared charset is used"),
        pytest.param("/big", {"expect_body": "x{1000}"}, Status.OK, 200, "", id="big body, match early"),
        pytest.param("/big", {"expect_body": "needle"}, Status.CRITICAL, 200, ", body does not match 'needle'",
                     id="only the first MiB of the body is searched"),
        pytest.param("/", {"warning": 5, "critical": 10}, Status.OK, 200, "", id="fast enough"),
        pytest.param("/", {"warning": "~:0"}, Status.WARNING, 200, "", id="slower than the warning threshold"),
        pytest.param("/", {"critical": "~:0"}, Status.CRITICAL, 200, "", id="slower than the critical threshold"),
    ],
)  # fmt: skip
def test_status_code_body_and_time(
    make_check: MakeCheck, server: Served, path: str, options: dict, status: Status, code: int, rest: str
) -> None:
    result = fetch(make_check, server.url + path, **options)
    assert result.status == status, result.summary
    match = SUMMARY.match(result.summary)
    assert match, result.summary
    assert (int(match["code"]), match["rest"]) == (code, rest)
    metrics = {m.name: m for m in result.metrics}
    assert sorted(metrics) == ["http_content_length_bytes", "http_response_seconds", "http_status_code"]
    assert metrics["http_status_code"].value == code
    assert metrics["http_response_seconds"].value == pytest.approx(float(match["seconds"]), abs=0.001)
    assert all(m.labels == {"url": server.url + path} for m in result.metrics)


def test_metrics(make_check: MakeCheck, server: Served) -> None:
    result = fetch(make_check, server.url + "/big", warning="0.5", critical="2")
    by_name = {m.name: (m.value, m.unit, m.warn, m.crit) for m in result.metrics}
    seconds = by_name.pop("http_response_seconds")
    assert by_name == {
        "http_status_code": (200.0, "", None, None),
        "http_content_length_bytes": (float(len(BIG)), "B", None, None),
    }
    assert seconds[1:] == ("s", "0.5", "2") and 0 < seconds[0] < 2


def test_head_reports_the_declared_length(make_check: MakeCheck, server: Served) -> None:
    result = fetch(make_check, server.url + "/", method="head")
    assert result.summary.startswith("HTTP 200 OK")
    assert {m.name: m.value for m in result.metrics}["http_content_length_bytes"] == len(ROUTES["/"].body)
    assert server.requests[-1].method == "HEAD"


def test_method_headers_and_body_are_sent(make_check: MakeCheck, server: Served) -> None:
    result = fetch(
        make_check, server.url + "/new", method="PUT", headers={"X-Probe": "ce-agent"}, body='{"ping": 1}'
    )
    assert result.status == Status.OK
    request = server.requests[-1]
    assert (request.method, request.path, request.headers["X-Probe"], request.body) == (
        "PUT",
        "/new",
        "ce-agent",
        b'{"ping": 1}',
    )


def test_a_303_after_post_is_followed_with_a_get(make_check: MakeCheck, server: Served) -> None:
    result = fetch(make_check, server.url + "/form", method="POST", body="a=1")
    assert result.status == Status.OK
    assert [(r.method, r.path, r.body) for r in server.requests[-2:]] == [
        ("POST", "/form", b"a=1"),
        ("GET", "/new", b""),
    ]


def test_redirect_loops_are_critical(make_check: MakeCheck, server: Served) -> None:
    result = fetch(make_check, server.url + "/loop")
    assert (result.status, result.summary) == (Status.CRITICAL, f"{server.url}/loop: more than 10 redirects")


def test_credentials_in_the_url_are_sent_but_never_shown(make_check: MakeCheck, server: Served) -> None:
    port = server.url.rsplit(":", 1)[1]
    url = f"http://monitor:s3cr%40t@127.0.0.1:{port}/"
    result = fetch(make_check, url, expect_body="nope")
    sent = server.requests[-1].headers["Authorization"]
    assert sent == "Basic " + base64.b64encode(b"monitor:s3cr@t").decode()
    shown = f"{result.summary} {[dict(m.labels) for m in result.metrics]}"
    assert "s3cr" not in shown and "monitor" not in shown
    assert result.metrics[0].labels == {"url": f"http://127.0.0.1:{port}/"}


def test_credentials_are_not_forwarded_to_another_host(make_check: MakeCheck) -> None:
    with http_server({"/landing": Route(200, b"ok")}) as other:
        # "localhost" is another host name for the same server: enough for the check to drop them
        other_url = other.url.replace("127.0.0.1", "localhost")
        with http_server({"/go": Route(302, headers={"Location": other_url + "/landing"})}) as first:
            url = first.url.replace("http://", "http://monitor:secret@") + "/go"
            result = fetch(make_check, url)
    assert result.status == Status.OK, result.summary
    assert "Authorization" in first.requests[-1].headers
    assert "Authorization" not in other.requests[-1].headers


def test_credentials_are_not_shown_when_the_server_is_down(make_check: MakeCheck) -> None:
    with refused_port() as port:
        result = fetch(make_check, f"http://admin:hunter2@127.0.0.1:{port}/status")
    assert (result.status, result.summary) == (Status.CRITICAL, f"http://127.0.0.1:{port}/status: connection refused")


@pytest.mark.parametrize(
    ("port_maker", "timeout", "reason"),
    [
        pytest.param(refused_port, 2.0, "connection refused", id="nothing listening"),
        pytest.param(silent_port, 0.2, "timed out after 0.2s", id="no answer within the timeout"),
    ],
)
def test_unreachable_servers_are_critical(
    make_check: MakeCheck, port_maker: Callable, timeout: float, reason: str
) -> None:
    with port_maker() as port:
        started = time.monotonic()
        result = fetch(make_check, f"http://127.0.0.1:{port}/", timeout=timeout)
        elapsed = time.monotonic() - started
    assert (result.status, result.summary, result.metrics) == (
        Status.CRITICAL,
        f"http://127.0.0.1:{port}/: {reason}",
        [],
    )
    assert elapsed < timeout + 0.5


def test_cancel_unblocks_a_waiting_check(make_check: MakeCheck) -> None:
    # what the runner does when run() overruns its timeout: the check must return, and soon
    with silent_port() as port:
        check = make_check(HttpCheck, {"url": f"http://127.0.0.1:{port}/"}, timeout=30)
        results: list[Result] = []
        worker = threading.Thread(target=lambda: results.append(check.run()), daemon=True)
        started = time.monotonic()
        worker.start()
        time.sleep(0.1)
        check.cancel()
        worker.join(5)
    assert not worker.is_alive() and time.monotonic() - started < 2
    assert results[0].status == Status.CRITICAL


def test_a_name_that_does_not_resolve_is_critical(make_check: MakeCheck) -> None:
    result = fetch(make_check, f"http://{UNRESOLVABLE}/")
    assert (result.status, result.summary) == (
        Status.CRITICAL,
        f"http://{UNRESOLVABLE}/: cannot resolve host (Name or service not known)",
    )


# --- HTTPS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("http-ca"))


@pytest.fixture(scope="module")
def certs(ca: CertificateAuthority) -> dict[str, IssuedCert]:
    return {"valid": ca.issue("valid", 30), "expired": ca.issue("expired", -1)}


@pytest.mark.parametrize(
    ("cert", "options", "status", "summary"),
    [
        pytest.param("valid", {"ca_file": "CA"}, Status.OK, "HTTP 200 OK in", id="trusted with ca_file"),
        pytest.param("valid", {}, Status.CRITICAL,
                     "{url}: TLS certificate not trusted: unable to get local issuer certificate",
                     id="the system CAs do not know the test CA"),
        pytest.param("valid", {"verify_tls": False}, Status.OK, "HTTP 200 OK in", id="verify_tls false"),
        pytest.param("expired", {"ca_file": "CA"}, Status.CRITICAL,
                     "{url}: TLS certificate not trusted: certificate has expired", id="expired"),
        pytest.param("expired", {"verify_tls": False}, Status.OK, "HTTP 200 OK in",
                     id="expired but verify_tls false"),
    ],
)  # fmt: skip
def test_https(
    make_check: MakeCheck,
    ca: CertificateAuthority,
    certs: dict[str, IssuedCert],
    cert: str,
    options: dict,
    status: Status,
    summary: str,
) -> None:
    if options.get("ca_file") == "CA":
        options = {**options, "ca_file": str(ca.cert)}
    with http_server({"/": Route(200, b"secure")}, tls=server_context(certs[cert])) as served:
        url = served.url + "/"
        result = fetch(make_check, url, **options)
    assert result.status == status, result.summary
    assert result.summary.startswith(summary.format(url=url))


def test_https_host_name_mismatch(make_check: MakeCheck, ca: CertificateAuthority) -> None:
    other = ca.issue("elsewhere", 30, sans="DNS:elsewhere.example")
    with http_server({"/": Route(200)}, tls=server_context(other)) as served:
        result = fetch(make_check, served.url + "/", ca_file=str(ca.cert))
    assert result.status == Status.CRITICAL
    assert result.summary.endswith(
        "TLS certificate not trusted: IP address mismatch, certificate is not valid for '127.0.0.1'."
    )


def test_a_missing_ca_file_is_a_configuration_error(make_check: MakeCheck, tmp_path: Path) -> None:
    check = make_check(HttpCheck, {"url": "https://127.0.0.1:1/", "ca_file": str(tmp_path / "no.pem")})
    # raised, not CRITICAL: the runner reports it as UNKNOWN, the server is not to blame
    with pytest.raises(ValueError, match="cannot load ca_file"):
        check.run()


# --- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param({}, "missing required option 'url'", id="url is required"),
        pytest.param({"url": "ftp://example.org/"}, "url: must be an http:// or https:// URL", id="ftp"),
        pytest.param({"url": "example.org"}, "url: must be an http:// or https:// URL", id="no scheme"),
        pytest.param({"url": "http://u:pw@example.org:http/"}, "url: invalid port: 'http://example.org:http/'",
                     id="bad port, and the password is not shown"),
        pytest.param({"url": "http://x/", "expect_body": "(("},
                     "expect_body: not a valid regular expression: missing ), unterminated subpattern at position 1",
                     id="bad regex"),
        pytest.param({"url": "http://x/", "expect_status": "ok"}, "option 'expect_status'", id="status not a number"),
        pytest.param({"url": "http://x/", "expect_status": [200, "ok"]}, "option 'expect_status[1]'",
                     id="one of the statuses not a number"),
        pytest.param({"url": "http://x/", "expect_status": 20}, "option 'expect_status': expected int >= 100",
                     id="status too small"),
        pytest.param({"url": "http://x/", "expect_status": [200, 2000]},
                     "option 'expect_status[1]': expected int <= 599", id="status too large"),
        pytest.param({"url": "http://x/", "expect_status": []}, "option 'expect_status': expected array of length >= 1",
                     id="no status accepted"),
        pytest.param({"url": "http://bad host/"}, "url: must not contain spaces or control characters",
                     id="space in the URL"),
        pytest.param({"url": "http://x/", "method": "GET /admin"}, "method: not a valid HTTP method: 'GET /admin'",
                     id="space in the method"),
        pytest.param({"url": "http://x/", "headers": {"X Token": "1"}}, "headers: not a valid header name: 'X Token'",
                     id="space in a header name"),
        pytest.param({"url": "http://x/", "headers": {"Authorization": "Bearer s3cret\r\nX-Evil: 1"}},
                     "headers: the value of 'Authorization' must be Latin-1 text without line breaks",
                     id="line break in a header value, which is not shown"),
        pytest.param({"url": "http://x/", "headers": {"X-Price": "5 \u20ac"}},
                     "headers: the value of 'X-Price' must be Latin-1 text without line breaks",
                     id="header value not Latin-1"),
        pytest.param({"url": "http://x/", "timeout": 3}, "unknown option 'timeout'", id="unknown option"),
    ],
)  # fmt: skip
def test_invalid_options(raw: dict, error: str) -> None:
    _, errors = convert_options(HttpCheck.Options, raw)
    assert len(errors) == 1 and error in errors[0].message, errors
    assert "s3cret" not in errors[0].message


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"method": "PROPFIND"}, id="any method token"),
        pytest.param({"headers": {"X-Name": "caf\u00e9", "Accept": "*/*"}}, id="Latin-1 header values"),
        pytest.param({"expect_status": 599}, id="highest status"),
        pytest.param({"expect_status": [100, 204]}, id="a list of statuses"),
        pytest.param({"expect_body": r"^OK\b"}, id="a regex"),
    ],
)
def test_valid_options(raw: dict) -> None:
    options, errors = convert_options(HttpCheck.Options, {"url": "http://x/", **raw})
    assert errors == [] and options is not None


def test_method_is_upper_cased() -> None:
    options, _ = convert_options(HttpCheck.Options, {"url": "http://x/", "method": "post"})
    assert options.method == "POST"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param("https://u:p@h.example:8443/a?b=c", "https://h.example:8443/a?b=c", id="user and password"),
        pytest.param("http://token@h.example/", "http://h.example/", id="user only"),
        pytest.param("http://h.example/x@y", "http://h.example/x@y", id="an @ in the path is kept"),
        pytest.param("http://h.example/", "http://h.example/", id="nothing to strip"),
    ],
)
def test_display_url_strips_userinfo(url: str, shown: str) -> None:
    assert display_url(url) == shown


def test_examples_are_valid_playbook_tasks() -> None:
    tasks = yaml.safe_load(HttpCheck.EXAMPLES)
    assert tasks
    for task in tasks:
        _, errors = convert_options(HttpCheck.Options, task["http"])
        assert not errors, (task["name"], errors)
