"""One SQLite database (WAL) in the state directory: results history, alert states and history, the
notification outbox, what each channel was told, silences and heartbeat pings."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ce_agent.errors import FaultError

DB_NAME = "state.db"
PING_KINDS = ("success", "start", "fail")
_DROPPED = "outbox_dropped"
_CORRUPTION = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
# Only the connection's own files move with a corrupt database: a stale -wal or hot -journal left beside
# a fresh state.db would be replayed into it.
_COMPANIONS = ("-wal", "-shm", "-journal")
_PROBE_PREFIX = ".write-test-"  # then PID-RANDOM.tmp: the directory is proved writable with one

# The schema, one step per version (PRAGMA user_version = how many steps were applied). Never edit a
# step that has shipped: append a new one. It starts in two steps so that the upgrade path is exercised
# from day one (tests build a version-1 database from MIGRATIONS[0] and open it).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE results (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        play TEXT NOT NULL,
        host TEXT NOT NULL,
        check_name TEXT NOT NULL,
        plugin TEXT NOT NULL,
        status INTEGER NOT NULL,
        summary TEXT NOT NULL,
        duration_s REAL NOT NULL,
        metrics TEXT NOT NULL
    );
    CREATE INDEX results_ts ON results (ts);
    CREATE INDEX results_check ON results (check_name, host, ts);

    CREATE TABLE alerts (
        alert_key TEXT PRIMARY KEY,
        labels TEXT NOT NULL,
        state TEXT NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE alert_history (
        id INTEGER PRIMARY KEY,
        alert_key TEXT NOT NULL,
        labels TEXT NOT NULL,
        kind TEXT NOT NULL,
        status INTEGER NOT NULL,
        summary TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX alert_history_at ON alert_history (at);

    -- AUTOINCREMENT: an id is never reused, so a late delivered(id) cannot delete a newer item.
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL,
        alert_key TEXT NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        created REAL NOT NULL,
        due REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX outbox_due ON outbox (due);
    CREATE INDEX outbox_stream ON outbox (channel, alert_key, id);

    CREATE TABLE silences (
        id TEXT PRIMARY KEY,
        matchers TEXT NOT NULL,
        starts REAL NOT NULL,
        ends REAL NOT NULL,
        comment TEXT NOT NULL,
        created REAL NOT NULL,
        created_by TEXT NOT NULL
    );
    """,
    """
    CREATE TABLE notification_log (
        alert_key TEXT NOT NULL,
        channel TEXT NOT NULL,
        firing INTEGER NOT NULL,
        status INTEGER NOT NULL,
        last_sent REAL NOT NULL,
        PRIMARY KEY (alert_key, channel)
    ) WITHOUT ROWID;

    CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE pings (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX pings_name ON pings (name, kind, at);
    """,
    """
    -- the newest value of every collector series (what `ce-agent metrics` shows), one row per series
    CREATE TABLE latest_samples (
        play TEXT NOT NULL,
        host TEXT NOT NULL,
        collector TEXT NOT NULL,
        name TEXT NOT NULL,
        labels TEXT NOT NULL,
        value REAL,
        unit TEXT NOT NULL,
        ts REAL NOT NULL,
        PRIMARY KEY (play, host, collector, name, labels)
    ) WITHOUT ROWID;
    -- the history of the collector samples that an SLO or a baseline needs (not every sample: a
    -- system collector alone gives ~50 a minute)
    CREATE TABLE samples (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        play TEXT NOT NULL,
        host TEXT NOT NULL,
        name TEXT NOT NULL,
        labels TEXT NOT NULL,
        value REAL
    );
    CREATE INDEX samples_name ON samples (name, ts);
    CREATE INDEX samples_ts ON samples (ts);
    -- every delivery round of a notification: for `ce-agent stats` (the outbox forgets what it sent)
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,
        alert_key TEXT NOT NULL,
        kind TEXT NOT NULL,
        at REAL NOT NULL,
        sent INTEGER NOT NULL
    );
    CREATE INDEX deliveries_at ON deliveries (at);
    CREATE TABLE baselines (
        name TEXT PRIMARY KEY,
        created REAL NOT NULL,
        data TEXT NOT NULL
    ) WITHOUT ROWID;
    -- each SLO's status as last evaluated by `run` or the daemon (what `slo status` shows)
    CREATE TABLE slo_status (
        play TEXT NOT NULL,
        host TEXT NOT NULL,
        name TEXT NOT NULL,
        data TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (play, host, name)
    ) WITHOUT ROWID;
    """,
)


