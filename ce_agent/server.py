"""The agent's HTTP endpoints: metrics, health, status API and a small status page."""

from __future__ import annotations

import errno
import html
import json
import logging
import os
import selectors
import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from ce_agent import __version__

DEFAULT_ADDRESS = "127.0.0.1:9464"
API_VERSION = 1
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=utf-8"
REFRESH_SECONDS = 10
# a client that sends nothing must not hold a handler thread for ever
REQUEST_TIMEOUT_S = 10.0

log = logging.getLogger(__name__)


class Provider(Protocol):
    """What the server shows; called from handler threads, so it must be thread-safe."""

    def metrics_text(self) -> str:
        """The Prometheus text exposition (ce_agent.metrics.render_text)."""
        ...

    def live(self) -> bool:
        """The process and its loop are alive."""
        ...

    def ready(self) -> tuple[bool, list[str]]:
        """Ready to serve (config loaded, scheduler ticking, state writable); the reasons when not."""
        ...

    def status(self) -> dict[str, Any]:
        """The agent's status as JSON-able data; an optional "title" key names the status page."""
        ...

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts currently firing, as JSON-able data."""
        ...


def parse_address(address: str) -> tuple[str, int]:
    """HOST:PORT, [IPV6]:PORT or :PORT (loopback) as (host, port); raises ValueError."""
    text = address.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"invalid listen address {address!r}: expected [IPV6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"invalid listen address {address!r}: expected HOST:PORT")
        if ":" in host:
            raise ValueError(f"invalid listen address {address!r}: write an IPv6 address as [ADDRESS]:PORT")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"invalid listen address {address!r}: the port must be a number from 0 to 65535")
    # an empty host means loopback, not every interface: exposing the agent must be a deliberate choice
    return host or "127.0.0.1", int(port_text)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS lookup that can stall start-up
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _Reply:
    """One response: status, content type, body (and extra headers)."""

    def __init__(self, code: int, content_type: str, body: str, headers: dict[str, str] | None = None) -> None:
        self.code = code
        self.content_type = content_type
        self.body = body.encode("utf-8")
        self.headers = headers or {}


def _text(code: int, body: str, headers: dict[str, str] | None = None) -> _Reply:
    return _Reply(code, TEXT_TYPE, body if body.endswith("\n") else body + "\n", headers)


def _json(data: Any) -> _Reply:
    return _Reply(200, JSON_TYPE, json.dumps(data, default=str, ensure_ascii=False) + "\n")


class _Routes:
    """The endpoints, as functions of the provider."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.table: dict[str, Callable[[], _Reply]] = {
            "/metrics": self.metrics,
            "/livez": self.livez,
            "/readyz": self.readyz,
            "/healthz": self.healthz,
            "/api/v1/status": self.status,
            "/api/v1/alerts": self.alerts,
            "/": self.page,
        }

    def metrics(self) -> _Reply:
        return _Reply(200, METRICS_TYPE, self.provider.metrics_text())

    def livez(self) -> _Reply:
        return _text(200, "ok") if self.provider.live() else _text(503, "not live")

    def _not_ready(self) -> list[str]:
        ready, reasons = self.provider.ready()
        return [] if ready else [str(r) for r in reasons] or ["not ready"]

    def readyz(self) -> _Reply:
        reasons = self._not_ready()
        return _text(503, "\n".join(reasons)) if reasons else _text(200, "ok")

    def healthz(self) -> _Reply:
        problems = ([] if self.provider.live() else ["not live"]) + self._not_ready()
        return _text(503, "\n".join(problems)) if problems else _text(200, "ok")

    def status(self) -> _Reply:
        status = self.provider.status()
        return _json({"version": API_VERSION, **{k: v for k, v in status.items() if k != "version"}})

    def alerts(self) -> _Reply:
        return _json({"version": API_VERSION, "alerts": self.provider.alerts()})

    def page(self) -> _Reply:
        return _Reply(200, HTML_TYPE, render_page(self.provider.status(), self._not_ready(), self.provider.alerts()))


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return html.escape(text)


