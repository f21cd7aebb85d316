"""What the network checks share: deadlines, `host:port`, and short reasons for failed connections."""

from __future__ import annotations

import socket
import time

from ce_agent.durations import format_duration


def describe_connect_error(exc: BaseException, timeout: float) -> str:
    """A short reason for a failed network operation: "connection refused", "timed out after 2s"..."""
    if isinstance(exc, TimeoutError):
        return f"timed out after {format_duration(timeout)}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def host_port(host: str, port: int) -> str:
    """`host:port`, bracketing IPv6 literals as URLs do."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def remaining(deadline: float) -> float:
    """Seconds left before `deadline` (time.monotonic); TimeoutError when there are none."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left
