"""What a PostgreSQL history has alone: connecting. Every store test runs on PostgreSQL too, in test_history.py (its
`history_at` fixture starts a server in a temporary folder, or skips saying what to install)."""

from __future__ import annotations

import pytest

from fluxperf import history

pytest.importorskip("psycopg", reason="psycopg missing: pip install 'psycopg[binary]'")


def test_an_unreachable_server_is_an_error_that_hides_the_password(tmp_path):
    # A unix socket folder with no server in it.
    url = f"postgresql://fluxperf:s3cret@/history?host={tmp_path}&port=5432"
    with pytest.raises(history.HistoryError, match="can't connect") as err:
        history.open_store(url)
    assert "s3cret" not in str(err.value) and "fluxperf:***@" in str(err.value)