def render_page(status: dict[str, Any], not_ready: list[str], alerts: list[dict[str, Any]]) -> str:
    """The status page: title, readiness, the status's plain values and a table of alerts; every
    value is HTML-escaped (labels come from playbooks and targets)."""
    title = html.escape(str(status.get("title") or "ce-agent"))
    esc = html.escape
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        f"<title>{title}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
        ".ready{color:#070}.notready{color:#b00}</style>",
        f"</head><body><h1>{title}</h1>",
    ]
    if not_ready:
        lines.append('<p class="notready">Not ready:</p><ul>')
        lines += [f"<li>{esc(reason)}</li>" for reason in not_ready]
        lines.append("</ul>")
    else:
        lines.append('<p class="ready">Ready</p>')
    plain = {k: v for k, v in status.items() if k != "title" and not isinstance(v, (dict, list))}
    if plain:
        lines.append("<table>")
        lines += [f"<tr><th>{esc(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in plain.items()]
        lines.append("</table>")
    tasks = status.get("tasks")
    if isinstance(tasks, list) and tasks:
        columns = ["status", "name", "host", "play", "kind", "summary", "last_run", "next_run", "schedule"]
        lines.append(f"<h2>Tasks ({len(tasks)})</h2><table><tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>")
        for task in tasks:
            cells = "".join(f"<td>{esc(str(task.get(c) if task.get(c) is not None else ''))}</td>" for c in columns)
            lines.append(f"<tr>{cells}</tr>")
        lines.append("</table>")
    lines.append(f"<h2>Alerts ({len(alerts)})</h2>")
    if alerts:
        columns = list(dict.fromkeys(key for alert in alerts for key in alert))
        lines.append("<table><tr>" + "".join(f"<th>{esc(str(c))}</th>" for c in columns) + "</tr>")
        for alert in alerts:
            cells = "".join(f"<td>{_cell(alert[c]) if c in alert else ''}</td>" for c in columns)
            lines.append(f"<tr>{cells}</tr>")
        lines.append("</table>")
    else:
        lines.append("<p>No alerts.</p>")
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"


def _handler(routes: _Routes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def version_string(self) -> str:
            return f"ce-agent/{__version__}"
        timeout = REQUEST_TIMEOUT_S

        def log_message(self, format: str, *args: Any) -> None:
            # requests are not logged: a scrape every 15 s would drown the agent's own log
            pass

        def _reply(self, head_only: bool) -> None:
            route = routes.table.get(urlsplit(self.path).path)
            if route is None:
                reply = _text(404, "not found")
            else:
                try:
                    reply = route()
                except Exception as exc:  # a provider's bug must not kill the server nor leak a traceback
                    log.exception("serving %s failed", self.path)
                    reply = _text(500, f"internal error: {type(exc).__name__}")
            self._send(reply, head_only)

        def _send(self, reply: _Reply, head_only: bool) -> None:
            self.send_response(reply.code)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("Cache-Control", "no-store")
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if not head_only:
                self.wfile.write(reply.body)

        def do_GET(self) -> None:
            self._reply(head_only=False)

        def do_HEAD(self) -> None:
            self._reply(head_only=True)

        def _not_allowed(self) -> None:
            self._send(_text(405, "method not allowed", {"Allow": "GET, HEAD"}), head_only=False)

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    return Handler


class AgentServer:
    """The agent's HTTP server, serving `provider` on `address` from daemon threads."""

    def __init__(self, provider: Provider, address: str = DEFAULT_ADDRESS) -> None:
        self.provider = provider
        self.requested = address
        self.host, self.port = parse_address(address)
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve in a daemon thread; raises OSError saying which address could not be used."""
        if self._server is not None:
            raise RuntimeError("the server is already started")
        try:
            family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        except socket.gaierror as exc:
            raise OSError(errno.EADDRNOTAVAIL, f"cannot listen on {self.requested}: {exc.strerror}") from exc
        server_class = type("_Server", (_HTTPServer,), {"address_family": family})
        try:
            server = server_class((self.host, self.port), _handler(_Routes(self.provider)))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                why = "the address is already in use (is another ce-agent running?)"
            else:
                why = exc.strerror or str(exc)
            raise OSError(exc.errno, f"cannot listen on {self.requested}: {why}") from exc
        self._server = server
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, args=(server, self._wake_r), name="ce-agent-http",
                                        daemon=True)
        self._thread.start()

    @staticmethod
    def _serve(server: _HTTPServer, wake: int) -> None:
        # socketserver's serve_forever polls (wakes every poll_interval even when idle); this loop
        # sleeps until a client connects or stop() writes to the pipe: an idle agent stays asleep.
        with selectors.DefaultSelector() as selector:
            selector.register(server, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while True:
                events = selector.select()
                if any(key.fileobj == wake for key, _ in events):
                    return
                server._handle_request_noblock()  # accept and hand to a handler thread

    def stop(self) -> None:
        """Stop serving and release the port; does nothing when not started."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        os.write(self._wake_w, b"x")
        if thread is not None:
            thread.join(timeout=5)
        server.server_close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    @property
    def address(self) -> str:
        """The bound address as HOST:PORT ([HOST]:PORT for IPv6): the real port when 0 was asked."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        host, port = self._server.server_address[:2]
        return format_address(str(host), int(port))

    def __enter__(self) -> AgentServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
