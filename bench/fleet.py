#!/usr/bin/env python3
"""Fleet simulation: N simulated hosts' agents -> one real Alertmanager and one real Prometheus, on loopback.

Every simulated host is a whole ce-agent alert path of its own: its own generated playbook and
inventory (loaded once with ce_agent.oneshot.load_or_explain), its own SQLite state.db, its own
`host` and `rack` labels, and each round one `ce_agent.oneshot.run` (execute the checks, record,
evaluate through the alerting pipeline, persist, flush the outbox through the real `alertmanager`
notifier to the real Alertmanager). The checks are five real built-in `file` checks on files in the
host's own directory; the scenario (seeded) makes a check fail by removing its file. A few worker
processes (bench/fleet_worker.py) play N/workers hosts each and serve each host's own Telemetry
(ce_agent/telemetry.py, fed the host's outcomes as the daemon feeds it) at /hosts/HOST/metrics,
which one real Prometheus scrapes as N targets.

Reported: incidents injected vs ce-agent's posts (firing, resends, resolved) vs the alerts
Alertmanager holds vs the notifications its webhook receiver got after grouping and dedup; the load
on Alertmanager and Prometheus (RSS, CPU, samples/s); and what one agent costs per round (CPU,
state.db, /metrics) against a baseline measured in the same script: one real `ce-agent run` of the
same playbook as a process, as cron would run it, interleaved with the rounds.

Every process it starts has its own process group and is stopped (SIGTERM, then SIGKILL) in a
`finally`, also on Ctrl-C; the temporary directory is removed. Nothing listens beyond 127.0.0.1.

Usage: .venv/bin/python bench/fleet.py [--hosts 1000] [--workers 4] [--rounds 30] [--round-seconds 10]
                                       [--quick] [--seed 1] [--json FILE]
Needs Debian's prometheus-alertmanager and prometheus.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

import psutil
import yaml

HERE = Path(__file__).resolve().parent
ALERTMANAGER = "prometheus-alertmanager"
PROMETHEUS = "prometheus"
MIB = 2**20
#: the five checks of every host: (task name, its file in the host's directory, what the scenario does with it)
CHECKS = (
    ("Root disk", "root-disk.ok", "steady: a few % of hosts fail and stay failed"),
    ("NTP sync", "ntp.ok", "flapping: ~1 % of hosts toggle at random for half the run, then settle OK"),
    ("Upstream API", "upstream.ok", "rack outage: every host of one rack fails at 1/4 of the run, recovers at 1/2"),
    ("Backup fresh", "backup.ok", "blips: ~1.5 % of hosts fail for 1-3 rounds"),
    ("Storage mount", "storage.ok", "storage outage: two racks fail at 1/2 of the run, recover at 7/10"),
)
STEADY, FLAPPING, RACK, BLIP, STORAGE = range(len(CHECKS))


# ---- the scenario (pure, seeded) -------------------------------------------------------------------------


@dataclass
class Scenario:
    """Which check of which host fails in which round, and the incidents that make it up."""

    hosts: list[str]
    racks: dict[str, str]
    rounds: int
    failing: dict[tuple[str, int], list[bool]]  # (host, check) -> failing in each round; absent: always OK
    incidents: dict[int, int]  # check index -> incidents injected through it
    affected: dict[int, int]  # check index -> host-checks that ever fail

    @classmethod
    def build(cls, count: int, rounds: int, rack_size: int, seed: int) -> Scenario:
        rng = random.Random(seed)
        hosts = [f"host-{i:05d}" for i in range(count)]
        racks = {h: f"r{i // rack_size:03d}" for i, h in enumerate(hosts)}
        rack_names = sorted(set(racks.values()))
        failing: dict[tuple[str, int], list[bool]] = {}
        incidents = dict.fromkeys(range(len(CHECKS)), 0)

        def fail(host: str, check: int, start: int, end: int) -> None:
            row = failing.setdefault((host, check), [False] * rounds)
            for r in range(max(0, start), min(rounds, end)):
                row[r] = True

        for i, host in enumerate(rng.sample(hosts, max(1, round(count * 0.02)))):
            # half broken before the bench starts, half break during its first third; none recover
            fail(host, STEADY, 0 if i % 2 == 0 else rng.randint(1, max(1, rounds // 3)), rounds)
            incidents[STEADY] += 1
        for host in rng.sample(hosts, max(1, round(count * 0.01))):
            start = rng.randint(0, max(0, rounds // 4))
            row = failing.setdefault((host, FLAPPING), [False] * rounds)
            state = False
            for r in range(start, min(rounds, start + rounds // 2)):
                if rng.random() < 0.5:
                    state = not state
                row[r] = state
            incidents[FLAPPING] += any(row)
            if not any(row):
                del failing[(host, FLAPPING)]
        outage = rng.choice(rack_names)
        for host in hosts:
            if racks[host] == outage:
                fail(host, RACK, rounds // 4, rounds // 2)
        incidents[RACK] = 1
        first = rng.randrange(max(1, len(rack_names) - 1))
        storage = set(rack_names[first:first + 2])
        for host in hosts:
            if racks[host] in storage:
                fail(host, STORAGE, rounds // 2, rounds * 7 // 10)
        incidents[STORAGE] = 1
        for host in rng.sample(hosts, max(1, round(count * 0.015))):
            start = rng.randint(1, max(1, rounds - 4))
            fail(host, BLIP, start, start + rng.randint(1, 3))
            incidents[BLIP] += 1
        affected = {c: sum(1 for (_h, check), row in failing.items() if check == c and any(row))
                    for c in range(len(CHECKS))}
        return cls(hosts, racks, rounds, failing, incidents, affected)

    def changes(self, hosts: set[str]) -> dict[str, list[tuple[str, int, bool]]]:
        """Per round (as a JSON key), the (host, check, failing) changes against the round before
        (all checks OK before round 0), for the given hosts only."""
        out: dict[str, list[tuple[str, int, bool]]] = {}
        for (host, check), row in self.failing.items():
            if host not in hosts:
                continue
            before = False
            for r, now in enumerate(row):
                if now != before:
                    out.setdefault(str(r), []).append((host, check, now))
                before = now
        return out

    def failing_in(self, round_no: int) -> dict[int, int]:
        """How many hosts fail each check in a round (what ce-agent should hold as firing, flapping aside)."""
        out = dict.fromkeys(range(len(CHECKS)), 0)
        for (_host, check), row in self.failing.items():
            out[check] += row[round_no]
        return out


# ---- files ---------------------------------------------------------------------------------------------


def playbook(directory: Path) -> str:
    tasks = [{"name": name, "file": {"path": str(directory / filename)}} for name, filename, _ in CHECKS]
    return yaml.safe_dump([{"name": "Fleet", "hosts": "all", "checks": tasks}], sort_keys=False)


def inventory(host: str, rack: str, am_url: str, resend_s: float, ttl_s: float) -> str:
    channel = {"url": am_url, "resend_interval": f"{resend_s:g}s", "ttl": f"{ttl_s:g}s", "timeout": "5s",
               "labels": {"rack": rack, "source": "ce-agent-fleet"}}
    variables = {"channels": {"am": {"alertmanager": channel}}, "routes": [{"channels": ["am"]}]}
    return yaml.safe_dump({"all": {"vars": variables, "hosts": {host: {}}}}, sort_keys=False)


def write_host(directory: Path, host: str, rack: str, am_url: str, resend_s: float, ttl_s: float) -> None:
    directory.mkdir(parents=True)
    for _name, filename, _ in CHECKS:
        (directory / filename).write_text("ok\n")
    (directory / "site.yml").write_text(playbook(directory))
    (directory / "inventory.yml").write_text(inventory(host, rack, am_url, resend_s, ttl_s))


def go_duration(seconds: float) -> str:
    """Prometheus' and Alertmanager's duration syntax has no fractions: 1.5s is written 1500ms."""
    return f"{round(seconds * 1000)}ms"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- processes -----------------------------------------------------------------------------------------


class Proc:
    """A process this script started, in its own process group; stdout/stderr to files unless piped."""

    def __init__(self, name: str, cmd: list[str], work: Path, pipes: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.err = work / f"{name}.log"
        with open(self.err, "wb") as err:
            self.popen = subprocess.Popen(
                cmd, stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else err, stderr=err, cwd=work, env=env,
                start_new_session=True, text=pipes or None, bufsize=1 if pipes else -1)
        self.ps = psutil.Process(self.popen.pid)

    def tail(self) -> str:
        return self.err.read_text(errors="replace")[-1500:]

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise SystemExit(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # whatever is left of its group
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class Worker(Proc):
    """bench/fleet_worker.py: one JSON line in, one JSON line out."""

    def send(self, message: dict[str, Any]) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(message) + "\n")
        self.popen.stdin.flush()

    def receive(self, timeout: float) -> dict[str, Any]:
        stream: TextIO | None = self.popen.stdout  # type: ignore[assignment]
        assert stream is not None
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([stream], [], [], max(0.0, min(1.0, deadline - time.monotonic())))
            if ready:
                line = stream.readline()
                if not line:
                    raise SystemExit(f"{self.name} closed its output:\n{self.tail()}")
                return dict(json.loads(line))
            self.check()
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name}: no answer within {timeout:g}s:\n{self.tail()}")


@contextlib.contextmanager
def processes() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in reversed(started):
            proc.stop()


def wait_for(what: str, probe: Any, timeout: float, proc: Proc | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError):
            value = probe()
            if value:
                return value
        if proc is not None:
            proc.check()
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


def get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


# ---- Alertmanager's receiver ---------------------------------------------------------------------------


@dataclass
class Received:
    """Alertmanager's webhook notifications, as its receiver (this script) got them."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    notifications: list[dict[str, Any]] = field(default_factory=list)


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.received = Received()
        super().__init__(("127.0.0.1", 0), ReceiverHandler)


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        alerts = body.get("alerts") or []
        entry = {"at": time.time(), "status": body.get("status"), "group": body.get("groupLabels") or {},
                 "firing": sum(a.get("status") == "firing" for a in alerts),
                 "resolved": sum(a.get("status") == "resolved" for a in alerts)}
        with self.server.received.lock:
            self.server.received.notifications.append(entry)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


