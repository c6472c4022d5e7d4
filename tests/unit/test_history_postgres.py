"""The history's store tests again, against a real PostgreSQL server this module starts in a temporary folder.

Skipped, with the reason, where PostgreSQL's server binaries (Debian: apt-get install postgresql) or psycopg
(pip install 'psycopg[binary]') are missing. PostgreSQL refuses to run as root: run as root, the server runs as the
`postgres` system user the package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from fluxperf import history
from tests.unit.test_history import (  # noqa: F401  (the shared store tests, run here with this module's fixtures)
    test_a_database_of_something_else_is_refused,
    test_a_newer_schema_is_refused_naming_the_history_and_its_rows_stay,
    test_acceptances_are_kept_per_series,
    test_an_append_is_one_transaction,
    test_appended_sessions_come_back_as_series_in_time_order,
    test_the_same_session_or_the_same_samples_are_stored_once,
    test_two_runners_appending_at_once_lose_nothing,
)

psycopg = pytest.importorskip("psycopg", reason="psycopg missing: pip install 'psycopg[binary]'")


def _binary(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """A PostgreSQL server on a unix socket in a temporary folder; yields the URL of its `postgres` database."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    prefix = []
    root = tempfile.mkdtemp(prefix="fluxperf-pg-")
    if os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip(
                "running as root and there is no `postgres` user to run the server as (PostgreSQL refuses "
                "root): run as another user, or apt-get install postgresql"
            )
        os.chmod(root, 0o755)
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(root, "data"), _free_port()
    log = os.path.join(root, "server.log")
    try:
        subprocess.run(
            [*prefix, initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [
                *prefix,
                pg_ctl,
                "-D",
                data,
                "-l",
                log,
                "-w",
                "-t",
                "60",
                "-o",
                f"-k {root} -p {port} -c listen_addresses='' -c fsync=off",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=90,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        text = Path(log).read_text() if os.path.exists(log) else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL didn't start: {exc}\n{getattr(exc, 'stderr', b'')!r}\n{text}")
    try:
        yield f"postgresql://postgres@/postgres?host={root}&port={port}"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def history_at(server):
    """A new, empty database on the server, dropped after the test."""
    name = f"history_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield server.replace("/postgres?", f"/{name}?")
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def raw_sql(history_at):
    """Runs one statement on the history's database behind the store's back; returns the rows of a query."""

    def run(sql: str) -> list[tuple]:
        with psycopg.connect(history_at, autocommit=True) as conn:
            cursor = conn.execute(sql)
            return [tuple(r) for r in cursor.fetchall()] if cursor.description else []

    return run


def test_the_tables_are_the_same_as_in_sqlite(history_at, raw_sql):
    history.open_store(history_at).close()
    tables = {
        r[0] for r in raw_sql("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
    }
    assert tables == set(history.store.TABLES)
    assert raw_sql("SELECT value FROM fluxperf_meta WHERE name = 'schema_version'") == [(str(history.SCHEMA_VERSION),)]


def test_an_unreachable_server_is_an_error_that_hides_the_password(tmp_path):
    url = f"postgresql://fluxperf:s3cret@/history?host={tmp_path}&port={_free_port()}"
    with pytest.raises(history.HistoryError, match="can't connect") as err:
        history.open_store(url)
    assert "s3cret" not in str(err.value) and "fluxperf:***@" in str(err.value)
