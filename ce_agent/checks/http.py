"""The `http` check: fetch a URL and judge its status code, body and response time."""

from __future__ import annotations

import base64
import http.client
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import msgspec

from ce_agent.checks._net import describe_connect_error, remaining
from ce_agent.contracts import Check, Metric, Result, Status, TaskContext, worst
from ce_agent.options import Threshold
from ce_agent.thresholds import evaluate, optional_range

#: `expect_body` is searched in this much of the body; the rest is read (to time it) and dropped
BODY_MATCH_LIMIT = 1 << 20
MAX_REDIRECTS = 10
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
#: RFC 9110's token: what a method or a header name is made of
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: what http.client refuses in a header value (it would split the request)
_BAD_HEADER_VALUE = re.compile(r"[\r\n\x00]")
_StatusCode = Annotated[int, msgspec.Meta(ge=100, le=599)]


def _is_latin1(text: str) -> bool:
    # http.client encodes header values as Latin-1; anything else fails only when sending
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def display_url(url: str) -> str:
    """The URL without its `user:password@` part, fit for summaries, labels and logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class CheckFailed(Exception):
    """The target could not be fetched; the message is the reason shown in the summary."""


@dataclass(slots=True)
class _Response:
    status: int
    reason: str
    length: int
    body: bytes
    charset: str
    redirects: int


class HttpCheck(Check):
    """Fetch a URL; check the status code (200-399 unless `expect_status`), a body regex and the response time."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        url: Annotated[
            str,
            msgspec.Meta(
                description="The http:// or https:// URL; a user:password@ in it is sent as basic auth"
                " and never shown."
            ),
        ]
        method: Annotated[str, msgspec.Meta(description="The request method.")] = "GET"
        expect_status: Annotated[
            _StatusCode | Annotated[list[_StatusCode], msgspec.Meta(min_length=1)] | None,
            msgspec.Meta(description="The accepted status code(s); unset: any of 200-399 is accepted."),
        ] = None
        expect_body: Annotated[
            str | None,
            msgspec.Meta(description="CRITICAL unless this regular expression occurs in the first 1 MiB of the body."),
        ] = None
        headers: Annotated[dict[str, str], msgspec.Meta(description="Extra request headers.")] = msgspec.field(
            default_factory=dict
        )
        body: Annotated[str | None, msgspec.Meta(description="A request body, sent as UTF-8.")] = None
        verify_tls: Annotated[
            bool, msgspec.Meta(description="Verify the server's certificate and host name (https).")
        ] = True
        ca_file: Annotated[
            str | None,
            msgspec.Meta(description="A PEM file of the CA certificates to trust instead of the system's (https)."),
        ] = None
        follow_redirects: Annotated[
            bool, msgspec.Meta(description=f"Follow up to {MAX_REDIRECTS} redirects and judge the last response.")
        ] = True
        warning: Annotated[
            Threshold | None, msgspec.Meta(description="WARNING when the response time in seconds is above this.")
        ] = None
        critical: Annotated[
            Threshold | None, msgspec.Meta(description="CRITICAL when the response time in seconds is above this.")
        ] = None

        def __post_init__(self) -> None:
            if re.search(r"[\x00-\x20\x7f]", self.url):
                raise ValueError(f"url: must not contain spaces or control characters: {display_url(self.url)!r}")
            parts = urlsplit(self.url)
            try:
                parts.port  # noqa: B018 - raises ValueError for a port that is not a number
            except ValueError:
                raise ValueError(f"url: invalid port: {display_url(self.url)!r}") from None
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"url: must be an http:// or https:// URL with a host, got {display_url(self.url)!r}"
                )
            if not _TOKEN.fullmatch(self.method):
                raise ValueError(f"method: not a valid HTTP method: {self.method!r}")
            self.method = self.method.upper()
            for name, value in self.headers.items():
                # the value is never shown: headers carry tokens (Authorization, X-Api-Key)
                if not _TOKEN.fullmatch(name):
                    raise ValueError(f"headers: not a valid header name: {name!r}")
                if _BAD_HEADER_VALUE.search(value) or not _is_latin1(value):
                    raise ValueError(f"headers: the value of {name!r} must be Latin-1 text without line breaks")
            if self.expect_body is not None:
                try:
                    re.compile(self.expect_body)
                except re.error as exc:
                    raise ValueError(f"expect_body: not a valid regular expression: {exc}") from None

    EXAMPLES = """\
- name: Web site answers
  http: {url: "https://example.org/", expect_body: "Example Domain", warning: 1, critical: 5}
- name: API health, no redirects
  http:
    url: "http://127.0.0.1:8080/health"
    expect_status: [200, 204]
    headers: {Accept: application/json}
    follow_redirects: false
"""

    def __init__(self, options: Options, context: TaskContext) -> None:
        super().__init__(options, context)
        # the socket being read, so that cancel() can unblock it from the runner's thread
        self._sock: socket.socket | None = None
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        # flag first, socket second: _fetch publishes the socket, then looks at the flag, so one of
        # the two always sees the other
        self._cancelled.set()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def run(self) -> Result:
        opts = self.options
        shown = display_url(opts.url)
        labels = {"url": shown}
        timeout = self.context.timeout
        started = time.monotonic()
        try:
            response = self._fetch(started + timeout)
        except CheckFailed as exc:
            return Result(Status.CRITICAL, f"{shown}: {exc}")
        except (OSError, http.client.HTTPException) as exc:
            return Result(Status.CRITICAL, f"{shown}: {_describe(exc, timeout)}")
        elapsed = time.monotonic() - started

        warning, critical = optional_range(opts.warning), optional_range(opts.critical)
        statuses = [evaluate(elapsed, warning, critical)]
        summary = f"HTTP {response.status} {response.reason}".rstrip() + f" in {elapsed:.3f}s"
        if response.redirects:
            summary += f" after {response.redirects} redirect{'s' if response.redirects > 1 else ''}"
        if not _status_accepted(response.status, opts.expect_status):
            statuses.append(Status.CRITICAL)
            summary += f" (expected {_expected_text(opts.expect_status)})"
        if opts.expect_body is not None:
            text = response.body.decode(response.charset, "replace")
            if re.search(opts.expect_body, text) is None:
                statuses.append(Status.CRITICAL)
                summary += f", body does not match {opts.expect_body!r}"
        return Result(
            worst(statuses),
            summary,
            [
                Metric(
                    "http_response_seconds",
                    elapsed,
                    "s",
                    labels,
                    None if warning is None else str(warning),
                    None if critical is None else str(critical),
                    min=0,
                ),
                Metric("http_status_code", float(response.status), "", labels),
                Metric("http_content_length_bytes", float(response.length), "B", labels, min=0),
            ],
        )

    def _fetch(self, deadline: float) -> _Response:
        """Send the request (following redirects if asked) and read the final response in full."""
        opts = self.options
        url, method = opts.url, opts.method
        body = None if opts.body is None else opts.body.encode()
        headers = dict(opts.headers)
        parts = urlsplit(url)
        if parts.username is not None and not any(k.lower() == "authorization" for k in headers):
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
        tls: ssl.SSLContext | None = None
        for redirects in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise CheckFailed(f"redirected to an unsupported URL {display_url(url)!r}")
            if parts.scheme == "https" and tls is None:
                tls = self._tls_context()
            connection = self._connect(parts.scheme, parts.hostname, parts.port, tls, deadline)
            try:
                sock = connection.sock
                assert sock is not None
                self._sock = sock
                if self._cancelled.is_set():
                    raise CheckFailed("cancelled")
                path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
                sock.settimeout(remaining(deadline))
                connection.request(method, path, body=body, headers=headers)
                sock.settimeout(remaining(deadline))
                response = connection.getresponse()
                location = response.getheader("Location")
                if opts.follow_redirects and response.status in REDIRECT_CODES and location:
                    next_url = urljoin(url, location)
                    if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                        # what browsers (and curl -L) do: the redirected request is a GET without body
                        method, body = ("HEAD" if method == "HEAD" else "GET"), None
                    if urlsplit(next_url).netloc.rpartition("@")[2] != parts.netloc.rpartition("@")[2]:
                        # never hand the credentials of one host to another
                        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                    url = next_url
                    continue
                return _read_response(response, sock, method, redirects, deadline)
            finally:
                self._sock = None
                connection.close()
        raise CheckFailed(f"more than {MAX_REDIRECTS} redirects")

    def _tls_context(self) -> ssl.SSLContext:
        opts = self.options
        if not opts.verify_tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        try:
            return ssl.create_default_context(cafile=opts.ca_file)
        except (OSError, ssl.SSLError) as exc:
            # a configuration problem, not the server's: left for the runner to report as UNKNOWN
            raise ValueError(f"cannot load ca_file {opts.ca_file!r}: {exc}") from None

    @staticmethod
    def _connect(
        scheme: str, host: str, port: int | None, tls: ssl.SSLContext | None, deadline: float
    ) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection
        if scheme == "https":
            connection = http.client.HTTPSConnection(host, port, timeout=remaining(deadline), context=tls)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=remaining(deadline))
        connection.connect()
        return connection


