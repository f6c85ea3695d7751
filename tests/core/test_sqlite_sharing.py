"""The embedded default shares one SQLite file between the API, the CLI and every worker process.
A process that opens a second engine on the file (an observer, a read-only console) must not
cost its first one its locks: another process would then take the database for unused, delete
the WAL on close, and this process's later commits would reach nobody."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from nightowl.platform.db import make_engine


def _other_process(db: Path, sql: str) -> str:
    code = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "print(c.execute(sys.argv[2]).fetchall()); c.close()")
    return subprocess.run([sys.executable, "-c", code, str(db), sql], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_a_second_engine_in_one_process_keeps_the_first_ones_commits_visible(
        tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    first = make_engine(f"sqlite:///{db}")
    with first.connect() as conn:
        conn.execute(text("CREATE TABLE jobs (id TEXT)"))
        conn.commit()
        make_engine(f"sqlite:///{db}", sqlite_autocommit=True).dispose()
        # Another process reads and closes: if it believes it was the last user, it checkpoints
        # and deletes the WAL this process still writes to.
        assert _other_process(db, "SELECT count(*) FROM jobs") == "[(0,)]"
        conn.execute(text("INSERT INTO jobs VALUES ('job_1')"))
        conn.commit()
        assert _other_process(db, "SELECT id FROM jobs") == "[('job_1',)]"
    first.dispose()
