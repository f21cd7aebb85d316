"""Real servers on 127.0.0.1 for the network check tests (HTTP, HTTPS, TCP, TLS), and test certificates."""

from __future__ import annotations

import os
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

#: no test server ever waits longer than this for its client
SERVER_IO_TIMEOUT = 5.0
#: a name that does not resolve, and that glibc rejects itself (`!` is not allowed in host names):
#: no DNS query leaves the machine, unlike "no-such-host.invalid" which goes to the nameserver
UNRESOLVABLE = "no-such-host!.invalid"


# --- HTTP ----------------------------------------------------------------------------------------


@dataclass
class Route:
    """What the test HTTP server answers on one path."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering


@dataclass
class Request:
    """A request the test HTTP server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Served:
    """A running test HTTP server: its base URL and the requests it has received so far."""

    url: str
    requests: list[Request]


@contextmanager
def http_server(routes: dict[str, Route], tls: ssl.SSLContext | None = None) -> Iterator[Served]:
    """An HTTP (or, with `tls`, HTTPS) server on 127.0.0.1 answering `routes`; 404 elsewhere."""
    received: list[Request] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            received.append(Request(self.command, self.path, dict(self.headers.items()), body))
            route = routes.get(self.path, Route(404, b"not found"))
            if route.delay:
                time.sleep(route.delay)
            self.send_response(route.status)
            for name, value in route.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(route.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(route.body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that gave up (a timeout test) is expected, not worth a traceback

    server = Server(("127.0.0.1", 0), Handler)
    server.timeout = SERVER_IO_TIMEOUT
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Served(f"{scheme}://127.0.0.1:{server.server_address[1]}", received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(SERVER_IO_TIMEOUT)


# --- TCP -----------------------------------------------------------------------------------------


@contextmanager
def tcp_server(
    banner: bytes = b"", replies: dict[bytes, bytes] | None = None, hang_up: bool = False
) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that sends `banner`, then answers each line found in `replies`.

    Lines it does not know get no answer, and it says nothing unless spoken to: a client waiting
    for something else times out. With `hang_up`, it closes the connection after the banner.
    Yields the port.
    """
    answers = replies or {}

    class Handler(socketserver.StreamRequestHandler):
        timeout = SERVER_IO_TIMEOUT

        def handle(self) -> None:
            if banner:
                self.wfile.write(banner)
            if hang_up:
                return
            for line in self.rfile:
                if line in answers:
                    self.wfile.write(answers[line])

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

        def handle_error(self, request: object, client_address: object) -> None:
            pass

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(SERVER_IO_TIMEOUT)


@contextmanager
def refused_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port where connections are refused: bound (so nobody else takes it) but not listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        yield sock.getsockname()[1]


def ipv6_loopback() -> bool:
    """True when ::1 can be bound here (some containers have no IPv6 at all)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections (in the kernel's backlog) and never says anything."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


# --- TLS -----------------------------------------------------------------------------------------


@contextmanager
def tls_server(cert: Path, key: Path) -> Iterator[int]:
    """A server on 127.0.0.1 that completes TLS handshakes with `cert` and hangs up. Yields the port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()

    def handshake(conn: socket.socket) -> None:
        conn.settimeout(SERVER_IO_TIMEOUT)
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)  # until the client hangs up
        except OSError:
            pass  # clients that reject the certificate abort the handshake: expected
        finally:
            conn.close()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=handshake, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(SERVER_IO_TIMEOUT)
        listener.close()


def require_openssl() -> str:
    """The `openssl` command; skip the test without it, unless CE_AGENT_REQUIRE_NAGIOS=1 (then fail)."""
    path = shutil.which("openssl")
    if path is None:
        if os.environ.get("CE_AGENT_REQUIRE_NAGIOS") == "1":
            pytest.fail("the openssl command is missing and CE_AGENT_REQUIRE_NAGIOS=1")
        pytest.skip("the openssl command is not installed")
    return path


@dataclass(frozen=True)
class IssuedCert:
    cert: Path
    key: Path


class CertificateAuthority:
    """A throwaway CA made with the `openssl` command; issues leaf certificates of chosen lifetimes."""

    def __init__(self, directory: Path) -> None:
        self.openssl = require_openssl()
        self.directory = directory
        self.cert = directory / "ca.pem"
        self.key = directory / "ca.key"
        self._run(
            "req", "-x509", *_EC_KEY, "-nodes", "-keyout", self.key, "-out", self.cert,
            "-days", "365", "-subj", "/CN=ce-agent test CA",
        )  # fmt: skip

    def issue(self, name: str, days: int, sans: str = "DNS:localhost,IP:127.0.0.1") -> IssuedCert:
        """A certificate for `sans` valid from now for `days` days; `days=-1` makes one that expired yesterday."""
        key, csr, cert = (self.directory / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
        self._run(
            "req", "-new", *_EC_KEY, "-nodes", "-keyout", key, "-out", csr,
            "-subj", f"/CN={name}", "-addext", f"subjectAltName={sans}",
        )  # fmt: skip
        self._run(
            "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key, "-set_serial", str(_serial()),
            "-days", str(days), "-copy_extensions", "copy", "-out", cert,
        )  # fmt: skip
        return IssuedCert(cert, key)

    def self_signed(self, name: str, days: int) -> IssuedCert:
        """A self-signed certificate for localhost and 127.0.0.1, trusted by nobody."""
        key, cert = self.directory / f"{name}.key", self.directory / f"{name}.pem"
        self._run(
            "req", "-x509", *_EC_KEY, "-nodes", "-keyout", key, "-out", cert, "-days", str(days),
            "-subj", f"/CN={name}", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        )  # fmt: skip
        return IssuedCert(cert, key)

    def not_after(self, cert: Path) -> str:
        """notAfter as `openssl x509 -enddate` prints it, e.g. `Nov 25 00:10:27 2026 GMT`."""
        out = self._run("x509", "-in", cert, "-noout", "-enddate")
        return out.strip().removeprefix("notAfter=")

    def der(self, cert: Path) -> bytes:
        out = self.directory / f"{cert.stem}.der"
        self._run("x509", "-in", cert, "-outform", "DER", "-out", out)
        return out.read_bytes()

    def _run(self, *args: object) -> str:
        proc = subprocess.run(
            [self.openssl, *map(str, args)], capture_output=True, text=True, timeout=30, check=False
        )
        assert proc.returncode == 0, f"openssl {' '.join(map(str, args))} failed: {proc.stderr}"
        return proc.stdout


_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


def _serial() -> int:
    return int.from_bytes(os.urandom(8), "big")


def server_context(issued: IssuedCert) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.cert, issued.key)
    return context
