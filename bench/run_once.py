#!/usr/bin/env python3
"""Benchmark of `ce-agent run`: wall time of whole commands, medians and ratios to named baselines.

Baselines, run in the same script and interleaved with the subject so that machine noise hits all
of them alike:
  - `python -c pass` with the same interpreter and venv (a bare start: the named baseline),
  - `python3 -c pass` outside the venv (the venv's editable-install hook costs a few ms itself),
  - the same five Nagios plugins run one after another from a shell loop,
  - optionally `ansible-playbook` running the same Nagios plugins (--ansible).

Usage: .venv/bin/python bench/run_once.py [--runs 20] [--ansible] [--json FILE]
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGINS = Path("/usr/lib/nagios/plugins")
NAGIOS_LOOP = [
    ["check_dummy", "0", "fine"],
    ["check_load", "-w", "5,4,3", "-c", "10,8,6"],
    ["check_disk", "-w", "10%", "-c", "5%", "-p", "/"],
    ["check_users", "-w", "50", "-c", "100"],
    ["check_procs", "-w", "2000", "-c", "5000"],
]


class _Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


def _time(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--ansible", action="store_true", help="also time ansible-playbook (if installed)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    if not (PLUGINS / "check_dummy").exists():
        raise SystemExit("needs Debian's monitoring-plugins-basic and -standard (see .ci/run)")

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # bytecode cache on
    python = sys.executable
    agent = [python, "-m", "ce_agent"]
    work = Path(tempfile.mkdtemp(prefix="ce-bench-"))
    env["CE_AGENT_STATE_DIR"] = str(work / "state")  # the runs keep alert state, as from cron
    env["TMPDIR"] = str(work)  # the fresh state directories below are removed with it
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (work / "inventory.yml").write_text(
        "all:\n  vars:\n    channels:\n"
        f"      hook: \"json://127.0.0.1:{server.server_address[1]}/alerts\"\n  hosts:\n    localhost: {{}}\n"
    )
    loop = "; ".join(" ".join([str(PLUGINS / c[0]), *(f"'{a}'" for a in c[1:])]) + " >/dev/null" for c in NAGIOS_LOOP)
    subjects: dict[str, list[str]] = {
        "python -c pass": [python, "-c", "pass"],
        "system python3 -c pass (no venv)": ["/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "python3", "-c", "pass"],
        "5 Nagios plugins, shell loop": ["sh", "-c", loop],
        "ce-agent run, 10 checks": [*agent, "run", str(HERE / "ten-checks.yml"), "--format", "json"],
        # a fresh state directory each time, so the alert is new and the notification really goes out
        "ce-agent run, 1 notification": [
            "sh", "-c", 'CE_AGENT_STATE_DIR="$(mktemp -d)" exec "$@"', "sh",
            *agent, "run", str(HERE / "notify-one.yml"), "-i", "inventory.yml",
        ],
    }
    if args.ansible and shutil.which("ansible-playbook"):
        (work / "ansible.yml").write_text(
            "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"
            + "".join(
                f"    - command:\n        argv: {json.dumps([str(PLUGINS / c[0]), *c[1:]])}\n      changed_when: false\n      failed_when: false\n"
                for c in NAGIOS_LOOP
            )
        )
        subjects["ansible-playbook, 5 Nagios plugins"] = [
            "ansible-playbook", "-i", "localhost,", "-e", f"ansible_python_interpreter={python}", "ansible.yml"
        ]

    for cmd in subjects.values():  # warm the page cache and the bytecode cache
        _time(cmd, env, work)
    samples: dict[str, list[float]] = {name: [] for name in subjects}
    for _ in range(args.runs):
        for name, cmd in subjects.items():
            samples[name].append(_time(cmd, env, work))
    server.shutdown()

    bare = statistics.median(samples["python -c pass"])
    print(f"{'subject':<36} {'median':>9} {'p90':>9} {'x bare start':>13}   ({args.runs} runs each, interleaved)")
    figures = {}
    for name, values in samples.items():
        values.sort()
        median = statistics.median(values)
        p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
        figures[name] = {"median_s": median, "p90_s": p90, "ratio_to_bare": median / bare}
        print(f"{name:<36} {median * 1000:>7.1f}ms {p90 * 1000:>7.1f}ms {median / bare:>12.1f}x")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
