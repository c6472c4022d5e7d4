"""The results store: one schema in SQLite (a file) or PostgreSQL (a URL), appended to in single transactions."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from fluxperf.history.record import (
    UNVERSIONED,
    HistoryError,
    Point,
    SessionRecord,
    current_entry,
    samples_digest,
    utc_now,
)

# 1: sessions, one row per variant in a session, and acceptances of deliberate slowdowns.
# 2: sessions.result_schema, the fluxperf.result schema its variants' entries are in (a later one reads older
#    entries into its own). A history of schema 1 holds results.json entries from before that schema (UNVERSIONED):
#    opened for writing it gains the column, those sessions marked UNVERSIONED; no row is rewritten.
SCHEMA_VERSION = 2
# Two runners appending at once wait for each other's transaction instead of failing at once.
BUSY_TIMEOUT_S = 60
# A fixed key for PostgreSQL's advisory lock, so two first sessions don't both create the tables.
PG_LOCK_KEY = 0x666C7578

# Plain types both databases share (TEXT, not JSONB): the schema is the same text for both.
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS fluxperf_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, recorded_utc TEXT NOT NULL, kind TEXT NOT NULL, "
    "gpu_slug TEXT NOT NULL, scenario TEXT NOT NULL, commit_sha TEXT, label TEXT, source TEXT, "
    "added_utc TEXT NOT NULL, session_json TEXT NOT NULL, result_schema INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS results (session_id TEXT NOT NULL REFERENCES sessions (id), variant TEXT NOT NULL, "
    "gpu_slug TEXT NOT NULL, scenario TEXT NOT NULL, recorded_utc TEXT NOT NULL, samples_sha256 TEXT NOT NULL, "
    "entry_json TEXT NOT NULL, PRIMARY KEY (session_id, variant))",
    "CREATE UNIQUE INDEX IF NOT EXISTS results_samples ON results (gpu_slug, scenario, variant, samples_sha256)",
    "CREATE INDEX IF NOT EXISTS results_series ON results (gpu_slug, scenario, variant, recorded_utc)",
    "CREATE TABLE IF NOT EXISTS acceptances (id TEXT PRIMARY KEY, gpu_slug TEXT NOT NULL, scenario TEXT NOT NULL, "
    "variant TEXT NOT NULL, accepted_utc TEXT NOT NULL, note TEXT NOT NULL)",
)
TABLES = ("fluxperf_meta", "sessions", "results", "acceptances")
MIGRATIONS = {
    1: (f"ALTER TABLE sessions ADD COLUMN result_schema INTEGER NOT NULL DEFAULT {UNVERSIONED}",),
}


def is_url(where) -> bool:
    """A URL (scheme://...), whichever scheme: open_store refuses all but PostgreSQL's rather than take one for a
    file name."""
    return isinstance(where, str) and "://" in where


def _postgres(where: str) -> bool:
    return where.split("://", 1)[0].lower() in ("postgresql", "postgres")


def display(where) -> str:
    """The file, or the URL with its password hidden (in the user part or the query): what every message names."""
    if not is_url(where):
        return str(where)
    parts = urlsplit(where)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    query = re.sub(r"(?i)(^|&)(password)=[^&]*", r"\1\2=***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class Store:
    """A history database. Open it with open_store(); use it as a context manager or call close()."""

    def __init__(self, conn, where: str, param: str):
        self._conn, self.where, self._param = conn, where, param
        self.version = SCHEMA_VERSION  # the schema of the history as opened (an older one read as it is)

    # ----- the backend's differences ------------------------------------------------------------------------------

    def _sql(self, text: str) -> str:
        return text.replace("?", self._param)

    def _execute(self, text: str, args=()):
        return self._conn.execute(self._sql(text), args)

    @contextmanager
    def _transaction(self, write: bool = True):
        raise NotImplementedError

    def close(self) -> None:
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fail(self, exc: Exception, doing: str) -> HistoryError:
        return HistoryError(f"history {display(self.where)}: {doing} failed: {exc}")

    # ----- schema ---------------------------------------------------------------------------------------------------

    def _tables(self) -> set[str]:
        raise NotImplementedError

    def _check_schema(self, create: bool) -> None:
        """Create the tables in an empty database, bring an older history to this schema when opened for writing
        (MIGRATIONS only add columns); refuse a newer schema or a database of something else. Never rewrites or
        deletes a row that is there."""
        # Reading (the dashboard) takes no write lock, so a read-only copy of a history can be drawn too.
        with self._transaction(write=create):
            tables = self._tables()
            if "fluxperf_meta" not in tables:
                if tables:
                    raise HistoryError(
                        f"history {display(self.where)}: not a fluxperf history (it holds the tables "
                        f"{', '.join(sorted(tables))} but no fluxperf_meta); pass another file or URL"
                    )
                if not create:
                    raise HistoryError(f"history {display(self.where)}: holds no fluxperf history yet")
                for statement in SCHEMA:
                    self._execute(statement)
                self._execute(
                    "INSERT INTO fluxperf_meta (name, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT (name) DO NOTHING",
                    (str(SCHEMA_VERSION),),
                )
            row = self._execute("SELECT value FROM fluxperf_meta WHERE name = 'schema_version'").fetchone()
            try:
                version = int(row[0])
            except (TypeError, ValueError):
                raise HistoryError(
                    f"history {display(self.where)}: damaged: fluxperf_meta holds no schema version ({row!r})"
                ) from None
            if version > SCHEMA_VERSION:
                raise HistoryError(
                    f"history {display(self.where)}: schema version {version} was written by a newer "
                    f"fluxperf; this one reads up to {SCHEMA_VERSION}. Upgrade fluxperf, or point "
                    "--fluxperf-history elsewhere"
                )
            missing = set(TABLES) - self._tables()
            if missing or version < 1:
                what = f"tables {', '.join(sorted(missing))} are missing" if missing else f"schema version {version}"
                raise HistoryError(f"history {display(self.where)}: damaged: {what}")
            if create:
                # Opened for writing, an older history is brought to this schema; read, it is read as it is.
                for old in range(version, SCHEMA_VERSION):
                    for statement in MIGRATIONS[old]:
                        self._execute(statement)
                    self._execute("UPDATE fluxperf_meta SET value = ? WHERE name = 'schema_version'", (str(old + 1),))
                version = SCHEMA_VERSION
            self.version = version

    # ----- writing --------------------------------------------------------------------------------------------------

    def append(self, record: SessionRecord) -> int:
        """Add a session in one transaction; returns how many variant rows were new.

        A session already stored (same results), and a variant whose samples are already in its series (its
        results.json imported after its baseline), add nothing; a session with nothing new leaves no row."""
        session_json = json.dumps(record.session, sort_keys=True, allow_nan=False)
        try:
            with self._transaction():
                added = self._execute(
                    "INSERT INTO sessions (id, recorded_utc, kind, gpu_slug, scenario, commit_sha, label, source, "
                    "added_utc, session_json, result_schema) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO NOTHING",
                    (
                        record.id,
                        record.recorded_utc,
                        record.kind,
                        record.gpu_slug,
                        record.scenario,
                        record.commit,
                        record.label,
                        record.source,
                        utc_now(),
                        session_json,
                        record.result_schema,
                    ),
                ).rowcount
                if not added:
                    return 0
                rows = 0
                for variant, entry in record.variants.items():
                    digest = samples_digest(entry) or f"none:{record.id}:{variant}"
                    rows += self._execute(
                        "INSERT INTO results (session_id, variant, gpu_slug, scenario, recorded_utc, samples_sha256, "
                        "entry_json) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (
                            record.id,
                            variant,
                            record.gpu_slug,
                            record.scenario,
                            record.recorded_utc,
                            digest,
                            json.dumps(entry, sort_keys=True, allow_nan=False),
                        ),
                    ).rowcount
                if not rows:
                    self._execute("DELETE FROM sessions WHERE id = ?", (record.id,))
                return rows
        except HistoryError:
            raise
        except ValueError as exc:  # NaN or inf in a record: results dicts are JSON-safe, so this is a caller's bug
            raise self._fail(exc, f"appending session {record.recorded_utc}") from None
        except self._errors as exc:
            raise self._fail(exc, f"appending session {record.recorded_utc}") from None

    def accept(self, gpu_slug: str, scenario: str, variant: str, note: str, accepted_utc: str | None = None) -> str:
        """Record that a slowdown of this series up to now is deliberate: the history verdict compares only later
        sessions with each other. Returns the acceptance's id."""
        if not note.strip():
            raise HistoryError("an acceptance needs a note saying why the slowdown is deliberate")
        ident = uuid.uuid4().hex
        try:
            with self._transaction():
                self._execute(
                    "INSERT INTO acceptances (id, gpu_slug, scenario, variant, accepted_utc, note) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (ident, gpu_slug, scenario, variant, accepted_utc or utc_now(), note.strip()),
                )
        except self._errors as exc:
            raise self._fail(exc, "recording an acceptance") from None
        return ident

    # ----- reading --------------------------------------------------------------------------------------------------

    def _query(self, text: str, args=()) -> list:
        try:
            with self._transaction(write=False):
                return list(self._execute(text, args).fetchall())
        except self._errors as exc:
            raise self._fail(exc, "reading") from None

    def keys(self) -> list[tuple[str, str, str]]:
        """Every (gpu_slug, scenario, variant) series in the store, sorted."""
        return [
            tuple(r)
            for r in self._query(
                "SELECT DISTINCT gpu_slug, scenario, variant FROM results ORDER BY gpu_slug, scenario, variant"
            )
        ]

    def series(self, gpu_slug: str, scenario: str, variant: str, before_utc: str | None = None) -> list[Point]:
        """One variant's stored sessions on one GPU and scenario, oldest first (ties by session id), each entry in
        the current Result schema."""
        # A history of schema 1 opened for reading has no result_schema column: all its entries are UNVERSIONED.
        schema = "s.result_schema" if self.version >= 2 else str(UNVERSIONED)
        text = (
            f"SELECT r.session_id, r.recorded_utc, s.kind, s.commit_sha, r.entry_json, s.session_json, s.label, "
            f"{schema} FROM results r JOIN sessions s ON s.id = r.session_id "
            "WHERE r.gpu_slug = ? AND r.scenario = ? AND r.variant = ?"
        )
        args = [gpu_slug, scenario, variant]
        if before_utc is not None:
            text += " AND r.recorded_utc < ?"
            args.append(before_utc)
        rows = self._query(text + " ORDER BY r.recorded_utc, r.session_id", tuple(args))
        out = []
        for sid, utc, kind, commit, entry, session, label, result_schema in rows:
            try:
                entry = current_entry(json.loads(entry), result_schema, variant)
            except ValueError as exc:
                raise HistoryError(
                    f"history {display(self.where)}: session {utc} ({sid[:12]}) holds {exc}; upgrade fluxperf"
                ) from None
            out.append(Point(sid, utc, kind, commit, entry, json.loads(session), label))
        return out

    def accepted_utc(self, gpu_slug: str, scenario: str, variant: str) -> str | None:
        """When a slowdown of this series was last accepted as deliberate, or None."""
        rows = self._query(
            "SELECT MAX(accepted_utc) FROM acceptances WHERE gpu_slug = ? AND scenario = ? AND variant = ?",
            (gpu_slug, scenario, variant),
        )
        return rows[0][0] if rows else None

    def acceptances(self, gpu_slug: str, scenario: str, variant: str) -> list[tuple[str, str]]:
        """(accepted_utc, note) of every acceptance of this series, oldest first."""
        return [
            tuple(r)
            for r in self._query(
                "SELECT accepted_utc, note FROM acceptances WHERE gpu_slug = ? AND scenario = ? AND variant = ? "
                "ORDER BY accepted_utc",
                (gpu_slug, scenario, variant),
            )
        ]

    def count(self) -> int:
        return self._query("SELECT COUNT(*) FROM sessions")[0][0]


class SqliteStore(Store):
    _errors = (sqlite3.Error,)

    @contextmanager
    def _transaction(self, write: bool = True):
        # IMMEDIATE takes the write lock at the start: two writers queue (busy timeout) instead of deadlocking on
        # a read lock each wants to upgrade. Readers don't queue behind writers.
        self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def _tables(self) -> set[str]:
        return {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


class PostgresStore(Store):
    @property
    def _errors(self):
        import psycopg

        return (psycopg.Error,)

    @contextmanager
    def _transaction(self, write: bool = True):
        with self._conn.transaction():
            if write:
                # Serializes schema checks and appends between runners, as SQLite's write lock does.
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_LOCK_KEY,))
            yield

    def _tables(self) -> set[str]:
        rows = self._conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
        return {r[0] for r in rows}


