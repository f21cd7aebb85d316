#!/usr/bin/env python3
"""Accelerated soak of `ce-agent agent`: 200 checks every 1-10 s, flapping alerts, a webhook failing 10 %.

What it does (issue 7, point 8):

1. Baseline: the same agent (the same 200 checks, the same channel) with nothing due — every check
   is scheduled `0 0 29 2 *` — run for the warm-up and sampled like the soak, so the soak's RSS is
   read against an agent that only loaded its configuration and served /metrics.
2. Soak: a real `ce-agent agent` on a generated playbook of 200 checks, intervals drawn from 1-10 s
   (seeded): `command` checks (`true`, Debian's `check_dummy 0` when installed, and
   `bash -c 'exit $((RANDOM%3))'`, which flaps), and Python ones (`file` on /etc/hostname, `file`
   on flag files this script creates and removes at seeded moments so alerts fire and resolve,
   `tcp` to a closed 127.0.0.1 port, `process`). Every check notifies a `json://` webhook served by
   this script on 127.0.0.1, which answers 500 to a seeded 10 % of requests so the outbox retries.
   Every `--sample` seconds: the agent's RSS and USS, open descriptors (`num_fds`), threads,
   children, CPU, state.db (+ WAL) size, and from /metrics: runs, notifications sent and failed,
   outbox depth, scheduler lateness (p99 over the sample's interval, from the histogram's buckets).
   The warm-up (10 % of the run, at least 60 s) is left out: "start" is the median of the first 3
   samples after it, "end" the median of the last 3.
3. SIGTERM: the time until the agent exits (target: exit 0 within 10 s), and every process left in
   its process group (target: none).

Targets (printed with PASS/FAIL): RSS growth start -> end under 5 MiB; descriptors and threads flat
(end at most start + 2); SIGTERM exit 0 within 10 s; no process left in the agent's group.

Every process this script starts has its own process group and is stopped in a `finally`. Nothing
listens beyond 127.0.0.1.

Usage: .venv/bin/python bench/soak.py [--minutes 30] [--sample 10] [--seed 7] [--json FILE]
       .venv/bin/python bench/soak.py --minutes 2      # a quick run (warm-up 60 s)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from daemon import MIB, Processes, Subject, get, lateness_buckets, quantile, samples, start_agent  # noqa: E402

CHECKS = 200
CHECK_DUMMY = "/usr/lib/nagios/plugins/check_dummy"
NEVER = "0 0 29 2 *"  # the baseline's schedule: nothing due until the next 29 February
RSS_GROWTH_TARGET_MIB = 5.0
FLAT_SLACK = 2  # descriptors and threads: "flat" means the end is at most this above the start
STOP_TARGET_S = 10.0
EDGE = 3  # start/end figures are medians of this many samples


# ---- the receiver ---------------------------------------------------------------------------------------


class Receiver:
    """A webhook on 127.0.0.1 answering 500 to a seeded `error_rate` of requests, 200 to the others."""

    def __init__(self, error_rate: float, seed: int) -> None:
        self.rng = random.Random(seed)
        self.error_rate = error_rate
        self.ok = 0
        self.failed = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    fail = receiver.rng.random() < receiver.error_rate
                    if fail:
                        receiver.failed += 1
                    else:
                        receiver.ok += 1
                self.send_response(500 if fail else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# ---- the configuration ----------------------------------------------------------------------------------


def closed_port() -> tuple[socket.socket, int]:
    """A port on 127.0.0.1 that refuses connections: bound (so nobody else takes it), not listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, int(sock.getsockname()[1])