def _read_response(
    response: http.client.HTTPResponse, sock: socket.socket, method: str, redirects: int, deadline: float
) -> _Response:
    """Read the whole body within the deadline, keeping its first BODY_MATCH_LIMIT bytes."""
    kept = bytearray()
    total = 0
    # the response closes the socket itself once the body is complete (or at once for HEAD and 204)
    while not response.isclosed():
        # each read gets only what is left of the task's time, so a slow body cannot overrun it
        sock.settimeout(remaining(deadline))
        chunk = response.read(_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if len(kept) < BODY_MATCH_LIMIT:
            kept += chunk[: BODY_MATCH_LIMIT - len(kept)]
    length = total
    if method == "HEAD":
        declared = response.getheader("Content-Length", "")
        length = int(declared) if declared.isdigit() else 0
    charset = response.headers.get_content_charset() or "utf-8"
    try:
        "".encode(charset)
    except LookupError:
        charset = "utf-8"
    return _Response(response.status, response.reason, length, bytes(kept), charset, redirects)


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without a response"
    if isinstance(exc, http.client.IncompleteRead):
        return f"the response ended early ({len(exc.partial)} bytes read)"
    if isinstance(exc, http.client.HTTPException):
        return f"invalid HTTP response ({type(exc).__name__}: {exc})"
    return describe_connect_error(exc, timeout)


def _status_accepted(status: int, expected: int | list[int] | None) -> bool:
    if expected is None:
        return 200 <= status <= 399
    return status in (expected if isinstance(expected, list) else [expected])


def _expected_text(expected: int | list[int] | None) -> str:
    if expected is None:
        return "200-399"
    return " or ".join(str(code) for code in (expected if isinstance(expected, list) else [expected]))
