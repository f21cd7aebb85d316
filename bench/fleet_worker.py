#!/usr/bin/env python3
"""A worker of bench/fleet.py: plays many simulated hosts, each its own config, state.db, alert path and /metrics.

Started by bench/fleet.py as `python bench/fleet_worker.py SPEC.json`, in its own process group. It
loads every host's playbook and inventory (ce_agent.oneshot.load_or_explain), opens each host's own
SQLite state, serves each host's Telemetry at http://127.0.0.1:PORT/hosts/HOST/metrics, then reads
one JSON command a line on stdin and answers one JSON line on stdout:

  {"cmd": "round", "round": R}  apply the scenario's changes of round R (each check is a real `file`
                                check on a file of the host's own directory: removed = CRITICAL), then
                                `oneshot.run` every host in turn, as one agent's pass each
  {"cmd": "finish"}             final sizes (state.db, /metrics) and CPU; then the worker exits
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ce_agent import oneshot
from ce_agent.plan import Plan, Selection
from ce_agent.redact import Redactor
from ce_agent.store import Store
from ce_agent.telemetry import Telemetry

#: what the alertmanager notifier leaves out of its POST (as its _NOT_POSTED): flapping news
NOT_POSTED = frozenset({"flapping_start", "flapping_stop"})


@dataclass
class Host:
    """One simulated machine: its agent's plan, state and metrics."""

    name: str
    directory: Path
    plan: Plan
    redactor: Redactor
    store: Any
    telemetry: Telemetry