def write_config(work: Path, name: str, rng: random.Random, hook_port: int, dead_port: int, flags: list[Path],
                 idle: bool) -> Path:
    """The playbook (200 checks) and `work/inventory.yml` (the webhook channel); returns the playbook."""
    dummy = [CHECK_DUMMY, "0", "dummy ok"] if os.access(CHECK_DUMMY, os.X_OK) else ["true"]
    kinds: list[tuple[str, str]] = (
        [("true", "command: {argv: [true]}")] * 50
        + [("dummy", f"command: {{argv: {json.dumps(dummy)}}}")] * 20
        # flaps: OK, WARNING or CRITICAL at random on each run
        + [("flap", "command: {argv: [bash, -c, 'exit $((RANDOM%3))']}")] * 10
        + [("file", "file: {path: /etc/hostname}")] * 60
        + [("flag", f"file: {{path: {flag}}}") for flag in flags]
        + [("tcp", f"tcp: {{host: 127.0.0.1, port: {dead_port}}}")] * 20
        + [("process", "process: {cmdline: ce_agent}")] * (CHECKS - 160 - len(flags))
    )
    assert len(kinds) == CHECKS
    lines = [f"# generated by bench/soak.py ({'idle baseline' if idle else 'soak'})", f"- name: {name}",
             "  hosts: localhost", "  checks:"]
    for i, (kind, plugin) in enumerate(kinds):
        when = f'schedule: "{NEVER}"' if idle else f"interval: {rng.randint(1, 10)}s"
        lines.append(f"    - {{name: {kind}-{i:03d}, {plugin}, {when}, timeout: 5s, notify: [hook]}}")
    playbook = work / f"{name.lower().replace(' ', '-')}.yml"
    playbook.write_text("\n".join(lines) + "\n")
    (work / "inventory.yml").write_text(
        "all:\n  vars:\n    channels:\n"
        f'      hook: "json://127.0.0.1:{hook_port}/alerts"\n'
        "    delivery: {attempts: 1, retry_after: 1s, max_retry_after: 5s}\n"
        "  hosts:\n    localhost: {}\n")
    return playbook


# ---- sampling -------------------------------------------------------------------------------------------


def group_members(pgid: int) -> list[psutil.Process]:
    """Every live process whose process group is `pgid` (the agent's, or what it left behind)."""
    out = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(ProcessLookupError, psutil.Error):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
    return out


def sample(agent: Subject, state_dir: Path, started: float) -> dict[str, Any]:
    proc = agent.proc
    with proc.oneshot():
        mem = proc.memory_full_info()
        cpu = proc.cpu_times()
        row: dict[str, Any] = {
            "t": round(time.monotonic() - started, 1),
            "rss_mib": mem.rss / MIB, "uss_mib": mem.uss / MIB,
            "fds": proc.num_fds(), "threads": proc.num_threads(),
            "children": len(proc.children(recursive=True)),
            "cpu_s": cpu.user + cpu.system + cpu.children_user + cpu.children_system,
        }
    row["db_mib"] = sum(p.stat().st_size for p in state_dir.glob("state.db*") if p.is_file()) / MIB
    _, body = get(agent.url)
    text = body.decode()
    row["runs"] = sum(v for _, v in samples(text, "ce_check_runs_total"))
    row["sent"] = sum(v for _, v in samples(text, "ce_notifications_sent_total"))
    row["failed"] = sum(v for _, v in samples(text, "ce_notification_delivery_failures_total"))
    row["outbox"] = sum(v for _, v in samples(text, "ce_outbox_depth"))
    row["lateness_buckets"] = lateness_buckets(text)
    return row