class StoreError(FaultError):
    """The state cannot be opened or written (read-only, ENOSPC...): message says why."""


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One check result as kept in the history."""

    ts: float
    play: str
    host: str
    check: str
    plugin: str
    status: int
    summary: str
    duration_s: float
    metrics: list[dict]  # Metric.as_dict() items


@dataclass(frozen=True, slots=True)
class SampleRow:
    """One collector sample as kept: the newest of its series, or in the history of an SLO's metric."""

    ts: float
    play: str
    host: str
    collector: str
    name: str
    labels: dict
    value: float | None
    unit: str = ""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A notification waiting for its channel to accept it."""

    id: int
    channel: str
    key: str
    kind: str
    payload: dict
    created: float
    due: float
    attempts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Silence:
    """A one-off silence: alerts whose labels match every matcher are not notified between starts and ends."""

    id: str
    matchers: list[str]
    starts: float
    ends: float
    comment: str
    created: float
    created_by: str

    def active(self, now: float) -> bool:
        return self.starts <= now < self.ends


def default_state_dir(environ: Mapping[str, str], euid: int, home: Path) -> Path:
    """CE_AGENT_STATE_DIR, else /var/lib/ce-agent for root, else $XDG_STATE_HOME/ce-agent, else ~/.local/state/ce-agent."""
    explicit = environ.get("CE_AGENT_STATE_DIR", "")
    if explicit:
        return Path(explicit)
    if euid == 0:
        return Path("/var/lib/ce-agent")
    xdg = environ.get("XDG_STATE_HOME", "")
    # The XDG spec: an empty or relative value is invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "ce-agent"
    return home / ".local" / "state" / "ce-agent"


class Store:
    """The agent's state in one SQLite file, safe to share between threads and processes.

    Secrets never reach this file: channels are stored by their inventory NAME, never their URL, and
    callers must pass payloads and delivery errors already scrubbed of credentials.

    Every write method commits by itself, unless called inside `transaction()`, which makes a group of
    writes atomic. Times are arguments (seconds since the epoch): the store never reads the clock.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, schema_version: int) -> None:
        # Use Store.open(): it checks, repairs and migrates the file before handing out a Store.
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._schema_version = schema_version
        self._lock = threading.RLock()
        self._depth = 0
        self._memory = False

    # ---- opening -------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, now: float, repair: bool = True) -> tuple[Store, list[str]]:
        """Open or create; returns notices to print (one line each). A file that is not a valid SQLite
        database (or fails `PRAGMA quick_check`) is renamed to `state.db.corrupt-YYYYmmddTHHMMSS` (with its -wal/-shm
        beside it renamed likewise) and a fresh database is started; the notice says so in one line.
        Raises StoreError for a directory that cannot be written (say which and why), and, with
        `repair` off (commands that only read), for a damaged file, which is then left as it is.

        `path` is the database file (STATE_DIR/state.db); an existing directory means DIR/state.db."""
        path = Path(path)
        if path.is_dir():
            path = path / DB_NAME
        _prepare_directory(path.parent)
        notices: list[str] = []
        conn: sqlite3.Connection | None = None
        try:
            conn = _connect(path)
            problem = _integrity_problem(conn)
            if problem is not None and not repair:
                # a command that only reads must not replace the evidence with an empty, healthy state
                raise StoreError(f"{path} is damaged ({problem}); left as it is: the next `ce-agent run` or the "
                                 "agent moves it aside and starts a fresh one")
            if problem is not None:
                try:
                    # Renamed while still open: closing first would let SQLite delete the -wal/-shm it found.
                    moved = _move_aside(path, now)
                finally:
                    conn.close()
                    conn = None
                notices.append(f"{path} was damaged ({problem}): moved it to {moved.name} and started a fresh state database")
                conn = _connect(path)
            _refuse_newer(conn, path)  # before anything is written to a file this version cannot read
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                notices.append(f"{path}: this filesystem does not support WAL; using journal_mode={mode}")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = _migrate(conn, path)
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise StoreError(_describe(path, exc)) from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return cls(conn, path, version), notices

    @property
    def path(self) -> Path:
        return self._path

    @property
    def schema_version(self) -> int:
        return self._schema_version

    @property
    def in_memory(self) -> bool:
        """True for a copy made by `memory_copy()`: nothing written to it outlives the process."""
        return self._memory

    # ---- carrying on when the file cannot be written -------------------------------------------------

    def memory_copy(self) -> Store:
        """This state copied into memory, to carry on alerting when the file can no longer be written
        (disk full, read-only, locked): reading still works in those cases, so the copy holds every
        alert state and queued notification. When even reading fails, the copy starts empty."""
        memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        try:
            with self._lock:
                self._db().backup(memory)
        except (sqlite3.Error, StoreError):
            memory.close()
            memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        try:
            version = _migrate(memory, self._path)
        except BaseException:
            memory.close()
            raise
        copy = Store(memory, self._path, version)
        copy._memory = True
        return copy

    def writable(self, wait: float = 0.2) -> bool:
        """Whether a write goes through now (a probe that changes nothing): the write lock within
        `wait` seconds, and a page written and rolled back is not enough on a full disk, so a row is
        written and committed, then deleted."""
        with self._lock:
            try:
                db = self._db()
                db.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
                try:
                    with self.transaction():
                        db.execute("INSERT INTO counters (name, value) VALUES ('write_probe', 0)"
                                   " ON CONFLICT (name) DO UPDATE SET value = value + 1")
                    with self.transaction():
                        db.execute("DELETE FROM counters WHERE name = 'write_probe'")
                finally:
                    db.execute("PRAGMA busy_timeout=5000")
            except (sqlite3.Error, StoreError):
                return False
        return True

    def replace_with(self, source: Store) -> None:
        """Overwrite this database with `source` (the memory copy the agent carried on with), in one
        step: SQLite's backup either completes or leaves this file as it was. StoreError when it fails."""
        with self._lock, source._lock, self._errors():
            source._db().backup(self._db())

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transactions --------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on an exception; a no-op when already inside one."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            conn = self._db()
            with self._errors():
                # IMMEDIATE takes the write lock now (waiting busy_timeout for another process), so a
                # transaction never fails half-way because a reader had to become a writer.
                conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
                with self._errors():
                    if not conn.in_transaction:
                        # SQLite already rolled back after an error that the caller caught and ignored.
                        raise sqlite3.OperationalError("the transaction was rolled back after an earlier error")
                    conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the original error matters more than a failed cleanup
                raise
            finally:
                self._depth = 0

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"state database {self._path} is closed")
        return self._conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.NotSupportedError):
            raise  # a bug in this module, not a state the user can fix
        except sqlite3.DatabaseError as exc:
            raise StoreError(_describe(self._path, exc)) from exc

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors():
            yield self._db()

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        with self.transaction(), self._errors():
            yield self._db()

    # ---- results -------------------------------------------------------------------------------------

    def add_results(self, rows: Sequence[ResultRow]) -> None:
        values = [
            (r.ts, r.play, r.host, r.check, r.plugin, int(r.status), r.summary, r.duration_s, json.dumps(r.metrics))
            for r in rows
        ]
        with self._writing() as db:
            db.executemany(
                "INSERT INTO results (ts, play, host, check_name, plugin, status, summary, duration_s, metrics)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )

    def results(self, since: float, *, check: str | None = None, host: str | None = None) -> list[ResultRow]:
        """Results at or after `since`, oldest first, optionally for one check name and/or one host."""
        sql = "SELECT ts, play, host, check_name, plugin, status, summary, duration_s, metrics FROM results WHERE ts >= ?"
        args: list[Any] = [since]
        if check is not None:
            sql += " AND check_name = ?"
            args.append(check)
        if host is not None:
            sql += " AND host = ?"
            args.append(host)
        with self._reading() as db:
            rows = db.execute(sql + " ORDER BY ts, id", args).fetchall()
        return [ResultRow(*row[:8], metrics=json.loads(row[8])) for row in rows]

    def add_samples(self, rows: Sequence[SampleRow], history: frozenset[str] | set[str] = frozenset()) -> None:
        """Keep each series' newest value; the samples named in `history` are also kept over time."""
        latest = [(r.play, r.host, r.collector, r.name, json.dumps(r.labels, sort_keys=True), r.value, r.unit, r.ts)
                  for r in rows]
        kept = [(r.ts, r.play, r.host, r.name, json.dumps(r.labels, sort_keys=True), r.value)
                for r in rows if r.name in history]
        with self._writing() as db:
            db.executemany(
                "INSERT INTO latest_samples (play, host, collector, name, labels, value, unit, ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (play, host, collector, name, labels)"
                " DO UPDATE SET value = excluded.value, unit = excluded.unit, ts = excluded.ts", latest)
            db.executemany("INSERT INTO samples (ts, play, host, name, labels, value) VALUES (?, ?, ?, ?, ?, ?)", kept)

    def latest_samples(self) -> list[SampleRow]:
        """The newest value of every collector series, by play, host, collector and name."""
        with self._reading() as db:
            rows = db.execute("SELECT play, host, collector, name, labels, value, unit, ts FROM latest_samples"
                              " ORDER BY play, host, collector, name, labels").fetchall()
        return [SampleRow(ts, play, host, collector, name, json.loads(labels), value, unit)
                for play, host, collector, name, labels, value, unit, ts in rows]

    def samples(self, since: float, name: str | None = None) -> list[SampleRow]:
        """Kept samples at or after `since` (of one name), oldest first; `collector` and `unit` are empty."""
        sql = "SELECT ts, play, host, name, labels, value FROM samples WHERE ts >= ?"
        args: tuple[Any, ...] = (since,)
        if name is not None:
            sql += " AND name = ?"
            args += (name,)
        with self._reading() as db:
            rows = db.execute(sql + " ORDER BY ts, id", args).fetchall()
        return [SampleRow(ts, play, host, "", n, json.loads(labels), value) for ts, play, host, n, labels, value in rows]

    def latest_results(self) -> list[ResultRow]:
        """The newest result of every check (play, host and check name)."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT ts, play, host, check_name, plugin, status, summary, duration_s, metrics FROM results"
                " WHERE id IN (SELECT MAX(id) FROM results GROUP BY play, host, check_name)"
                " ORDER BY play, host, check_name").fetchall()
        return [ResultRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8])) for r in rows]

    def add_delivery(self, channel: str, key: str, kind: str, at: float, sent: bool) -> None:
        with self._writing() as db:
            db.execute("INSERT INTO deliveries (channel, alert_key, kind, at, sent) VALUES (?, ?, ?, ?, ?)",
                       (channel, key, kind, at, int(sent)))

    def deliveries(self, since: float) -> list[dict]:
        """Delivery rounds at or after `since`, oldest first: {"channel","key","kind","at","sent"}."""
        with self._reading() as db:
            rows = db.execute("SELECT channel, alert_key, kind, at, sent FROM deliveries WHERE at >= ? ORDER BY at, id",
                              (since,)).fetchall()
        return [{"channel": c, "key": k, "kind": kind, "at": at, "sent": bool(sent)} for c, k, kind, at, sent in rows]

    def save_slo_statuses(self, rows: Sequence[tuple[str, str, str, dict]], now: float) -> None:
        """(play, host, name, status as JSON data) of each SLO just evaluated; those of SLOs no longer
        evaluated on a (play, host) given here are removed."""
        places = {(play, host) for play, host, _name, _data in rows}
        with self._writing() as db:
            for play, host in places:
                db.execute("DELETE FROM slo_status WHERE play = ? AND host = ?", (play, host))
            db.executemany("INSERT INTO slo_status (play, host, name, data, at) VALUES (?, ?, ?, ?, ?)",
                           [(play, host, name, json.dumps(data), now) for play, host, name, data in rows])

    def slo_statuses(self) -> list[tuple[str, str, str, dict, float]]:
        """(play, host, name, data, evaluated at) of every SLO, by play, host and name."""
        with self._reading() as db:
            rows = db.execute("SELECT play, host, name, data, at FROM slo_status ORDER BY play, host, name").fetchall()
        return [(play, host, name, json.loads(data), at) for play, host, name, data, at in rows]

    def save_baseline(self, name: str, data: dict, now: float) -> None:
        body = json.dumps(data)
        with self._writing() as db:
            db.execute("INSERT INTO baselines (name, created, data) VALUES (?, ?, ?) ON CONFLICT (name)"
                       " DO UPDATE SET created = excluded.created, data = excluded.data", (name, now, body))

    def baseline(self, name: str) -> tuple[float, dict] | None:
        """(created, data) of a saved baseline, or None."""
        with self._reading() as db:
            row = db.execute("SELECT created, data FROM baselines WHERE name = ?", (name,)).fetchone()
        return None if row is None else (float(row[0]), json.loads(row[1]))

    def prune(self, now: float, max_age_s: float = 30 * 86400, max_rows_per_check: int = 10_000) -> int:
        """Bound the history; returns how many rows were removed (all tables together).

        Results older than max_age_s go, and each check (one play, host and check name) keeps at most its
        newest max_rows_per_check results. Alert history, expired silences and the notification log of
        alerts that no longer exist go after max_age_s too. Heartbeat pings older than max_age_s go, but the
        newest of each name and kind stays (a monthly job must not look as if it had never pinged).
        The outbox is not pruned: it is bounded by enqueue(max_items)."""
        if max_age_s < 0 or max_rows_per_check < 0:
            raise ValueError("prune: max_age_s and max_rows_per_check must not be negative")
        cutoff = now - max_age_s
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("DELETE FROM results WHERE ts < ?", (cutoff,)),
            (
                "DELETE FROM results WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER ("
                " PARTITION BY play, host, check_name ORDER BY ts DESC, id DESC) AS n FROM results) WHERE n > ?)",
                (max_rows_per_check,),
            ),
            ("DELETE FROM alert_history WHERE at < ?", (cutoff,)),
            ("DELETE FROM samples WHERE ts < ?", (cutoff,)),
            ("DELETE FROM deliveries WHERE at < ?", (cutoff,)),
            ("DELETE FROM latest_samples WHERE ts < ?", (cutoff,)),
            ("DELETE FROM silences WHERE ends < ?", (cutoff,)),
            (
                "DELETE FROM notification_log WHERE last_sent < ? AND alert_key NOT IN (SELECT alert_key FROM alerts)",
                (cutoff,),
            ),
            (
                "DELETE FROM pings WHERE at < ? AND id NOT IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER ("
                " PARTITION BY name, kind ORDER BY at DESC, id DESC) AS n FROM pings) WHERE n = 1)",
                (cutoff,),
            ),
        ]
        removed = 0
        with self._writing() as db:
            for sql, args in statements:
                removed += db.execute(sql, args).rowcount
        return removed

    # ---- alerts --------------------------------------------------------------------------------------

    def load_alerts(self) -> dict[str, tuple[dict, dict]]:
        """Every saved alert: key -> (labels, state)."""
        with self._reading() as db:
            rows = db.execute("SELECT alert_key, labels, state FROM alerts ORDER BY alert_key").fetchall()
        return {key: (json.loads(labels), json.loads(state)) for key, labels, state in rows}

    def save_alert(self, key: str, labels: dict, state: dict, now: float) -> None:
        values = (key, json.dumps(labels), json.dumps(state), now)
        with self._writing() as db:
            db.execute(
                "INSERT INTO alerts (alert_key, labels, state, updated) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (alert_key) DO UPDATE SET labels = excluded.labels, state = excluded.state,"
                " updated = excluded.updated",
                values,
            )

    def delete_alert(self, key: str) -> None:
        with self._writing() as db:
            db.execute("DELETE FROM alerts WHERE alert_key = ?", (key,))

    def add_history(self, key: str, labels: dict, kind: str, status: int, summary: str, at: float) -> None:
        values = (key, json.dumps(labels), kind, int(status), summary, at)
        with self._writing() as db:
            db.execute(
                "INSERT INTO alert_history (alert_key, labels, kind, status, summary, at) VALUES (?, ?, ?, ?, ?, ?)",
                values,
            )

    def history(self, since: float) -> list[dict]:
        """Alert events at or after `since`, oldest first: {"key","labels","kind","status","summary","at"}."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT alert_key, labels, kind, status, summary, at FROM alert_history WHERE at >= ? ORDER BY at, id",
                (since,),
            ).fetchall()
        return [
            {"key": key, "labels": json.loads(labels), "kind": kind, "status": status, "summary": summary, "at": at}
            for key, labels, kind, status, summary, at in rows
        ]

    # ---- notification log ----------------------------------------------------------------------------

    def notified(self, key: str, channel: str) -> dict | None:
        """What `channel` was last told about alert `key`: {"firing", "status", "last_sent"}, or None."""
        with self._reading() as db:
            row = db.execute(
                "SELECT firing, status, last_sent FROM notification_log WHERE alert_key = ? AND channel = ?",
                (key, channel),
            ).fetchone()
        if row is None:
            return None
        return {"firing": bool(row[0]), "status": row[1], "last_sent": row[2]}

    def channels_told_firing(self, key: str) -> list[str]:
        """The channels last told that alert `key` fires (they must hear it resolve)."""
        with self._reading() as db:
            rows = db.execute("SELECT channel FROM notification_log WHERE alert_key = ? AND firing = 1 ORDER BY channel",
                              (key,)).fetchall()
        return [str(row[0]) for row in rows]

    def set_notified(self, key: str, channel: str, firing: bool, status: int, at: float) -> None:
        with self._writing() as db:
            db.execute(
                "INSERT INTO notification_log (alert_key, channel, firing, status, last_sent) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (alert_key, channel) DO UPDATE SET firing = excluded.firing,"
                " status = excluded.status, last_sent = excluded.last_sent",
                (key, channel, int(bool(firing)), int(status), at),
            )

    # ---- outbox --------------------------------------------------------------------------------------

    def enqueue(self, channel: str, key: str, kind: str, payload: dict, now: float, max_items: int = 10_000,
                due: float | None = None) -> int:
        """Add an item (due `due`, default now); when the outbox would exceed max_items, drop the OLDEST items first,
        count each drop in a persistent counter; return how many were dropped by this call."""
        if max_items < 1:
            raise ValueError("enqueue: max_items must be at least 1")
        body = json.dumps(payload)  # before the transaction: a payload that is not JSON changes nothing
        with self._writing() as db:
            db.execute(
                "INSERT INTO outbox (channel, alert_key, kind, payload, created, due) VALUES (?, ?, ?, ?, ?, ?)",
                (channel, key, kind, body, now, now if due is None else due),
            )
            excess = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] - max_items
            if excess <= 0:
                return 0
            # what a failing channel keeps waiting goes first: a healthy channel's news is not dropped
            # for an outage elsewhere
            victims = db.execute(
                "SELECT id, channel, payload FROM outbox ORDER BY (attempts = 0), id LIMIT ?", (excess,)
            ).fetchall()
            db.executemany("DELETE FROM outbox WHERE id = ?", [(v[0],) for v in victims])
            for _id, victim_channel, victim_payload in victims:
                _forget_told(db, victim_channel, victim_payload, now)
            db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                (_DROPPED, excess),
            )
            return excess

    def queued(self, channel: str, key: str) -> bool:
        """Whether the outbox holds any message for this channel and key (group)."""
        with self._reading() as db:
            row = db.execute("SELECT 1 FROM outbox WHERE channel = ? AND alert_key = ? LIMIT 1", (channel, key)).fetchone()
        return row is not None

    def waiting(self, channel: str, key: str, now: float) -> OutboxItem | None:
        """The newest item for this channel and key that is not due yet and was never tried: a group
        message still in its group_wait, which a later evaluation may add its alerts to."""
        with self._reading() as db:
            row = db.execute(
                "SELECT id, channel, alert_key, kind, payload, created, due, attempts, last_error FROM outbox"
                " WHERE channel = ? AND alert_key = ? AND attempts = 0 AND due > ? ORDER BY id DESC LIMIT 1",
                (channel, key, now),
            ).fetchone()
        return None if row is None else _outbox_item(row)

    def replace_payload(self, item_id: int, kind: str, payload: dict) -> None:
        """Rewrite a waiting item's message (its place and due time stay)."""
        body = json.dumps(payload)
        with self._writing() as db:
            db.execute("UPDATE outbox SET kind = ?, payload = ? WHERE id = ?", (kind, body, item_id))

    def due(self, now: float, limit: int = 100) -> list[OutboxItem]:
        """Items with due <= now, oldest first. An item waits while an older item for the same channel and
        alert key is still backing off, so a channel never hears "resolved" before the "firing" it follows."""
        with self._reading() as db:
            rows = db.execute(
                "SELECT o.id, o.channel, o.alert_key, o.kind, o.payload, o.created, o.due, o.attempts, o.last_error"
                " FROM outbox AS o WHERE o.due <= ? AND NOT EXISTS (SELECT 1 FROM outbox AS p"
                "  WHERE p.channel = o.channel AND p.alert_key = o.alert_key AND p.id < o.id AND p.due > ?)"
                " ORDER BY o.id LIMIT ?",
                (now, now, limit),
            ).fetchall()
        return [_outbox_item(row) for row in rows]

    def delivered(self, item_id: int) -> None:
        with self._writing() as db:
            db.execute("DELETE FROM outbox WHERE id = ?", (item_id,))

    def dropped(self, item: OutboxItem, now: float) -> None:
        """Remove an item that will never be delivered (refused, channel gone), forgetting what it told."""
        with self._writing() as db:
            db.execute("DELETE FROM outbox WHERE id = ?", (item.id,))
            _forget_told(db, item.channel, json.dumps(item.payload), now)

    def retry_later(self, item_id: int, error: str, due: float) -> None:
        """Count a failed attempt, keep its (already scrubbed) error and try again at `due`."""
        with self._writing() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, due = ? WHERE id = ?",
                (error, due, item_id),
            )

    def next_due(self) -> float | None:
        """When the next outbox item falls due (the delivery loop sleeps until then), or None when empty."""
        with self._reading() as db:
            row = db.execute("SELECT MIN(due) FROM outbox").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def outbox_depth(self) -> int:
        with self._reading() as db:
            return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def dropped_total(self) -> int:
        """How many items enqueue() has dropped since the database was created."""
        with self._reading() as db:
            row = db.execute("SELECT value FROM counters WHERE name = ?", (_DROPPED,)).fetchone()
        return int(row[0]) if row else 0

    def pending(self, channel: str | None = None) -> list[OutboxItem]:
        """Every item still in the outbox (due or not), oldest first."""
        sql = "SELECT id, channel, alert_key, kind, payload, created, due, attempts, last_error FROM outbox"
        args: tuple[Any, ...] = ()
        if channel is not None:
            sql += " WHERE channel = ?"
            args = (channel,)
        with self._reading() as db:
            rows = db.execute(sql + " ORDER BY id", args).fetchall()
        return [_outbox_item(row) for row in rows]

    # ---- silences ------------------------------------------------------------------------------------

    def add_silence(
        self, matchers: list[str], starts: float, ends: float, comment: str, created_by: str, now: float
    ) -> Silence:
        if ends <= starts:
            raise ValueError("a silence must end after it starts")
        with self._writing() as db:
            while True:
                silence_id = secrets.token_hex(4)
                if db.execute("SELECT 1 FROM silences WHERE id = ?", (silence_id,)).fetchone() is None:
                    break
            db.execute(
                "INSERT INTO silences (id, matchers, starts, ends, comment, created, created_by)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (silence_id, json.dumps(list(matchers)), starts, ends, comment, now, created_by),
            )
        return Silence(silence_id, list(matchers), starts, ends, comment, now, created_by)

    def silences(self, now: float | None = None, include_expired: bool = False) -> list[Silence]:
        """Silences oldest first: those not yet expired at `now` (active or pending), or every one when
        include_expired is set or no `now` is given (without a clock nothing can be judged expired)."""
        sql = "SELECT id, matchers, starts, ends, comment, created, created_by FROM silences"
        args: tuple[Any, ...] = ()
        if now is not None and not include_expired:
            sql += " WHERE ends > ?"
            args = (now,)
        with self._reading() as db:
            rows = db.execute(sql + " ORDER BY created, starts, id", args).fetchall()
        return [Silence(sid, json.loads(m), s, e, c, cr, by) for sid, m, s, e, c, cr, by in rows]

    def expire_silence(self, silence_id: str, now: float) -> bool:
        """End a silence now (an already expired one keeps its end); False when no such silence exists."""
        with self._writing() as db:
            cursor = db.execute(
                "UPDATE silences SET ends = MIN(ends, ?), starts = MIN(starts, ?) WHERE id = ?",
                (now, now, silence_id),
            )
            return cursor.rowcount > 0

    # ---- heartbeats ----------------------------------------------------------------------------------

    def add_ping(self, name: str, kind: str, at: float) -> None:
        if kind not in PING_KINDS:
            raise ValueError(f"ping kind must be one of {', '.join(PING_KINDS)}, not {kind!r}")
        with self._writing() as db:
            db.execute("INSERT INTO pings (name, kind, at) VALUES (?, ?, ?)", (name, kind, at))

    def last_ping(self, name: str, kind: str | None = None) -> tuple[str, float] | None:
        """The newest ping of `name` (of one kind, if given) as (kind, at), or None."""
        sql = "SELECT kind, at FROM pings WHERE name = ?"
        args: tuple[Any, ...] = (name,)
        if kind is not None:
            sql += " AND kind = ?"
            args = (name, kind)
        with self._reading() as db:
            row = db.execute(sql + " ORDER BY at DESC, id DESC LIMIT 1", args).fetchone()
        return (row[0], row[1]) if row else None

    def ping_names(self) -> list[str]:
        with self._reading() as db:
            return [name for (name,) in db.execute("SELECT DISTINCT name FROM pings ORDER BY name")]