def _open_sqlite(path: Path, create: bool) -> Store:
    path = Path(path).expanduser()
    if path.is_dir():
        raise HistoryError(f"history {path}: is a folder; name a file, e.g. {path / 'history.sqlite'}")
    exists = path.exists()
    if not exists and not create:
        raise HistoryError(f"history {path}: no such file; a fluxperf session creates it (--fluxperf-history)")
    if not exists:
        path.parent.mkdir(parents=True, exist_ok=True)
    # mode=rw never creates: a file that vanished in between is an error, not a new empty history.
    uri = path.resolve().as_uri() + ("?mode=rwc" if not exists else "?mode=rw")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise HistoryError(f"history {path}: can't open it: {exc}") from None
    store = SqliteStore(conn, str(path), "?")
    try:
        if exists:
            # Read-only: a damaged file is reported and left as it is.
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
            if result != "ok":
                raise HistoryError(
                    f"history {path}: damaged ({result}); it was left untouched. Restore it from a "
                    "backup, or point --fluxperf-history at a new file"
                )
        store._check_schema(create)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise HistoryError(
            f"history {path}: damaged or not an SQLite database ({exc}); it was left untouched. "
            "Restore it from a backup, or point --fluxperf-history at a new file"
        ) from None
    except BaseException:
        conn.close()
        raise
    return store