# ---- reading the servers -------------------------------------------------------------------------------


def prom_query(base: str, promql: str) -> float | None:
    data = json.loads(get(f"{base}/api/v1/query?query={urllib.parse.quote(promql)}"))
    result = data["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def scrape_sum(url: str, name: str, **match: str) -> float:
    """The sum of a family's samples in a /metrics text (labels matching `match`)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(get(url).decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in match.items()):
                total += sample.value
    return total


def am_active(base: str) -> dict[str, int]:
    alerts = json.loads(get(f"{base}/api/v2/alerts?active=true&silenced=false&inhibited=false&unprocessed=true"))
    out: dict[str, int] = {}
    for alert in alerts:
        name = alert["labels"].get("alertname", "?")
        out[name] = out.get(name, 0) + 1
    return out


def quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "median": float("nan"), "p90": float("nan"), "max": float("nan")}
    ordered = sorted(values)
    return {"n": len(ordered), "median": statistics.median(ordered),
            "p90": ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))], "max": ordered[-1]}


# ---- the run -------------------------------------------------------------------------------------------


@dataclass
class Settings:
    hosts: int
    workers: int
    rounds: int
    round_s: float
    scrape_s: float
    rack_size: int
    seed: int
    baseline_runs: int
    resend_s: float = 0.0
    ttl_s: float = 0.0
    group_wait_s: float = 0.0
    group_interval_s: float = 0.0
    repeat_interval_s: float = 0.0

    def __post_init__(self) -> None:
        # one round stands for one check interval of 1 minute: the defaults (resend_interval 1m, ttl 10m)
        # and Alertmanager's (group_wait 30s, group_interval 5m, repeat_interval 4h) scaled by round_s/60.
        # resend_interval is 0.9 of a round, not 1: rounds are paced by the wall clock, and a round
        # a little shorter than the last must still re-send (as 1m re-sends every minute's run)
        self.resend_s = round(self.round_s * 0.9, 1)
        self.ttl_s = self.round_s * 10
        self.group_wait_s = max(1.0, self.round_s / 2)
        self.group_interval_s = self.round_s * 5
        self.repeat_interval_s = self.round_s * 240


def alertmanager_config(settings: Settings, hook: str) -> dict[str, Any]:
    route = {"receiver": "hook", "group_by": ["alertname", "rack"], "group_wait": go_duration(settings.group_wait_s),
             "group_interval": go_duration(settings.group_interval_s),
             "repeat_interval": go_duration(settings.repeat_interval_s)}
    return {"route": route, "receivers": [{"name": "hook", "webhook_configs": [{"url": hook, "send_resolved": True}]}]}


def prometheus_config(settings: Settings, targets: list[tuple[str, int]], am_port: int, prom_port: int) -> str:
    fleet = [{"targets": [f"127.0.0.1:{port}"], "labels": {"instance": host, "__metrics_path__": f"/hosts/{host}/metrics"}}
             for host, port in targets]
    config = {
        "global": {"scrape_interval": go_duration(settings.scrape_s),
                   "scrape_timeout": go_duration(settings.scrape_s * 0.8)},
        "scrape_configs": [
            {"job_name": "fleet", "static_configs": fleet},
            {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{prom_port}"]}]},
            {"job_name": "alertmanager", "static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]},
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def baseline_run(python: str, directory: Path, env: dict[str, str]) -> tuple[float, float]:
    """One `ce-agent run` of a host's playbook as a process, as cron runs it: (wall s, CPU s of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([python, "-m", "ce_agent", "run", "site.yml", "-i", "inventory.yml", "--format", "json"],
                          cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120,
                          start_new_session=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"baseline ce-agent run exited {proc.returncode}: {proc.stderr.decode()[-800:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run(settings: Settings, work: Path) -> dict[str, Any]:
    python = sys.executable
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # bytecode cache on
    scenario = Scenario.build(settings.hosts, settings.rounds, settings.rack_size, settings.seed)
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, name="receiver", daemon=True).start()
    try:
        with processes() as started:
            return _run(settings, work, python, env, scenario, receiver, started)
    finally:
        receiver.shutdown()
        receiver.server_close()


