"""An app that commits to a SQLite database on every POST (the backup test's
writer): each transaction inserts a row and updates a running total, so a
torn copy shows up as a failed integrity_check or a total that does not match."""
import os
import sqlite3

DB = os.environ["SQLWRITER_DB"]


def _conn():
    c = sqlite3.connect(DB, timeout=30, isolation_level=None)
    c.execute("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, pad BLOB)")
    c.execute("CREATE TABLE IF NOT EXISTS total (n INTEGER)")
    return c


def application(environ, start_response):
    c = _conn()
    try:
        if environ["REQUEST_METHOD"] == "POST":
            c.execute("BEGIN IMMEDIATE")
            if c.execute("SELECT count(*) FROM total").fetchone()[0] == 0:
                c.execute("INSERT INTO total VALUES (0)")
            # Big rows so one transaction spans many pages.
            c.executemany("INSERT INTO rows (pad) VALUES (?)", [(os.urandom(3000),)] * 5)
            c.execute("UPDATE total SET n = n + 5")
            c.execute("COMMIT")
        n = c.execute("SELECT count(*) FROM rows").fetchone()[0]
    finally:
        c.close()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(n).encode()]