@dataclass
class ScrapeStats:
    """What serving /metrics cost, summed over the handler threads (thread CPU, not wall)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    count: int = 0
    cpu_s: float = 0.0
    bytes: int = 0
    missing: int = 0

    def add(self, cpu_s: float, size: int) -> None:
        with self.lock:
            self.count += 1
            self.cpu_s += cpu_s
            self.bytes += size

    def snapshot(self) -> dict[str, float]:
        with self.lock:
            return {"count": self.count, "cpu_s": self.cpu_s, "bytes": self.bytes, "missing": self.missing}


class MetricsServer(ThreadingHTTPServer):
    """127.0.0.1 only; /hosts/NAME/metrics is NAME's Telemetry.render(), as the agent's /metrics."""

    daemon_threads = True

    def __init__(self, hosts: dict[str, Host]) -> None:
        self.hosts = hosts
        self.stats = ScrapeStats()
        super().__init__(("127.0.0.1", 0), MetricsHandler)


class MetricsHandler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        started = time.thread_time()  # this handler thread's own CPU: the cost of one scrape
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        host = self.server.hosts.get(parts[1]) if len(parts) == 3 and parts[0] == "hosts" else None
        if host is None or parts[2] != "metrics":
            with self.server.stats.lock:
                self.server.stats.missing += 1
            self.send_error(404)
            return
        body = host.telemetry.render().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.stats.add(time.thread_time() - started, len(body))

    def log_message(self, *_args: object) -> None:
        pass


def load_hosts(spec: dict[str, Any]) -> dict[str, Host]:
    hosts: dict[str, Host] = {}
    now = time.time()
    for entry in spec["hosts"]:
        directory = Path(entry["dir"])
        plan, redactor, _warnings = oneshot.load_or_explain(
            [directory / "site.yml"], [directory / "inventory.yml"], Selection(state_dir=directory))
        store, _notices = Store.open(directory / "state.db", now)
        telemetry = Telemetry(redactor.scrub, start_time=now)
        telemetry.record_reload(True, now)
        telemetry.set_tasks(len(plan.jobs))
        telemetry.set_plugin_load_errors(sum(1 for job in plan.jobs if job.load_error))
        hosts[entry["name"]] = Host(entry["name"], directory, plan, redactor, store, telemetry)
    return hosts


def apply_changes(spec: dict[str, Any], hosts: dict[str, Host], round_no: int) -> int:
    """The scenario's changes of this round: a check's file removed (fails) or written back (recovers)."""
    changes = spec["changes"].get(str(round_no), [])
    for name, check, failing in changes:
        path = hosts[name].directory / spec["files"][check]
        if failing:
            path.unlink(missing_ok=True)
        else:
            path.write_text("ok\n")
    return len(changes)


class Worker:
    """The hosts this process plays, their /metrics server, and the scenario's changes to apply."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.hosts = load_hosts(spec)
        self.server = MetricsServer(self.hosts)
        threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True).start()

    def round(self, round_no: int) -> dict[str, Any]:
        """One pass of every host's agent; timings, what was posted, and what ce-agent holds as firing."""
        started_wall = time.perf_counter()
        started_cpu = time.process_time()
        scrape_cpu = self.server.stats.snapshot()["cpu_s"]
        changes = apply_changes(self.spec, self.hosts, round_no)
        quiet: list[float] = []
        posting: list[float] = []
        records: dict[str, dict[str, int]] = {}  # check -> kind (firing, resend, resolved...) -> alerts posted
        posts = failures = 0
        for host in self.hosts.values():
            t0 = time.perf_counter()
            report = oneshot.run(host.plan, host.redactor, host.store, forks=10)
            now = time.time()
            # what the daemon does with a pass: outcomes and deliveries into its Telemetry
            for outcome in report.outcomes:
                host.telemetry.record_outcome(outcome, now)
            for delivery in report.deliveries:
                host.telemetry.record_delivery(delivery.channel, delivery.sent)
            host.telemetry.set_outbox(host.store.outbox_depth(), host.store.dropped_total())
            host.telemetry.tick(now)
            (posting if report.deliveries else quiet).append(time.perf_counter() - t0)
            for delivery in report.deliveries:
                if not delivery.sent:
                    failures += 1
                    continue
                kinds = [str(alert.get("kind")) for alert in delivery.notification.alerts]
                posts += any(kind not in NOT_POSTED for kind in kinds)  # only flapping news: no POST
                for alert, kind in zip(delivery.notification.alerts, kinds):
                    by_kind = records.setdefault(str((alert.get("labels") or {}).get("check", "?")), {})
                    by_kind[kind] = by_kind.get(kind, 0) + 1
        wall = time.perf_counter() - started_wall
        cpu = time.process_time() - started_cpu
        scrape_cpu = self.server.stats.snapshot()["cpu_s"] - scrape_cpu
        # not part of an agent's cost: the alerts ce-agent holds as firing, to set against Alertmanager's
        firing: dict[str, int] = {}
        flapping = 0
        for host in self.hosts.values():
            for labels, state in host.store.load_alerts().values():
                if state.get("state") == "firing":
                    check = str(labels.get("check", "?"))
                    firing[check] = firing.get(check, 0) + 1
                flapping += bool(state.get("flapping"))
        return {"round": round_no, "changes": changes, "wall_s": wall, "cpu_s": cpu, "scrape_cpu_s": scrape_cpu,
                "host_runs": len(self.hosts), "quiet_s": quiet, "posting_s": posting, "posts": posts,
                "failures": failures, "records": records, "firing": firing, "flapping": flapping}

    def finish(self) -> dict[str, Any]:
        """Each host's state.db (+ WAL) and /metrics size, and the process's CPU; stores closed."""
        sizes = []
        open_sizes = []
        metrics_bytes = []
        series = []
        for host in self.hosts.values():
            text = host.telemetry.render()
            metrics_bytes.append(len(text.encode()))
            series.append(sum(1 for line in text.splitlines() if line and not line.startswith("#")))
            db = host.directory / "state.db"
            files = (db, db.with_name("state.db-wal"), db.with_name("state.db-shm"))
            open_sizes.append(sum(p.stat().st_size for p in files if p.exists()))  # as a running agent has it
            host.store.close()  # the last connection checkpoints the WAL into state.db and removes it
            sizes.append(sum(p.stat().st_size for p in files if p.exists()))
        times = os.times()
        return {"state_db_bytes": sizes, "state_files_open_bytes": open_sizes, "metrics_bytes": metrics_bytes,
                "series": series,
                "cpu_s": times.user + times.system, "scrapes": self.server.stats.snapshot()}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    started, cpu0 = time.perf_counter(), time.process_time()
    worker = Worker(spec)
    out = sys.stdout

    def say(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    say({"ready": True, "port": worker.server.server_address[1], "hosts": len(worker.hosts),
         "load_s": time.perf_counter() - started, "load_cpu_s": time.process_time() - cpu0})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command["cmd"] == "round":
                say(worker.round(int(command["round"])))
            elif command["cmd"] == "finish":
                say(worker.finish())
                break
    finally:
        worker.close()


if __name__ == "__main__":
    main()
