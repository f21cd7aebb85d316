"""Real receivers on 127.0.0.1 for notification tests: an HTTP webhook, an SMTP server, a dead port."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword



@dataclass
class Received:
    """One HTTP request as the webhook saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Webhook:
    """An HTTP server in a thread: records every request, answers `status` after `delay` seconds."""

    port: int
    status: int = 200
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def url(self, scheme: str = "json", path: str = "/alerts", userinfo: str = "") -> str:
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}{path}"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hook.requests.append(Received("POST", self.path, dict(self.headers), body))
            # Waiting on the event, not sleeping: teardown releases a stalled handler at once.
            if hook.delay and hook.stopping.wait(hook.delay):
                return
            self.send_response(hook.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    hook.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        hook.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port on 127.0.0.1 where a connection is refused: bound (so nobody else takes it), not listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@dataclass
class SmtpServer:
    """aiosmtpd on 127.0.0.1 without TLS: accepts the login `user`/`password`, keeps the messages."""

    port: int
    user: str = "alerts"
    password: str = "Sm7p-Pa55word"
    messages: list[EmailMessage] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.recipients.append(list(envelope.rcpt_tos))
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = (data.login.decode(), data.password.decode())
        self.logins.append(login)
        # handled=False: aiosmtpd itself answers 535 on a refused login.
        return AuthResult(success=login == (self.user, self.password), handled=False)


class _BoundController(Controller):
    """aiosmtpd's Controller serving an already bound socket, so port 0 (a free port) works."""

    def __init__(self, handler: Any, sock: socket.socket, **kwargs: Any) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=sock.getsockname()[1], **kwargs)
        self._sock = sock

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sock)


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    smtp = SmtpServer(port=sock.getsockname()[1])
    controller = _BoundController(
        smtp, sock, authenticator=smtp.authenticate, auth_require_tls=False, ready_timeout=5
    )
    controller.start()
    try:
        yield smtp
    finally:
        controller.stop()
