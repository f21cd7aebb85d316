"""The state store: one SQLite file that survives crashes, corruption, upgrades and full disks."""

from __future__ import annotations

import ast
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import closing
from pathlib import Path

import pytest

from ce_agent import store as store_module
from ce_agent.store import MIGRATIONS, OutboxItem, ResultRow, SampleRow, Silence, Store, StoreError, default_state_dir

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
LATEST = len(MIGRATIONS)


def row(ts: float, check: str = "Root disk", host: str = "web1", play: str = "Local", status: int = 0) -> ResultRow:
    metrics = [{"name": "disk_used_percent", "value": ts, "unit": "%", "labels": {"path": "/"}}]
    return ResultRow(ts, play, host, check, "disk", status, f"/ {ts}% used", 0.01, metrics)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def store(db_path: Path):
    opened, notices = Store.open(db_path, NOW)
    assert notices == []
    yield opened
    opened.close()


def raw(path: Path) -> closing[sqlite3.Connection]:
    return closing(sqlite3.connect(str(path), timeout=5))


def pragma(path: Path, name: str) -> object:
    with raw(path) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


# ---- where the state lives --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "euid", "expected"),
    [
        pytest.param({"CE_AGENT_STATE_DIR": "/srv/ce"}, 0, "/srv/ce", id="CE_AGENT_STATE_DIR-wins-even-for-root"),
        pytest.param({"CE_AGENT_STATE_DIR": "/srv/ce", "XDG_STATE_HOME": "/x"}, 1000, "/srv/ce", id="CE_AGENT_STATE_DIR-wins-over-XDG"),
        pytest.param({"XDG_STATE_HOME": "/x"}, 0, "/var/lib/ce-agent", id="root-uses-var-lib"),
        pytest.param({"XDG_STATE_HOME": "/x/state"}, 1000, "/x/state/ce-agent", id="user-with-XDG_STATE_HOME"),
        pytest.param({}, 1000, "/home/ann/.local/state/ce-agent", id="user-default"),
        pytest.param({"XDG_STATE_HOME": ""}, 1000, "/home/ann/.local/state/ce-agent", id="empty-XDG-is-unset"),
        pytest.param({"XDG_STATE_HOME": "rel/state"}, 1000, "/home/ann/.local/state/ce-agent", id="relative-XDG-is-invalid"),
        pytest.param({"CE_AGENT_STATE_DIR": ""}, 0, "/var/lib/ce-agent", id="empty-CE_AGENT_STATE_DIR-is-unset"),
    ],
)
def test_default_state_dir(environ: dict[str, str], euid: int, expected: str) -> None:
    assert default_state_dir(environ, euid, Path("/home/ann")) == Path(expected)