def _open_postgres(url: str, create: bool) -> Store:
    try:
        import psycopg
    except ImportError:
        raise HistoryError(
            f"history {display(url)}: a PostgreSQL history needs psycopg: pip install 'psycopg[binary]'"
        ) from None
    try:
        conn = psycopg.connect(url, connect_timeout=BUSY_TIMEOUT_S, autocommit=True)
    except psycopg.Error as exc:
        raise HistoryError(f"history {display(url)}: can't connect: {str(exc).strip()}") from None
    store = PostgresStore(conn, url, "%s")
    try:
        store._check_schema(create)
    except psycopg.Error as exc:
        conn.close()
        raise HistoryError(f"history {display(url)}: checking the schema failed: {str(exc).strip()}") from None
    except BaseException:
        conn.close()
        raise
    return store


def open_store(where, create: bool = True) -> Store:
    """The history at `where`: an SQLite file path, or a postgresql:// URL.

    create=True makes a missing file (and its folder) or the tables in an empty database; create=False (reading:
    the dashboard) refuses a missing file. A damaged file, a database of something else or one written by a newer
    fluxperf raises HistoryError naming it, and nothing in it is changed."""
    if is_url(where):
        if not _postgres(where):
            raise HistoryError(
                f"history {display(where)}: not a file path or a postgresql:// URL (another database's URL, or a "
                "driver-qualified one such as postgresql+psycopg://, is not read)"
            )
        return _open_postgres(where, create)
    return _open_sqlite(Path(where), create)