def _run(settings: Settings, work: Path, python: str, env: dict[str, str], scenario: Scenario, receiver: Receiver,
         started: list[Proc]) -> dict[str, Any]:
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731 - progress, not figures
    # Alertmanager
    am_port = free_port()
    am_dir = work / "alertmanager"
    am_dir.mkdir()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/am"
    (am_dir / "am.yml").write_text(yaml.safe_dump(alertmanager_config(settings, hook)))
    binary = shutil.which(ALERTMANAGER) or shutil.which("alertmanager")
    if binary is None:
        raise SystemExit("needs Alertmanager (apt-get install prometheus-alertmanager)")
    am = Proc("alertmanager", [binary, f"--config.file={am_dir / 'am.yml'}", f"--storage.path={am_dir / 'data'}",
                               f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
                               "--log.level=warn"], work)
    started.append(am)
    am_url = f"http://127.0.0.1:{am_port}"
    wait_for("Alertmanager", lambda: get(f"{am_url}/-/ready", 2), 30, am)

    # the hosts' files, split among the workers
    say(f"writing {settings.hosts} hosts' playbooks and inventories ...")
    hosts_dir = work / "hosts"
    for host in scenario.hosts:
        write_host(hosts_dir / host, host, scenario.racks[host], am_url, settings.resend_s, settings.ttl_s)
    shares = [scenario.hosts[i::settings.workers] for i in range(settings.workers)]
    workers: list[Worker] = []
    for index, share in enumerate(shares):
        spec = {"hosts": [{"name": h, "dir": str(hosts_dir / h)} for h in share],
                "files": [filename for _name, filename, _ in CHECKS], "changes": scenario.changes(set(share))}
        (work / f"worker-{index}.json").write_text(json.dumps(spec))
        worker = Worker(f"worker-{index}", [python, str(HERE / "fleet_worker.py"), str(work / f"worker-{index}.json")],
                        work, pipes=True, env=env)
        started.append(worker)
        workers.append(worker)
    say(f"{settings.workers} workers loading their hosts ...")
    ready = [w.receive(600) for w in workers]
    ports = {h: r["port"] for share, r in zip(shares, ready) for h in share}

    # Prometheus, scraping every host
    binary = shutil.which(PROMETHEUS)
    if binary is None:
        raise SystemExit("needs Prometheus (apt-get install prometheus)")
    prom_port = free_port()
    prom_dir = work / "prometheus"
    prom_dir.mkdir()
    (prom_dir / "prometheus.yml").write_text(
        prometheus_config(settings, [(h, ports[h]) for h in scenario.hosts], am_port, prom_port))
    prom = Proc("prometheus", [binary, f"--config.file={prom_dir / 'prometheus.yml'}",
                               f"--storage.tsdb.path={prom_dir / 'tsdb'}", "--storage.tsdb.retention.time=1h",
                               f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"], work)
    started.append(prom)
    prom_url = f"http://127.0.0.1:{prom_port}"
    wait_for("Prometheus", lambda: get(f"{prom_url}/-/ready", 2), 60, prom)

    # the baseline's host: the same playbook and inventory, all checks OK, a state dir of its own
    base_dir = work / "baseline"
    write_host(base_dir, "host-baseline", "r-base", am_url, settings.resend_s, settings.ttl_s)
    base_env = {**env, "CE_AGENT_STATE_DIR": str(base_dir / "state")}
    baseline_run(python, base_dir, base_env)  # warms the page and bytecode caches; not counted

    say(f"{settings.rounds} rounds of {settings.round_s:g}s ...")
    servers = {"alertmanager": am, "prometheus": prom}
    cpu0 = {name: p.cpu() for name, p in servers.items()}
    worker_cpu0 = sum(w.cpu() for w in workers)
    samples0 = scrape_sum(f"{prom_url}/metrics", "prometheus_tsdb_head_samples_appended_total")
    rss: dict[str, list[int]] = {name: [] for name in [*servers, "workers"]}
    rounds: list[dict[str, Any]] = []
    base_samples: list[tuple[float, float]] = []
    t0 = time.monotonic()
    for r in range(settings.rounds):
        due = t0 + r * settings.round_s
        late = time.monotonic() - due
        if late < 0:
            time.sleep(-late)
        begun = time.monotonic()
        for w in workers:
            w.send({"cmd": "round", "round": r})
        answers = [w.receive(600) for w in workers]
        took = time.monotonic() - begun
        if r >= 1 and len(base_samples) < settings.baseline_runs:
            base_samples.append(baseline_run(python, base_dir, base_env))  # in the round's idle time
        held = am_active(am_url)
        for name, p in servers.items():
            rss[name].append(p.rss())
        rss["workers"].append(sum(w.rss() for w in workers))
        rounds.append({"round": r, "late_s": max(0.0, late), "took_s": took, "workers": answers, "am_active": held,
                       "expected_failing": scenario.failing_in(r)})
        firing = sum(sum(a["firing"].values()) for a in answers)
        posts = sum(a["posts"] for a in answers)
        say(f"  round {r + 1}/{settings.rounds}: {took:5.2f}s, {posts} posts, ce-agent firing {firing}, "
            f"Alertmanager active {sum(held.values())}, notifications so far {len(receiver.received.notifications)}")
    rounds_end = time.monotonic()
    window = rounds_end - t0
    cpu = {name: p.cpu() - cpu0[name] for name, p in servers.items()}
    worker_cpu = sum(w.cpu() for w in workers) - worker_cpu0
    samples1 = scrape_sum(f"{prom_url}/metrics", "prometheus_tsdb_head_samples_appended_total")
    prometheus = {
        "targets_up": prom_query(prom_url, 'count(up{job="fleet"} == 1)'),
        "targets": prom_query(prom_url, 'count(up{job="fleet"})'),
        "ce_check_status_series": prom_query(prom_url, "count(ce_check_status)"),
        "ce_check_status_critical": prom_query(prom_url, "count(ce_check_status == 2)"),
        "samples_per_scrape": prom_query(prom_url, 'avg(scrape_samples_scraped{job="fleet"})'),
        "scrape_duration_avg_s": prom_query(prom_url, 'avg(scrape_duration_seconds{job="fleet"})'),
        "scrape_duration_max_s": prom_query(prom_url, 'max(scrape_duration_seconds{job="fleet"})'),
        "head_series": prom_query(prom_url, "prometheus_tsdb_head_series"),
        "samples_per_s_rate_1m": prom_query(prom_url, "sum(rate(prometheus_tsdb_head_samples_appended_total[1m]))"),
        "samples_per_s_window": (samples1 - samples0) / window,
    }

    # let Alertmanager tell what the last rounds changed (its group_interval), agents silent meanwhile
    drain = settings.group_interval_s + settings.group_wait_s + 3
    say(f"waiting {drain:g}s for Alertmanager's last notifications ...")
    time.sleep(drain)
    am_metrics = f"{am_url}/metrics"
    alertmanager = {
        "received_firing": scrape_sum(am_metrics, "alertmanager_alerts_received_total", status="firing"),
        "received_resolved": scrape_sum(am_metrics, "alertmanager_alerts_received_total", status="resolved"),
        "invalid": scrape_sum(am_metrics, "alertmanager_alerts_invalid_total"),
        "notifications": scrape_sum(am_metrics, "alertmanager_notifications_total"),
        "notifications_failed": scrape_sum(am_metrics, "alertmanager_notifications_failed_total"),
        "active_after_drain": am_active(am_url),
    }
    for w in workers:
        w.send({"cmd": "finish"})
    finals = [w.receive(120) for w in workers]
    with receiver.received.lock:
        notifications = list(receiver.received.notifications)
    return {"settings": settings.__dict__, "incidents": scenario.incidents, "affected": scenario.affected,
            "ready": ready, "rounds": rounds, "window_s": window, "cpu_s": {**cpu, "workers": worker_cpu},
            "rss": rss, "prometheus": prometheus, "alertmanager": alertmanager, "notifications": notifications,
            "finals": finals, "baseline": base_samples}


# ---- the report ----------------------------------------------------------------------------------------


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    s = raw["settings"]
    rounds = raw["rounds"]
    answers = [a for r in rounds for a in r["workers"]]
    host_rounds = sum(a["host_runs"] for a in answers)
    names = [name for name, _f, _d in CHECKS]
    posted: dict[str, dict[str, int]] = {n: {} for n in names}
    for a in answers:
        for check, kinds in a["records"].items():
            for kind, n in kinds.items():
                posted.setdefault(check, {})[kind] = posted.setdefault(check, {}).get(kind, 0) + n
    told: dict[str, dict[str, int]] = {n: {"firing": 0, "resolved": 0} for n in names}
    for n in raw["notifications"]:
        name = n["group"].get("alertname", "?")
        told.setdefault(name, {"firing": 0, "resolved": 0})[n["status"]] += 1
    per_class = []
    for index, (name, _f, what) in enumerate(CHECKS):
        kinds = posted.get(name, {})
        notes = told.get(name, {})
        incidents = raw["incidents"][index]
        affected = raw["affected"][index]
        total = sum(notes.values())
        per_class.append({"check": name, "scenario": what, "incidents": incidents, "host_checks": affected,
                          "posted": kinds, "posted_total": sum(kinds.values()),
                          "am_notifications": notes, "notifications_per_incident": total / incidents if incidents else 0})
    posts = sum(a["posts"] for a in answers)
    records = {k: sum(c.get(k, 0) for c in posted.values()) for k in sorted({k for c in posted.values() for k in c})}
    incidents = sum(c["incidents"] for c in per_class)
    notifications = len(raw["notifications"])
    quiet = [x for a in answers for x in a["quiet_s"]]
    posting = [x for a in answers for x in a["posting_s"]]
    scrape_cpu_rounds = sum(a["scrape_cpu_s"] for a in answers)
    worker_round_cpu = sum(a["cpu_s"] for a in answers)
    finals = raw["finals"]
    scrapes = {k: sum(f["scrapes"][k] for f in finals) for k in ("count", "cpu_s", "bytes")}
    db = [x for f in finals for x in f["state_db_bytes"]]
    db_open = [x for f in finals for x in f["state_files_open_bytes"]]
    metrics_bytes = [x for f in finals for x in f["metrics_bytes"]]
    series = [x for f in finals for x in f["series"]]
    base_wall = [w for w, _c in raw["baseline"]]
    base_cpu = [c for _w, c in raw["baseline"]]
    alert_cpu_ms = (worker_round_cpu - scrape_cpu_rounds) / host_rounds * 1000
    minutes = s["rounds"]  # one round stands for one minute of a real fleet
    last = rounds[-1]
    return {
        "per_class": per_class,
        "incidents": incidents,
        "posts": posts,
        "posted_alerts": records,
        "post_failures": sum(a["failures"] for a in answers),
        "am_notifications": notifications,
        "notifications_per_incident": notifications / incidents if incidents else 0.0,
        "posts_per_incident": posts / incidents if incidents else 0.0,
        "resend_share_of_posted_alerts": records.get("resend", 0) / max(1, sum(records.values())),
        "posts_per_host_per_hour": posts / s["hosts"] / minutes * 60,
        "alertmanager": raw["alertmanager"],
        "am_active_last_round": sum(last["am_active"].values()),
        "ce_firing_last_round": sum(sum(a["firing"].values()) for a in last["workers"]),
        "ce_flapping_last_round": sum(a["flapping"] for a in last["workers"]),
        "am_active_peak": max(sum(r["am_active"].values()) for r in rounds),
        "ce_firing_peak": max(sum(sum(a["firing"].values()) for a in r["workers"]) for r in rounds),
        "prometheus": raw["prometheus"],
        "servers": {name: {"cpu_percent_of_a_core": raw["cpu_s"][name] / raw["window_s"] * 100,
                           "rss_mib_max": max(raw["rss"][name]) / MIB, "rss_mib_last": raw["rss"][name][-1] / MIB}
                    for name in ("alertmanager", "prometheus", "workers")},
        "workers_cpu_percent_of_a_core": raw["cpu_s"]["workers"] / raw["window_s"] * 100,
        "agent": {
            "host_rounds": host_rounds,
            "alert_path_cpu_ms_per_host_round": alert_cpu_ms,
            "scrape_cpu_ms": scrapes["cpu_s"] / max(1, scrapes["count"]) * 1000,
            "scrapes": scrapes["count"],
            "host_run_wall_ms_quiet": {k: v * 1000 if k != "n" else v for k, v in quantiles(quiet).items()},
            "host_run_wall_ms_posting": {k: v * 1000 if k != "n" else v for k, v in quantiles(posting).items()},
            "state_db_kib": {k: v / 1024 if k != "n" else v for k, v in quantiles(db).items()},
            "state_files_open_kib": {k: v / 1024 if k != "n" else v for k, v in quantiles(db_open).items()},
            "metrics_bytes": quantiles(metrics_bytes),
            "series_per_host": quantiles(series),
            "load_ms_per_host": statistics.median(r["load_s"] / max(1, r["hosts"]) for r in raw["ready"]) * 1000,
        },
        "baseline": {"runs": len(base_wall), "wall_ms_median": statistics.median(base_wall) * 1000 if base_wall else None,
                     "cpu_ms_median": statistics.median(base_cpu) * 1000 if base_cpu else None},
        "ratio_cron_run_cpu_to_in_process_round": (statistics.median(base_cpu) * 1000 / alert_cpu_ms)
        if base_cpu and alert_cpu_ms else None,
        "rounds": {"late": sum(r["late_s"] > 0.5 for r in rounds), "took_s": quantiles([r["took_s"] for r in rounds]),
                   "round_s": s["round_s"]},
    }


def print_report(settings: Settings, summary: dict[str, Any]) -> None:
    s = summary
    print(f"\nFleet simulation: {settings.hosts} hosts in {settings.workers} workers, {settings.rounds} rounds of "
          f"{settings.round_s:g}s (1 round = 1 check interval, read as 1 minute), seed {settings.seed}")
    print(f"alertmanager channel: resend_interval {settings.resend_s:g}s, ttl {settings.ttl_s:g}s; Alertmanager "
          f"group_by [alertname, rack], group_wait {settings.group_wait_s:g}s, group_interval "
          f"{settings.group_interval_s:g}s; Prometheus scrape_interval {settings.scrape_s:g}s")
    print(f"\n{'check (scenario)':<16} {'incidents':>9} {'host-checks':>11} {'firing':>7} {'resend':>7} "
          f"{'resolved':>8} {'other':>6} {'AM notif. firing':>16} {'resolved':>8} {'per incident':>12}")
    for c in s["per_class"]:
        p = c["posted"]
        other = sum(v for k, v in p.items() if k not in ("firing", "resend", "resolved"))
        print(f"{c['check']:<16} {c['incidents']:>9} {c['host_checks']:>11} {p.get('firing', 0):>7} "
              f"{p.get('resend', 0):>7} {p.get('resolved', 0):>8} {other:>6} {c['am_notifications']['firing']:>16} "
              f"{c['am_notifications']['resolved']:>8} {c['notifications_per_incident']:>12.2f}")
    am = s["alertmanager"]
    print(f"\nincidents injected {s['incidents']}; ce-agent POSTs {s['posts']} ({s['post_failures']} failed) carrying "
          f"{sum(s['posted_alerts'].values())} alerts {s['posted_alerts']}; re-sends are "
          f"{s['resend_share_of_posted_alerts']:.0%} of posted alerts")
    print(f"Alertmanager received {am['received_firing']:.0f} firing + {am['received_resolved']:.0f} resolved alerts "
          f"({am['invalid']:.0f} invalid); holds {s['am_active_last_round']} active after the last round "
          f"(ce-agent: {s['ce_firing_last_round']} firing, {s['ce_flapping_last_round']} flapping), peak "
          f"{s['am_active_peak']} (ce-agent firing: {s['ce_firing_peak']}); notified {s['am_notifications']} times "
          f"(its counter: {am['notifications']:.0f}, failed {am['notifications_failed']:.0f})")
    print(f"=> notifications per incident {s['notifications_per_incident']:.2f} (ce-agent POSTs per incident "
          f"{s['posts_per_incident']:.1f}); POSTs per host per simulated hour {s['posts_per_host_per_hour']:.2f}")
    p = s["prometheus"]
    print(f"\nPrometheus: up {p['targets_up']:.0f}/{p['targets']:.0f} targets, ce_check_status series "
          f"{p['ce_check_status_series']:.0f} ({p['ce_check_status_critical']:.0f} CRITICAL), head series "
          f"{p['head_series']:.0f}, samples/scrape {p['samples_per_scrape']:.0f}, ingest "
          f"{p['samples_per_s_window']:.0f} samples/s over the rounds (rate[1m]: {p['samples_per_s_rate_1m']:.0f}), "
          f"scrape duration avg {p['scrape_duration_avg_s'] * 1000:.1f} ms, max {p['scrape_duration_max_s'] * 1000:.1f} ms")
    print(f"\n{'server':<14} {'CPU % of a core':>15} {'RSS max':>10} {'RSS last':>10}")
    for name, v in s["servers"].items():
        print(f"{name:<14} {v['cpu_percent_of_a_core']:>14.1f}% {v['rss_mib_max']:>7.1f}MiB {v['rss_mib_last']:>7.1f}MiB")
    a = s["agent"]
    b = s["baseline"]
    print(f"\nOne agent (per simulated host), {a['host_rounds']} host-rounds:")
    print(f"  alert path CPU per round (worker CPU minus scrape serving)  {a['alert_path_cpu_ms_per_host_round']:.2f} ms")
    print(f"  wall per pass, median (p90): quiet {a['host_run_wall_ms_quiet']['median']:.2f} "
          f"({a['host_run_wall_ms_quiet']['p90']:.2f}) ms; posting to Alertmanager "
          f"{a['host_run_wall_ms_posting']['median']:.2f} ({a['host_run_wall_ms_posting']['p90']:.2f}) ms, "
          f"{a['host_run_wall_ms_posting']['n']} passes")
    print(f"  one scrape of its /metrics: {a['scrape_cpu_ms']:.2f} ms CPU; {a['metrics_bytes']['median']:.0f} bytes, "
          f"{a['series_per_host']['median']:.0f} series (median)")
    print(f"  state.db after the run (closed, WAL checkpointed): median {a['state_db_kib']['median']:.0f} KiB, max "
          f"{a['state_db_kib']['max']:.0f} KiB; open with -wal and -shm: median "
          f"{a['state_files_open_kib']['median']:.0f} KiB, max {a['state_files_open_kib']['max']:.0f} KiB")
    print(f"  loading its playbook and inventory once: {a['load_ms_per_host']:.1f} ms wall")
    if b["runs"]:
        print(f"  baseline, one `ce-agent run` of the same playbook as a process (median of {b['runs']}): "
              f"{b['cpu_ms_median']:.0f} ms CPU, {b['wall_ms_median']:.0f} ms wall")
        print(f"  => a cron run costs {s['ratio_cron_run_cpu_to_in_process_round']:.0f}x the CPU of the same pass "
              f"in a running process")
    r = s["rounds"]
    print(f"\nrounds: took median {r['took_s']['median']:.2f}s, max {r['took_s']['max']:.2f}s of {r['round_s']:g}s; "
          f"{r['late']} started late; workers used {s['workers_cpu_percent_of_a_core']:.0f}% of a core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--round-seconds", type=float, default=10.0, help="wall time of one round (check interval)")
    parser.add_argument("--scrape-seconds", type=float, help="Prometheus' scrape_interval (default: one round)")
    parser.add_argument("--rack-size", type=int, default=40)
    parser.add_argument("--baseline-runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="200 hosts, 12 rounds of 5 s: about 2 minutes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the figures (and the raw per-round data) here")
    args = parser.parse_args()
    if args.quick:
        args.hosts, args.rounds, args.round_seconds, args.baseline_runs = 200, 12, 5.0, 3
    if args.rounds < 8:
        parser.error("--rounds: at least 8 (the incidents need room to fire and resolve)")
    settings = Settings(args.hosts, max(1, args.workers), args.rounds, args.round_seconds,
                        args.scrape_seconds or args.round_seconds, args.rack_size, args.seed, args.baseline_runs)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill runs the finally blocks too
    # started in the background by a shell, SIGINT comes ignored: Ctrl-C (or kill -INT) must still clean up
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="ce-fleet-"))
    try:
        raw = run(settings, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarize(raw)
    print_report(settings, summary)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "raw": raw}, indent=1, default=str))


if __name__ == "__main__":
    main()