def test_open_creates_a_private_directory_and_a_wal_database(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state" / "state.db"
    opened, notices = Store.open(path, NOW)
    opened.close()
    assert notices == []
    assert path.is_file()
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert pragma(path, "journal_mode") == "wal"
    assert pragma(path, "user_version") == LATEST


def test_open_accepts_the_state_directory_itself(tmp_path: Path) -> None:
    opened, _ = Store.open(tmp_path, NOW)
    with opened:
        assert opened.path == tmp_path / "state.db"


def test_reopen_keeps_everything_and_records_the_schema_version(db_path: Path) -> None:
    first, _ = Store.open(db_path, NOW)
    assert first.schema_version == LATEST
    first.add_results([row(NOW)])
    first.save_alert("a1", {"alertname": "Disk"}, {"phase": "firing"}, NOW)
    first.enqueue("ops-mail", "a1", "firing", {"summary": "disk full"}, NOW)
    first.close()

    second, notices = Store.open(db_path, NOW + 60)
    with second:
        assert notices == []
        assert second.schema_version == LATEST
        assert second.results(0) == [row(NOW)]
        assert second.load_alerts() == {"a1": ({"alertname": "Disk"}, {"phase": "firing"})}
        assert [item.payload for item in second.pending()] == [{"summary": "disk full"}]


def test_a_database_from_a_newer_ce_agent_is_refused_and_left_alone(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with raw(db_path) as conn:
        conn.execute("CREATE TABLE future (x)")
        conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    before = db_path.read_bytes()

    with pytest.raises(StoreError) as raised:
        Store.open(db_path, NOW)

    message = str(raised.value)
    assert f"state.db was written by a newer ce-agent (schema {LATEST + 1})" in message
    assert "\n" not in message
    assert db_path.read_bytes() == before
    assert sorted(p.name for p in db_path.parent.iterdir()) == ["state.db"]


# ---- migrations -------------------------------------------------------------------------------------


def make_v1_database(path: Path) -> None:
    """A state.db exactly as the first schema left it, with a little data in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with raw(path) as conn:
        conn.executescript(MIGRATIONS[0])
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO results (ts, play, host, check_name, plugin, status, summary, duration_s, metrics)"
            " VALUES (10, 'Local', 'web1', 'Root disk', 'disk', 1, 'old result', 0.5, '[]')"
        )
        conn.execute(
            "INSERT INTO outbox (channel, alert_key, kind, payload, created, due) VALUES ('chat', 'a1', 'firing', '{\"n\": 1}', 10, 10)"
        )
        conn.execute("INSERT INTO alerts VALUES ('a1', '{\"alertname\": \"Disk\"}', '{\"phase\": \"firing\"}', 10)")
        conn.commit()


def test_a_version_1_database_is_migrated_with_its_data(db_path: Path) -> None:
    make_v1_database(db_path)

    opened, notices = Store.open(db_path, NOW)
    with opened:
        assert notices == []
        assert opened.schema_version == LATEST > 1
        assert [(r.summary, r.status) for r in opened.results(0)] == [("old result", 1)]
        assert [(i.channel, i.key, i.payload) for i in opened.due(NOW)] == [("chat", "a1", {"n": 1})]
        assert opened.load_alerts() == {"a1": ({"alertname": "Disk"}, {"phase": "firing"})}
        # what later steps added works too
        opened.set_notified("a1", "chat", True, 2, NOW)
        opened.add_ping("backup", "success", NOW)
        assert opened.notified("a1", "chat") == {"firing": True, "status": 2, "last_sent": NOW}
        assert opened.last_ping("backup") == ("success", NOW)
        assert opened.dropped_total() == 0
    assert pragma(db_path, "user_version") == LATEST


def test_a_failing_migration_step_changes_nothing(db_path: Path) -> None:
    make_v1_database(db_path)
    with raw(db_path) as conn:  # something in the way of the second step's last table
        conn.execute("CREATE TABLE pings (whatever TEXT)")
        conn.commit()

    with pytest.raises(StoreError, match="table pings already exists"):
        Store.open(db_path, NOW)

    with raw(db_path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "notification_log" not in tables  # created earlier in the same step, rolled back with it
    assert {"results", "outbox", "pings"} <= tables


# ---- corruption -------------------------------------------------------------------------------------


def truncated_database(path: Path) -> None:
    opened, _ = Store.open(path, NOW)
    with opened:
        opened.add_results([row(float(i), host=f"web{i % 5}") for i in range(300)])
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize(
    ("damage", "companions"),
    [
        pytest.param(lambda p: p.write_bytes(random.Random(7).randbytes(16384)), False, id="random-bytes"),
        pytest.param(lambda p: p.write_text("this is not a database\n" * 200), False, id="text-file"),
        pytest.param(truncated_database, False, id="truncated-real-database"),
        pytest.param(lambda p: p.write_bytes(random.Random(8).randbytes(4096)), True, id="with-its-wal-and-shm"),
    ],
)
def test_a_damaged_database_is_moved_aside_and_a_fresh_one_started(db_path: Path, damage, companions: bool) -> None:
    db_path.parent.mkdir(parents=True)
    damage(db_path)
    if companions:
        Path(f"{db_path}-wal").write_bytes(b"stale wal")
        Path(f"{db_path}-shm").write_bytes(b"stale shm")
    damaged = db_path.read_bytes()

    opened, notices = Store.open(db_path, NOW)
    with opened:
        opened.add_results([row(NOW)])
        assert opened.results(0) == [row(NOW)]
        assert opened.schema_version == LATEST

    aside = db_path.with_name("state.db.corrupt-20231114T221320")
    assert len(notices) == 1 and "\n" not in notices[0]
    assert str(db_path) in notices[0] and aside.name in notices[0]
    assert aside.read_bytes() == damaged
    if companions:
        assert Path(f"{aside}-wal").read_bytes() == b"stale wal"
        assert Path(f"{aside}-shm").exists()  # SQLite rewrites this index of the -wal when it opens one
    assert pragma(db_path, "quick_check") == "ok"


def test_a_second_corruption_in_the_same_second_does_not_overwrite_the_first(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    for text in ("first junk\n" * 100, "second junk\n" * 100):
        db_path.write_text(text)
        Store.open(db_path, NOW)[0].close()
    assert (db_path.parent / "state.db.corrupt-20231114T221320").read_text().startswith("first junk")
    assert (db_path.parent / "state.db.corrupt-20231114T221320-2").read_text().startswith("second junk")


# ---- crashes ----------------------------------------------------------------------------------------

CRASH_MAX_ITEMS = 25

WRITER = r"""
import sys
from pathlib import Path
from ce_agent.store import ResultRow, Store

store, _ = Store.open(Path(sys.argv[1]), 0.0)
i = len(store.results(0.0))
while True:
    with store.transaction():
        store.add_results([ResultRow(float(i), "play", "host", "check", "disk", i % 4, f"result {i}", 0.01,
                                     [{"name": "n", "value": i}])])
        store.enqueue("chat", f"alert{i % 7}", "firing", {"i": i, "pad": "x" * (i * 37 % 3000)}, float(i),
                      max_items=int(sys.argv[2]))
        if i % 3 == 0:
            store.delivered(store.pending()[-1].id)
    store.add_ping("job", "success", float(i))
    i += 1
"""


def expected_outbox(n: int) -> tuple[list[int], int]:
    """What the writer leaves after n complete iterations: the ids in the outbox and how many were dropped."""
    outbox: deque[int] = deque()
    dropped = 0
    for i in range(n):
        outbox.append(i)
        while len(outbox) > CRASH_MAX_ITEMS:
            outbox.popleft()
            dropped += 1
        if i % 3 == 0:
            outbox.pop()
    return list(outbox), dropped


def test_kill_9_at_random_moments_never_leaves_a_damaged_or_half_written_state(db_path: Path) -> None:
    rng = random.Random(20240601)
    progress: list[int] = []
    n = 0
    for _ in range(30):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db_path), str(CRASH_MAX_ITEMS)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        time.sleep(rng.uniform(0.02, 0.2))
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=10)
        assert child.returncode == -signal.SIGKILL, err.decode()

        if not db_path.exists():
            continue  # killed before it even created the file
        opened, notices = Store.open(db_path, NOW)
        with opened:
            assert notices == []
            results = opened.results(0.0)
            items = opened.pending()
            dropped = opened.dropped_total()
            last_ping = opened.last_ping("job")
        assert pragma(db_path, "quick_check") == "ok"

        progress.append(len(results) - n)
        n = len(results)
        assert [(r.ts, r.summary, r.metrics) for r in results] == [
            (float(i), f"result {i}", [{"name": "n", "value": i}]) for i in range(n)
        ]
        assert [item.payload for item in items] == [
            {"i": i, "pad": "x" * (i * 37 % 3000)} for i in expected_outbox(n)[0]
        ]
        assert dropped == expected_outbox(n)[1]
        assert last_ping is None if n == 0 else last_ping[1] in (n - 1, n - 2)

    assert sum(1 for p in progress if p > 0) >= 10, progress  # most kills landed in the middle of writing
    assert n > CRASH_MAX_ITEMS * 4  # the bound was exercised, drops happened


# ---- write failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "reason"),
    [
        pytest.param("max_page_count = {pages}", "database or disk is full", id="disk-full"),
        pytest.param("query_only = ON", "attempt to write a readonly database", id="read-only"),
    ],
)
def test_a_failed_write_is_one_line_naming_the_file_and_changes_nothing(store: Store, limit: str, reason: str) -> None:
    store.add_results([row(1.0)])
    # A real SQLite limit on the store's own connection: the same errors as a full disk or a read-only file.
    conn = store._conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA {limit.format(pages=pages)}")

    with pytest.raises(StoreError) as raised:
        with store.transaction():
            store.enqueue("chat", "a1", "firing", {"blob": "x" * 200_000}, NOW)
            store.add_results([ResultRow(2.0, "p", "h", "c", "disk", 0, "y" * 200_000, 0.1, [])])

    assert str(raised.value) == f"state database {store.path}: {reason}"
    conn.execute("PRAGMA max_page_count = 1073741823")
    conn.execute("PRAGMA query_only = OFF")
    assert store.outbox_depth() == 0
    assert store.results(0) == [row(1.0)]
    store.add_ping("job", "success", NOW)  # and the store still works
    assert store.last_ping("job") == ("success", NOW)


def unwritable_by_mode(tmp_path: Path) -> Path:
    if os.geteuid() == 0:
        pytest.skip("root ignores directory modes")
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    return directory


def kernel_filesystem(tmp_path: Path) -> Path:
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    return Path("/proc")  # not even root can create a file there


def under_a_regular_file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "state"


@pytest.mark.parametrize(
    ("make_directory", "says"),
    [
        pytest.param(unwritable_by_mode, "is not writable: Permission denied", id="chmod-0500"),
        pytest.param(kernel_filesystem, "is not writable", id="proc"),
        pytest.param(under_a_regular_file, "cannot create state directory", id="parent-is-a-file"),
    ],
)
def test_a_state_directory_that_cannot_be_written_is_one_line_saying_which_and_why(
    tmp_path: Path, make_directory, says: str
) -> None:
    directory = make_directory(tmp_path)
    try:
        with pytest.raises(StoreError) as raised:
            Store.open(directory / "state.db", NOW)
    finally:
        if directory.name == "ro":
            directory.chmod(0o700)
    message = str(raised.value)
    assert str(directory) in message and says in message
    assert "\n" not in message


# ---- results ----------------------------------------------------------------------------------------


def test_results_are_returned_oldest_first_and_filtered(store: Store) -> None:
    store.add_results([row(30.0), row(10.0, host="web2"), row(20.0, check="Load"), row(5.0)])

    assert [r.ts for r in store.results(0)] == [5.0, 10.0, 20.0, 30.0]
    assert [r.ts for r in store.results(10.0)] == [10.0, 20.0, 30.0]
    assert [r.ts for r in store.results(0, check="Root disk")] == [5.0, 10.0, 30.0]
    assert [r.ts for r in store.results(0, host="web2")] == [10.0]
    assert [r.ts for r in store.results(0, check="Root disk", host="web1")] == [5.0, 30.0]
    assert store.results(0)[0] == row(5.0)


def test_prune_bounds_every_history(store: Store) -> None:
    day = 86400.0
    store.add_results([row(NOW - 40 * day)])  # too old
    store.add_results([row(NOW - i) for i in range(5)])  # one check on web1: keep the newest 3
    store.add_results([row(NOW - i, host="web2") for i in range(2)])  # the same check on web2: its own cap
    store.add_history("gone", {}, "firing", 2, "old", NOW - 40 * day)
    store.add_history("a1", {}, "firing", 2, "recent", NOW - day)
    store.add_ping("job", "success", NOW - 50 * day)  # old, but the newest success: kept
    store.add_ping("job", "success", NOW - 40 * day)
    store.add_ping("job", "fail", NOW - 45 * day)
    store.add_ping("job", "fail", NOW - 44 * day)
    store.add_silence(["host=web1"], NOW - 40 * day, NOW - 39 * day, "long ago", "ann", NOW - 40 * day)
    store.add_silence(["host=web2"], NOW - day, NOW + day, "now", "ann", NOW - day)
    store.save_alert("a1", {}, {}, NOW)
    store.set_notified("a1", "chat", True, 2, NOW - 40 * day)  # a live alert: kept
    store.set_notified("gone", "chat", False, 0, NOW - 40 * day)  # an alert that no longer exists

    removed = store.prune(NOW, max_age_s=30 * day, max_rows_per_check=3)

    assert [(r.host, r.ts) for r in store.results(0)] == [
        ("web1", NOW - 2), ("web1", NOW - 1), ("web2", NOW - 1), ("web1", NOW), ("web2", NOW)
    ]
    assert [h["summary"] for h in store.history(0)] == ["recent"]
    assert store.last_ping("job", "success") == ("success", NOW - 40 * day)
    assert store.last_ping("job", "fail") == ("fail", NOW - 44 * day)
    assert [s.comment for s in store.silences(include_expired=True)] == ["now"]
    assert store.notified("a1", "chat") is not None and store.notified("gone", "chat") is None
    # 1 old + 2 over the cap, 1 history, 2 pings, 1 silence, 1 notification log entry
    assert removed == 8
    assert store.prune(NOW, max_age_s=30 * day, max_rows_per_check=3) == 0


# ---- alerts and what channels were told -------------------------------------------------------------


def test_alert_states_are_saved_replaced_and_deleted(store: Store) -> None:
    store.save_alert("a1", {"alertname": "Disk", "host": "web1"}, {"phase": "pending", "since": 1}, NOW)
    store.save_alert("a2", {"alertname": "Load"}, {"phase": "firing"}, NOW)
    store.save_alert("a1", {"alertname": "Disk", "host": "web1"}, {"phase": "firing", "since": 1}, NOW + 60)
    store.delete_alert("a2")
    store.delete_alert("never-existed")
    assert store.load_alerts() == {"a1": ({"alertname": "Disk", "host": "web1"}, {"phase": "firing", "since": 1})}


def test_alert_history_is_returned_oldest_first_since_a_time(store: Store) -> None:
    store.add_history("a1", {"host": "web1"}, "resolved", 0, "back to normal", NOW + 120)
    store.add_history("a1", {"host": "web1"}, "firing", 2, "disk 95%", NOW)
    store.add_history("a0", {}, "firing", 1, "before", NOW - 3600)
    assert store.history(NOW) == [
        {"key": "a1", "labels": {"host": "web1"}, "kind": "firing", "status": 2, "summary": "disk 95%", "at": NOW},
        {"key": "a1", "labels": {"host": "web1"}, "kind": "resolved", "status": 0, "summary": "back to normal", "at": NOW + 120},
    ]


def test_the_notification_log_remembers_each_channel_separately(store: Store) -> None:
    assert store.notified("a1", "chat") is None
    store.set_notified("a1", "chat", True, 2, NOW)
    store.set_notified("a1", "ops-mail", True, 2, NOW + 1)
    store.set_notified("a1", "chat", False, 0, NOW + 300)
    assert store.notified("a1", "chat") == {"firing": False, "status": 0, "last_sent": NOW + 300}
    assert store.notified("a1", "ops-mail") == {"firing": True, "status": 2, "last_sent": NOW + 1}
    assert store.notified("a2", "chat") is None


# ---- outbox -----------------------------------------------------------------------------------------


def test_the_outbox_drops_its_oldest_items_beyond_its_bound_and_counts_them(db_path: Path) -> None:
    opened, _ = Store.open(db_path, NOW)
    dropped = [opened.enqueue("chat", f"a{i}", "firing", {"i": i}, NOW + i, max_items=10) for i in range(25)]
    assert dropped == [0] * 10 + [1] * 15
    assert opened.outbox_depth() == 10
    assert [item.payload["i"] for item in opened.pending()] == list(range(15, 25))
    opened.close()

    reopened, _ = Store.open(db_path, NOW)
    with reopened:
        assert reopened.dropped_total() == 15
        assert reopened.outbox_depth() == 10


def test_the_outbox_hands_out_due_items_in_order_and_retries_later(store: Store) -> None:
    def enqueue(channel: str, key: str, kind: str, n: int, now: float) -> OutboxItem:
        store.enqueue(channel, key, kind, {"n": n}, now)
        return store.pending()[-1]

    def ids(items: list[OutboxItem]) -> list[int]:
        return [item.payload["n"] for item in items]

    firing = enqueue("chat", "a1", "firing", 1, NOW)
    other = enqueue("ops-mail", "a2", "firing", 2, NOW + 1)
    resolved = enqueue("chat", "a1", "resolved", 3, NOW + 2)

    assert ids(store.due(NOW + 2)) == [1, 2, 3]
    assert ids(store.due(NOW + 0.5)) == [1]  # not yet due: 2 and 3
    assert ids(store.due(NOW + 2, limit=2)) == [1, 2]

    store.retry_later(firing.id, "connection refused", NOW + 100)
    # "resolved" waits behind the "firing" of the same alert on the same channel; other streams flow
    assert ids(store.due(NOW + 50)) == [2]
    assert store.pending("chat")[0].attempts == 1
    assert store.pending("chat")[0].last_error == "connection refused"
    assert store.pending("chat")[0].due == NOW + 100

    store.delivered(other.id)
    assert ids(store.due(NOW + 50)) == []
    assert ids(store.due(NOW + 100)) == [1, 3]
    store.delivered(firing.id)
    assert ids(store.due(NOW + 50)) == [3]
    store.delivered(resolved.id)
    assert store.outbox_depth() == 0 and store.pending() == []


def test_outbox_ids_are_never_reused(store: Store) -> None:
    store.enqueue("chat", "a1", "firing", {}, NOW)
    first = store.pending()[0]
    store.delivered(first.id)
    store.enqueue("chat", "a1", "firing", {}, NOW)
    assert store.pending()[0].id > first.id


# ---- silences and heartbeats ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "active"),
    [
        pytest.param(99.0, False, id="before-it-starts"),
        pytest.param(100.0, True, id="at-its-start"),
        pytest.param(150.0, True, id="in-the-middle"),
        pytest.param(200.0, False, id="at-its-end"),
    ],
)
def test_a_silence_is_active_from_its_start_until_its_end(now: float, active: bool) -> None:
    assert Silence("s", ["host=web1"], 100.0, 200.0, "", 0.0, "ann").active(now) is active


def test_silences_are_listed_expired_and_kept(store: Store) -> None:
    past = store.add_silence(["host=web1"], NOW - 200, NOW - 100, "done", "ann", NOW - 200)
    current = store.add_silence(["alertname=Disk", "host=~web.*"], NOW - 10, NOW + 3600, "disk swap", "bob", NOW - 10)
    future = store.add_silence(["host=db1"], NOW + 600, NOW + 1200, "tonight", "ann", NOW)

    assert len({past.id, current.id, future.id}) == 3
    assert all(len(s.id) == 8 and int(s.id, 16) >= 0 for s in (past, current, future))
    assert store.silences(NOW) == [current, future]
    assert store.silences(NOW, include_expired=True) == [past, current, future]
    assert store.silences() == [past, current, future]

    assert store.expire_silence(current.id, NOW) is True
    assert store.expire_silence("deadbeef", NOW) is False
    assert store.silences(NOW) == [future]
    assert not [s for s in store.silences() if s.active(NOW)]

    with pytest.raises(ValueError):
        store.add_silence(["host=web1"], NOW, NOW, "empty", "ann", NOW)


def test_heartbeat_pings(store: Store) -> None:
    assert store.last_ping("backup") is None
    store.add_ping("backup", "start", NOW)
    store.add_ping("backup", "success", NOW + 30)
    store.add_ping("rotate", "fail", NOW + 5)
    store.add_ping("backup", "start", NOW + 86400)

    assert store.last_ping("backup") == ("start", NOW + 86400)
    assert store.last_ping("backup", "success") == ("success", NOW + 30)
    assert store.last_ping("backup", "fail") is None
    assert store.ping_names() == ["backup", "rotate"]
    with pytest.raises(ValueError, match="success, start, fail"):
        store.add_ping("backup", "finished", NOW)


# ---- transactions, threads, processes ---------------------------------------------------------------


def test_a_transaction_commits_all_or_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.save_alert("a1", {}, {"phase": "firing"}, NOW)
            with store.transaction():  # nested: part of the outer one
                store.enqueue("chat", "a1", "firing", {}, NOW)
            raise RuntimeError("crash between the state change and the notification")
    assert store.load_alerts() == {} and store.outbox_depth() == 0

    with store.transaction():
        store.save_alert("a1", {}, {"phase": "firing"}, NOW)
        store.enqueue("chat", "a1", "firing", {}, NOW)
    assert list(store.load_alerts()) == ["a1"] and store.outbox_depth() == 1


def test_threads_share_one_store(store: Store) -> None:
    def write(host: str) -> None:
        for i in range(100):
            store.add_results([row(float(i), host=host)])

    threads = [threading.Thread(target=write, args=(f"web{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(store.results(0)) == 400


def test_two_processes_share_one_file(db_path: Path, store: Store) -> None:
    other, _ = Store.open(db_path, NOW)  # e.g. the daemon and `ce-agent ping` from cron
    with other:
        other.add_ping("backup", "success", NOW)
        store.enqueue("chat", "a1", "firing", {"n": 1}, NOW)
        assert store.last_ping("backup") == ("success", NOW)
        assert [item.payload for item in other.pending()] == [{"n": 1}]


# ---- dependencies -----------------------------------------------------------------------------------


def test_the_module_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(store_module.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    ours = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ce_agent")}
    assert ours <= {"ce_agent.errors"}, ours  # the shared error types, themselves standard library only
    assert imported - {"__future__", "ce_agent"} <= sys.stdlib_module_names, imported - sys.stdlib_module_names

    script = "import sys; before = set(sys.modules); import ce_agent.store; print(' '.join(set(sys.modules) - before))"
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    new = {name.split(".")[0] for name in loaded.stdout.split()}
    assert "ce_agent" in new
    assert new - {"ce_agent"} <= sys.stdlib_module_names, new - sys.stdlib_module_names


def test_samples_keep_each_series_newest_value_and_a_history_only_of_the_names_asked(store: Store) -> None:
    def sample(ts: float, name: str, value: float, **labels: str) -> SampleRow:
        return SampleRow(ts, "p", "web1", "System", name, labels, value, "%")

    store.add_samples([sample(NOW, "cpu", 10, core="0"), sample(NOW, "cpu", 20, core="1"), sample(NOW, "mem", 50)],
                      history={"mem"})
    store.add_samples([sample(NOW + 60, "cpu", 11, core="0"), sample(NOW + 60, "mem", 55)], history={"mem"})
    assert [(s.name, s.labels, s.value, s.ts) for s in store.latest_samples()] == [
        ("cpu", {"core": "0"}, 11, NOW + 60), ("cpu", {"core": "1"}, 20, NOW), ("mem", {}, 55, NOW + 60)]
    assert [(s.name, s.value) for s in store.samples(NOW)] == [("mem", 50), ("mem", 55)]
    assert store.samples(NOW, name="cpu") == []
    assert store.prune(NOW + 31 * 86400) >= 5  # everything older than the retention goes, newest values too
    assert store.latest_samples() == [] and store.samples(0) == []


def test_deliveries_and_baselines_are_kept(store: Store) -> None:
    store.add_delivery("ops", "group-1", "firing", NOW, True)
    store.add_delivery("chat", "group-1", "firing", NOW + 1, False)
    assert store.deliveries(NOW + 1) == [{"channel": "chat", "key": "group-1", "kind": "firing", "at": NOW + 1,
                                          "sent": False}]
    assert store.baseline("weekly") is None
    store.save_baseline("weekly", {"checks": [1, 2]}, NOW)
    store.save_baseline("weekly", {"checks": [3]}, NOW + 5)
    assert store.baseline("weekly") == (NOW + 5, {"checks": [3]})
