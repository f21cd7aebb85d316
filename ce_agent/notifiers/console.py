"""The `console` notifier: print each notification (title line, then body) to stdout or stderr."""

from __future__ import annotations

import sys
from typing import Annotated, Literal

import msgspec

from ce_agent.contracts import Notification, Notifier


class ConsoleNotifier(Notifier):
    """Print the notification to the terminal (stdout or stderr); never fails."""

    class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        stream: Annotated[
            Literal["stdout", "stderr"], msgspec.Meta(description="Where to print: stdout or stderr.")
        ] = "stdout"

    EXAMPLES = """\
# In the inventory's channels; a check then names it: notify: [terminal]
all:
  vars:
    channels:
      terminal: {console: {}}
      # alerts on stderr, results on stdout
      terminal-err: {console: {stream: stderr}}
"""

    def send(self, notification: Notification) -> None:
        # Looked up at send time, not import time: whoever redirected sys.stdout meanwhile wins.
        stream = sys.stderr if self.options.stream == "stderr" else sys.stdout
        text = notification.title
        if notification.body and notification.body != notification.title:
            text += "\n" + notification.body
        try:
            stream.write(text.rstrip("\n") + "\n")
            stream.flush()
        except (OSError, ValueError):
            # A closed or broken terminal (EPIPE, closed file) is no reason to fail an alert run.
            pass
