"""The agent's HTTP server: every endpoint, its status codes and content types, and its failures."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from ce_agent.contracts import Metric, Result, Status
from ce_agent.metrics import build_registry, render_text
from ce_agent.server import AgentServer, parse_address

TIMEOUT_S = 5


@dataclass
class FakeProvider:
    """A provider whose answers the test sets; `broken` names a method that raises."""

    metrics: str = "# HELP up Up.\n# TYPE up gauge\nup 1\n"
    is_live: bool = True
    is_ready: bool = True
    reasons: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=lambda: {"title": "ce-agent on web1", "checks": 3})
    firing: list[dict[str, Any]] = field(default_factory=list)
    broken: str = ""

    def _maybe_raise(self, name: str) -> None:
        if self.broken == name:
            raise RuntimeError("secret detail that must not reach the client")

    def metrics_text(self) -> str:
        self._maybe_raise("metrics_text")
        return self.metrics

    def live(self) -> bool:
        self._maybe_raise("live")
        return self.is_live

    def ready(self) -> tuple[bool, list[str]]:
        self._maybe_raise("ready")
        return self.is_ready, self.reasons

    def status(self) -> dict[str, Any]:
        self._maybe_raise("status")
        return self.state

    def alerts(self) -> list[dict[str, Any]]:
        self._maybe_raise("alerts")
        return self.firing


@dataclass
class Response:
    code: int
    headers: dict[str, str]
    body: str


@dataclass
class Served:
    provider: FakeProvider
    server: AgentServer

    def url(self, path: str) -> str:
        return f"http://{self.server.address}{path}"

    def fetch(self, path: str, method: str = "GET") -> Response:
        request = urllib.request.Request(self.url(path), method=method)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as r:
                return Response(r.status, dict(r.headers), r.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            with e:
                return Response(e.code, dict(e.headers), e.read().decode("utf-8"))


@pytest.fixture
def served() -> Iterator[Served]:
    provider = FakeProvider()
    server = AgentServer(provider, "127.0.0.1:0")
    server.start()
    try:
        yield Served(provider, server)
    finally:
        server.stop()


TEXT = "text/plain; charset=utf-8"


@pytest.mark.parametrize(("path", "setup", "code", "content_type", "body"), [
    pytest.param("/metrics", {}, 200, "text/plain; version=0.0.4; charset=utf-8",
                 "# HELP up Up.\n# TYPE up gauge\nup 1\n", id="metrics"),
    pytest.param("/metrics?name[]=up", {}, 200, "text/plain; version=0.0.4; charset=utf-8",
                 "# HELP up Up.\n# TYPE up gauge\nup 1\n", id="metrics-query-string-ignored"),
    pytest.param("/livez", {}, 200, TEXT, "ok\n", id="livez"),
    pytest.param("/livez", {"is_live": False}, 503, TEXT, "not live\n", id="livez-dead"),
    pytest.param("/readyz", {}, 200, TEXT, "ok\n", id="readyz"),
    pytest.param("/readyz", {"is_ready": False, "reasons": ["config not loaded", "state not writable"]},
                 503, TEXT, "config not loaded\nstate not writable\n", id="readyz-reasons-one-per-line"),
    pytest.param("/readyz", {"is_ready": False}, 503, TEXT, "not ready\n", id="readyz-without-reasons"),
    pytest.param("/healthz", {}, 200, TEXT, "ok\n", id="healthz"),
    pytest.param("/healthz", {"is_ready": False, "reasons": ["scheduler stalled"]}, 503, TEXT,
                 "scheduler stalled\n", id="healthz-not-ready"),
    pytest.param("/healthz", {"is_live": False, "is_ready": False, "reasons": ["scheduler stalled"]}, 503, TEXT,
                 "not live\nscheduler stalled\n", id="healthz-neither"),
    pytest.param("/api/v1/status", {}, 200, "application/json",
                 {"version": 1, "title": "ce-agent on web1", "checks": 3}, id="status"),
    pytest.param("/api/v1/status", {"state": {"version": "0.1.0"}}, 200, "application/json",
                 {"version": 1}, id="status-api-version-wins"),
    pytest.param("/api/v1/alerts", {}, 200, "application/json", {"version": 1, "alerts": []}, id="alerts-none"),
    pytest.param("/api/v1/alerts", {"firing": [{"name": "Disk full", "status": "CRITICAL"}]}, 200,
                 "application/json", {"version": 1, "alerts": [{"name": "Disk full", "status": "CRITICAL"}]},
                 id="alerts"),
    pytest.param("/nope", {}, 404, TEXT, "not found\n", id="unknown-path"),
    pytest.param("/metrics/", {}, 404, TEXT, "not found\n", id="trailing-slash-is-another-path"),
])
def test_endpoints(served: Served, path: str, setup: dict[str, Any], code: int, content_type: str,
                   body: str | dict[str, Any]) -> None:
    for key, value in setup.items():
        setattr(served.provider, key, value)
    got = served.fetch(path)
    assert got.code == code
    assert got.headers["Content-Type"] == content_type
    assert int(got.headers["Content-Length"]) == len(got.body.encode("utf-8"))
    assert (json.loads(got.body) if isinstance(body, dict) else got.body) == body


def test_status_page_refreshes_and_shows_readiness_and_alerts(served: Served) -> None:
    served.provider.firing = [{"name": "Disk full", "host": "web1", "status": "CRITICAL"}]
    got = served.fetch("/")
    assert got.code == 200 and got.headers["Content-Type"] == "text/html; charset=utf-8"
    assert '<meta http-equiv="refresh" content="10">' in got.body
    assert "<title>ce-agent on web1</title>" in got.body
    assert "Ready" in got.body and "Not ready" not in got.body
    assert "<th>name</th><th>host</th><th>status</th>" in got.body
    assert "<td>Disk full</td><td>web1</td><td>CRITICAL</td>" in got.body

    served.provider.is_ready, served.provider.reasons = False, ["config not loaded"]
    served.provider.firing = []
    got = served.fetch("/")
    assert "Not ready" in got.body and "<li>config not loaded</li>" in got.body
    assert "No alerts." in got.body


def test_status_page_escapes_every_value(served: Served) -> None:
    evil = "<script>alert(1)</script>"
    served.provider.state = {"title": evil, evil: evil}
    served.provider.is_ready, served.provider.reasons = False, [evil]
    served.provider.firing = [{"name": evil, evil: {"label": evil}}]
    body = served.fetch("/").body
    assert "<script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert body.count("&lt;script&gt;") >= 6  # title (twice), status key and value, reason, alert columns


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_not_allowed(served: Served, method: str) -> None:
    got = served.fetch("/metrics", method)
    assert got.code == 405
    assert got.headers["Allow"] == "GET, HEAD"
    assert got.body == "method not allowed\n"


@pytest.mark.parametrize(("path", "code"), [
    pytest.param("/metrics", 200, id="metrics"),
    pytest.param("/readyz", 200, id="readyz"),
    pytest.param("/", 200, id="page"),
    pytest.param("/nope", 404, id="unknown-path"),
])
def test_head_sends_the_headers_of_get_without_a_body(served: Served, path: str, code: int) -> None:
    head, get = served.fetch(path, "HEAD"), served.fetch(path)
    assert head.code == get.code == code
    assert head.body == ""
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    assert head.headers["Content-Length"] == get.headers["Content-Length"] != "0"


@pytest.mark.parametrize(("broken", "path"), [
    pytest.param("metrics_text", "/metrics", id="metrics"),
    pytest.param("live", "/livez", id="livez"),
    pytest.param("ready", "/readyz", id="readyz"),
    pytest.param("ready", "/healthz", id="healthz"),
    pytest.param("status", "/api/v1/status", id="status"),
    pytest.param("alerts", "/api/v1/alerts", id="alerts"),
    pytest.param("alerts", "/", id="page"),
])
def test_a_provider_that_raises_gives_500_without_a_traceback(served: Served, broken: str, path: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    served.provider.broken = broken
    got = served.fetch(path)
    assert got.code == 500
    assert got.body == "internal error: RuntimeError\n"
    assert "secret detail" not in got.body and "Traceback" not in got.body
    assert "secret detail" in caplog.text  # the agent's own log keeps the details
    served.provider.broken = ""
    assert served.fetch(path).code == 200  # and the server still serves


def test_requests_are_not_logged_to_stderr(served: Served, capfd: pytest.CaptureFixture[str]) -> None:
    served.fetch("/metrics")
    served.fetch("/nope")
    served.fetch("/metrics", "POST")
    assert capfd.readouterr().err == ""


def test_stop_releases_the_port() -> None:
    first = AgentServer(FakeProvider(), "127.0.0.1:0")
    first.start()
    address = first.address
    first.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{address}/livez", timeout=TIMEOUT_S)
    again = AgentServer(FakeProvider(), address)
    again.start()
    try:
        assert again.address == address
        with urllib.request.urlopen(f"http://{address}/livez", timeout=TIMEOUT_S) as r:
            assert r.read() == b"ok\n"
    finally:
        again.stop()
    again.stop()  # stopping twice is harmless


def test_a_second_server_on_the_same_port_fails_clearly(served: Served) -> None:
    second = AgentServer(FakeProvider(), served.server.address)
    with pytest.raises(OSError, match=rf"cannot listen on {served.server.address}: .*already in use"):
        second.start()
    assert served.fetch("/livez").code == 200  # the first one is unharmed


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_serves_on_ipv6_loopback() -> None:
    server = AgentServer(FakeProvider(), "[::1]:0")
    server.start()
    try:
        assert server.address.startswith("[::1]:")
        with urllib.request.urlopen(f"http://{server.address}/livez", timeout=TIMEOUT_S) as r:
            assert r.read() == b"ok\n"
    finally:
        server.stop()


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("127.0.0.1:9464", ("127.0.0.1", 9464), id="ipv4"),
    pytest.param("[::1]:9464", ("::1", 9464), id="ipv6"),
    pytest.param(":0", ("127.0.0.1", 0), id="port-only-means-loopback"),
    pytest.param("0.0.0.0:9464", ("0.0.0.0", 9464), id="every-interface-when-asked"),
    pytest.param("localhost:80", ("localhost", 80), id="name"),
])
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", [
    pytest.param("9464", id="no-colon"),
    pytest.param("::1:9464", id="ipv6-without-brackets"),
    pytest.param("[::1]9464", id="brackets-without-colon"),
    pytest.param("127.0.0.1:http", id="port-not-a-number"),
    pytest.param("127.0.0.1:70000", id="port-too-big"),
])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid listen address"):
        parse_address(text)


def test_address_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = AgentServer(FakeProvider(), ":0").address


@dataclass
class _Job:
    name: str
    kind: str = "check"
    host: str = "web1"
    play: str = "Site"
    plugin_name: str = "disk"


@dataclass
class _Outcome:
    job: _Job
    result: Result
    duration_s: float = 0.25
    samples: list[Metric] = field(default_factory=list)


def test_metrics_from_ce_agent_metrics_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CE_AGENT_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is missing and CE_AGENT_REQUIRE_PROMTOOL=1")
        pytest.skip("promtool is missing (Debian package prometheus)")
    outcomes = [
        _Outcome(_Job("Root disk"), Result(Status.WARNING, "/ 85% used", [Metric("disk_used_percent", 85.0, "%")])),
        _Outcome(_Job("System", kind="collector", plugin_name="system"), Result(Status.OK, "2 samples"), 0.1,
                 [Metric("system_load1", 0.5), Metric("system_network_sent_bytes_total", 1234, "B")]),
    ]
    text = render_text(build_registry(outcomes, 1_700_000_000.0))
    provider = FakeProvider(metrics=text)
    with AgentServer(provider, "127.0.0.1:0") as server:
        with urllib.request.urlopen(f"http://{server.address}/metrics", timeout=TIMEOUT_S) as r:
            scraped = r.read().decode("utf-8")
    assert scraped == text and "ce_check_status" in scraped
    checked = subprocess.run([promtool, "check", "metrics"], input=scraped, capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