def window_p99(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> float:
    """p99 lateness of the starts between two scrapes (the buckets' difference), as histogram_quantile."""
    was = dict(before)
    return quantile(0.99, [(le, count - was.get(le, 0.0)) for le, count in after])


def run_phase(procs: Processes, work: Path, env: dict[str, str], playbook: Path, name: str, seconds: float,
              every: float, flags: list[Path], rng: random.Random) -> tuple[Subject, Path, list[dict[str, Any]]]:
    """Start an agent on `playbook`, sample it every `every` s for `seconds`, toggling `flags` meanwhile."""
    agent = start_agent(procs, name, playbook, work, env)
    args = list(agent.popen.args)  # type: ignore[arg-type]
    state_dir = Path(args[args.index("--state-dir") + 1])
    started = time.monotonic()
    # each flag file flips at its own seeded moments, 20-90 s apart: its check fires, then resolves
    flips = {flag: started + rng.uniform(5, 60) for flag in flags}
    rows: list[dict[str, Any]] = []
    next_sample = started
    while (now := time.monotonic()) < started + seconds:
        for flag, at in flips.items():
            if now >= at:
                if flag.exists():
                    flag.unlink()
                else:
                    flag.touch()
                flips[flag] = now + rng.uniform(20, 90)
        if now >= next_sample:
            agent.check()
            rows.append(sample(agent, state_dir, started))
            if len(rows) > 1:
                rows[-1]["p99_s"] = window_p99(rows[-2]["lateness_buckets"], rows[-1]["lateness_buckets"])
            next_sample += every
            r = rows[-1]
            print(f"  {r['t']:7.0f} s  RSS {r['rss_mib']:6.1f} MiB  USS {r['uss_mib']:6.1f}  fds {r['fds']:3d}  "
                  f"threads {r['threads']:3d}  children {r['children']:2d}  db {r['db_mib']:5.2f} MiB  "
                  f"runs {r['runs']:7.0f}  sent {r['sent']:5.0f}  failed {r['failed']:4.0f}  "
                  f"outbox {r['outbox']:3.0f}  p99 {r.get('p99_s', float('nan')):.3f} s", flush=True)
        time.sleep(0.25)
    return agent, state_dir, rows


def stop_and_check(agent: Subject) -> dict[str, Any]:
    """SIGTERM the agent (not its group: it must clean up itself), time its exit, list what is left."""
    pgid = agent.popen.pid
    before = group_members(pgid)
    started = time.monotonic()
    agent.popen.send_signal(signal.SIGTERM)
    try:
        code: int | None = agent.popen.wait(timeout=30)
    except Exception:  # noqa: BLE001 - a hung agent is a figure (None), the finally kills it
        code = None
    seconds = time.monotonic() - started
    time.sleep(0.2)  # a child reparented at the agent's exit shows up in its group still
    left = [f"{p.pid} {' '.join(p.cmdline())[:80]}" for p in group_members(pgid) if p.pid != pgid]
    return {"exit_code": code, "exit_s": seconds, "left": left, "group_before": len(before)}


# ---- report ---------------------------------------------------------------------------------------------


def edges(rows: list[dict[str, Any]], key: str) -> tuple[float, float]:
    return statistics.median(r[key] for r in rows[:EDGE]), statistics.median(r[key] for r in rows[-EDGE:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the soak, warm-up included (30)")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples (10)")
    parser.add_argument("--error-rate", type=float, default=0.10, help="share of webhook requests answered 500")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the figures and every sample here")
    args = parser.parse_args()
    total = args.minutes * 60
    warmup = max(60.0, 0.1 * total)
    if total < warmup + (2 * EDGE - 1) * args.sample:
        raise SystemExit(f"--minutes {args.minutes}: too short for a {warmup:.0f} s warm-up and {2 * EDGE} samples")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a CI timeout goes through the finally
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.pop("NOTIFY_SOCKET", None)
    work = Path(tempfile.mkdtemp(prefix="ce-bench-soak-"))
    env["TMPDIR"] = str(work)
    print(f"machine: {os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"soak {total / 60:.1f} min (warm-up {warmup:.0f} s left out), sample every {args.sample:.0f} s, "
          f"{CHECKS} checks, webhook errors {args.error_rate:.0%}, seed {args.seed}", flush=True)
    receiver = Receiver(args.error_rate, args.seed)
    dead, dead_port = closed_port()
    flags = [work / f"flag-{i}" for i in range(10)]
    procs = Processes()
    figures: dict[str, Any] = {"machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                                           "kernel": platform.release()},
                               "minutes": args.minutes, "warmup_s": warmup, "sample_s": args.sample,
                               "checks": CHECKS, "error_rate": args.error_rate, "seed": args.seed}
    try:
        # 1. baseline: nothing due, for the warm-up
        print(f"\n== baseline: the same agent, nothing due, {warmup:.0f} s ==", flush=True)
        playbook = write_config(work, "Soak idle", random.Random(args.seed), receiver.port, dead_port, flags, True)
        idle, _, idle_rows = run_phase(procs, work, env, playbook, "ce-agent (idle)", warmup, args.sample, [],
                                       random.Random(args.seed))
        procs.stop(idle)
        idle_rss = statistics.median(r["rss_mib"] for r in idle_rows[-EDGE:])
        figures["baseline"] = {"rss_mib": idle_rss, "fds": idle_rows[-1]["fds"], "threads": idle_rows[-1]["threads"],
                               "rows": idle_rows}

        # 2. the soak
        print(f"\n== soak: {CHECKS} checks every 1-10 s, {total / 60:.1f} min ==", flush=True)
        rng = random.Random(args.seed)
        playbook = write_config(work, "Soak", rng, receiver.port, dead_port, flags, False)
        agent, state_dir, rows = run_phase(procs, work, env, playbook, "ce-agent (soak)", total, args.sample, flags,
                                           rng)
        measured = [r for r in rows if r["t"] >= warmup]
        elapsed = measured[-1]["t"] - measured[0]["t"]
        cpu_pct = 100 * (measured[-1]["cpu_s"] - measured[0]["cpu_s"]) / elapsed
        runs_per_s = (measured[-1]["runs"] - measured[0]["runs"]) / elapsed

        # 3. SIGTERM
        stop = stop_and_check(agent)
        procs.stop(agent)
        print(f"\nSIGTERM: exit {stop['exit_code']} after {stop['exit_s']:.2f} s; processes left in its group: "
              f"{len(stop['left'])} {stop['left'] or ''}")
    finally:
        procs.stop_all()
        receiver.stop()
        dead.close()

    results = []
    print(f"\n== figures: measured {elapsed:.0f} s after a {warmup:.0f} s warm-up, start/end = median of "
          f"{EDGE} samples ==")
    print(f"{'':22} {'baseline':>9} {'start':>9} {'end':>9} {'growth':>9}  target")
    for key, label, unit, target in (("rss_mib", "RSS", "MiB", RSS_GROWTH_TARGET_MIB), ("uss_mib", "USS", "MiB", None),
                                     ("fds", "open descriptors", "", FLAT_SLACK),
                                     ("threads", "threads", "", FLAT_SLACK), ("db_mib", "state.db + WAL", "MiB", None)):
        start, end = edges(measured, key)
        base = statistics.median(r[key] for r in idle_rows[-EDGE:])
        growth = end - start
        if target is None:
            verdict = ""
        else:
            ok = growth < target if key == "rss_mib" else growth <= target
            results.append(ok)
            verdict = f"{'< ' if key == 'rss_mib' else '<= +'}{target:g}{' ' + unit if unit else ''}: {'PASS' if ok else 'FAIL'}"
        print(f"{label + (' (' + unit + ')' if unit else ''):22} {base:9.1f} {start:9.1f} {end:9.1f} {growth:+9.1f}  "
              f"{verdict}")
        figures[key] = {"baseline": base, "start": start, "end": end, "growth": growth,
                        "min": min(r[key] for r in measured), "max": max(r[key] for r in measured)}
    print(f"RSS over the baseline (the cost of working): {figures['rss_mib']['end'] - figures['baseline']['rss_mib']:+.1f} MiB"
          f"; RSS min/max after warm-up {figures['rss_mib']['min']:.1f}/{figures['rss_mib']['max']:.1f} MiB")
    children = [r["children"] for r in measured]
    p99s = [r["p99_s"] for r in measured if r.get("p99_s") == r.get("p99_s") and "p99_s" in r]
    last = rows[-1]
    print(f"children: median {statistics.median(children):.0f}, max {max(children)}; "
          f"agent CPU {cpu_pct:.1f} % of one core; {runs_per_s:.1f} runs/s, {last['runs']:.0f} in all")
    print(f"notifications: {last['sent']:.0f} sent, {last['failed']:.0f} failed attempts; receiver answered "
          f"{receiver.ok} x 200, {receiver.failed} x 500; outbox depth at the end {last['outbox']:.0f}, "
          f"max {max(r['outbox'] for r in measured):.0f}")
    if p99s:
        print(f"scheduler lateness p99 per {args.sample:.0f} s sample: median {statistics.median(p99s):.3f} s, "
              f"worst {max(p99s):.3f} s")
    exit_ok = stop["exit_code"] == 0 and stop["exit_s"] <= STOP_TARGET_S
    results += [exit_ok, not stop["left"]]
    print(f"SIGTERM exit 0 within {STOP_TARGET_S:g} s: {'PASS' if exit_ok else 'FAIL'} "
          f"({stop['exit_code']}, {stop['exit_s']:.2f} s)")
    print(f"no process left in its group: {'PASS' if not stop['left'] else 'FAIL'} ({len(stop['left'])} left)")
    print(f"\n{'PASS' if all(results) else 'FAIL'}: {sum(results)} of {len(results)} targets met")
    figures.update({"cpu_pct": cpu_pct, "runs_per_s": runs_per_s, "runs": last["runs"], "sent": last["sent"],
                    "failed": last["failed"], "receiver": {"ok": receiver.ok, "500": receiver.failed},
                    "outbox_end": last["outbox"], "outbox_max": max(r["outbox"] for r in measured),
                    "lateness_p99_median_s": statistics.median(p99s) if p99s else None,
                    "lateness_p99_worst_s": max(p99s) if p99s else None,
                    "children_max": max(children), "stop": stop, "passed": all(results), "rows": rows})
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