def _forget_told(db: sqlite3.Connection, channel: str, payload: str, now: float) -> None:
    """A dropped notification was never heard: the channel is no longer "told firing" for its alerts
    (so it never gets a resolved for them), but the try is remembered (no resend on every run)."""
    try:
        alerts = json.loads(payload).get("alerts", [])
    except (ValueError, AttributeError):
        return
    for alert in alerts:
        if isinstance(alert, dict) and alert.get("kind") in ("firing", "reminder") and "key" in alert:
            db.execute(
                "INSERT INTO notification_log (alert_key, channel, firing, status, last_sent) VALUES (?, ?, 0, ?, ?)"
                " ON CONFLICT (alert_key, channel) DO UPDATE SET firing = 0",
                (alert["key"], channel, int(alert.get("status", 0)), now),
            )


def _outbox_item(row: tuple[Any, ...]) -> OutboxItem:
    item_id, channel, key, kind, payload, created, due, attempts, last_error = row
    return OutboxItem(item_id, channel, key, kind, json.loads(payload), created, due, attempts, last_error)


def _describe(path: Path, exc: BaseException) -> str:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return f"state database {path}: {reason}"


def _prepare_directory(directory: Path) -> None:
    """Create the state directory (0700) and prove it writable: SQLite needs to create -wal/-shm there."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create state directory {directory}: {exc.strerror or exc}") from exc
    _remove_stale_probes(directory)
    try:
        # the pid in the name: a probe left by a killed process is found and removed at the next start
        fd, probe = tempfile.mkstemp(prefix=f"{_PROBE_PREFIX}{os.getpid()}-", suffix=".tmp", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise StoreError(
            f"state directory {directory} is not writable: {exc.strerror or exc}"
            " (choose another with --state-dir or CE_AGENT_STATE_DIR)"
        ) from exc


def _remove_stale_probes(directory: Path) -> None:
    """Remove write probes whose process is gone (killed between creating and removing one)."""
    try:
        names = [entry.name for entry in os.scandir(directory) if entry.name.startswith(_PROBE_PREFIX)]
    except OSError:
        return
    for name in names:
        pid = name[len(_PROBE_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                os.unlink(directory / name)
            except OSError:
                pass  # another start removed it, or the directory is read-only: the probe says so next


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _connect(path: Path) -> sqlite3.Connection:
    # Transactions are managed here (isolation_level=None); the lock in Store makes sharing across threads safe.
    conn = sqlite3.connect(str(path), timeout=5, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        conn.close()
        raise
    return conn


def _integrity_problem(conn: sqlite3.Connection) -> str | None:
    """Why the file is not a usable database, or None when it is (other errors propagate)."""
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", -1) & 0xFF in _CORRUPTION:
            return " ".join(str(exc).split())
        raise
    if rows == [("ok",)]:
        return None
    return "quick_check: " + "; ".join(" ".join(str(r[0]).split()) for r in rows[:3])


def _move_aside(path: Path, now: float) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while any(Path(f"{target}{suffix}").exists() for suffix in ("", *_COMPANIONS)):
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    try:
        os.replace(path, target)
        for suffix in _COMPANIONS:
            companion = Path(f"{path}{suffix}")
            if companion.exists():
                os.replace(companion, f"{target}{suffix}")
    except OSError as exc:
        raise StoreError(f"state database {path} is damaged and cannot be moved aside: {exc.strerror or exc}") from exc
    return target


def _statements(script: str) -> Iterator[str]:
    """The statements of a migration script, one by one (executescript would COMMIT our transaction)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer
            buffer = ""
    if buffer.strip() and not all(part.strip().startswith("--") for part in buffer.strip().splitlines()):
        raise ValueError(f"incomplete SQL statement in a migration: {buffer.strip()[:60]}")


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Apply the missing MIGRATIONS steps, each in its own transaction with its user_version."""
    for step in range(1, len(MIGRATIONS) + 1):
        if _user_version(conn) >= step:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while this one waited for the write lock.
            if _user_version(conn) < step:
                for statement in _statements(MIGRATIONS[step - 1]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {step}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    _refuse_newer(conn, path)
    return _user_version(conn)


def _refuse_newer(conn: sqlite3.Connection, path: Path) -> None:
    version, latest = _user_version(conn), len(MIGRATIONS)
    if version > latest:
        raise StoreError(
            f"{path} was written by a newer ce-agent (schema {version}); this ce-agent knows schema {latest}:"
            " upgrade ce-agent or use another --state-dir"
        )
