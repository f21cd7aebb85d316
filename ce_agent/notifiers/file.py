"""The `file` notifier: append each notification as one JSON line to a file."""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import msgspec

from ce_agent.contracts import DeliveryError, Notification, Notifier

#: new files are private: notifications can name hosts, paths and error messages
_MODE = 0o600


class FileNotifier(Notifier):
    """Append each notification as one JSON line (with its UTC time) to a file."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        path: Annotated[
            str, msgspec.Meta(description="The JSON-lines file; created (mode 0600) with its directories.")
        ]

    EXAMPLES = """\
# In the inventory's channels; a check then names it: notify: [log]
all:
  vars:
    channels:
      log: {file: {path: /var/log/ce-agent/alerts.jsonl}}
"""

    def send(self, notification: Notification) -> None:
        path = Path(self.options.path).expanduser()
        record = {**notification.as_dict(), "time": _utc_now()}
        # allow_nan=False: Python would write Infinity/NaN, which no JSON reader accepts
        line = (json.dumps(_finite(record), ensure_ascii=False, allow_nan=False, default=str) + "\n").encode()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # O_APPEND: every write lands at the current end, so concurrent writers never
            # overwrite each other; one write() per line keeps lines whole.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), _MODE)
            try:
                written = 0
                while written < len(line):
                    written += os.write(fd, line[written:])
            finally:
                os.close(fd)
        except OSError as exc:
            raise DeliveryError(f"cannot append to {path}: {exc.strerror or exc}", transient=True) from None


def _finite(value: Any) -> Any:
    """`value` with every infinite or NaN number (at any depth) replaced by None, JSON's null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
