#!/usr/bin/env python3
"""A consistent online snapshot of a live SQLite database, for the backup servers.

Copying the database file while the app writes to it (what `scp` of the live
file does) can catch a half-written page set: a copy that fails
`PRAGMA integrity_check` or silently lacks a committed transaction. SQLite's
online backup API copies the database as of one transaction, while writers go
on. This script:

1. copies DB with `sqlite3.Connection.backup` into DEST/.NAME-<UTC time>.partial,
2. checks the copy with `PRAGMA integrity_check` (a bad copy is removed, exit 1),
3. fsyncs it, makes it mode 0640 (the database holds personal data) and renames
   it to DEST/NAME-<UTC time>.sqlite3, so a fetcher never sees a partial file,
4. points DEST/NAME-latest.sqlite3 at it (a symlink replaced atomically; scp
   follows it),
5. keeps the newest --keep snapshots (default 48) and removes older ones.

Run by amy-emperor (or uWSGI) from the ini, every hour, never twice at once:

    cron2 = minute=0,unique=1,harakiri=900 /srv/amy_site/venv/bin/python
        /srv/amy_site/backup/sqlite_snapshot.py /srv/amy_site/amy/db.sqlite3 /srv/amy_site/backups

(one line). The backup servers then fetch /srv/amy_site/backups/amy-latest.sqlite3
(or every amy-*.sqlite3) instead of the live file. Stdlib only, Python 3.8+.
"""

import argparse
import os
import sqlite3
import sys
import time


def snapshot(db, dest, name):
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    final = os.path.join(dest, "%s-%s.sqlite3" % (name, stamp))
    n = 1
    while os.path.exists(final):
        # Two runs in one second (manual + cron): never overwrite a snapshot.
        final = os.path.join(dest, "%s-%s-%d.sqlite3" % (name, stamp, n))
        n += 1
    partial = os.path.join(dest, ".%s.partial" % os.path.basename(final))
    # The source is opened read-only: the snapshot can never write to the live db.
    src = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=60)
    try:
        dst = sqlite3.connect(partial)
        try:
            # pages=-1: the whole database in one step, i.e. as of one transaction.
            src.backup(dst, pages=-1)
            check = dst.execute("PRAGMA integrity_check").fetchall()
        finally:
            dst.close()
    finally:
        src.close()
    if check != [("ok",)]:
        os.unlink(partial)
        raise RuntimeError("snapshot failed integrity_check: %r" % (check[:5],))
    os.chmod(partial, 0o640)
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(partial, final)
    latest = os.path.join(dest, "%s-latest.sqlite3" % name)
    tmp_link = os.path.join(dest, ".%s-latest.tmp" % name)
    if os.path.lexists(tmp_link):
        os.unlink(tmp_link)
    os.symlink(os.path.basename(final), tmp_link)
    os.rename(tmp_link, latest)
    dfd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return final


def prune(dest, name, keep, current):
    """Keeps the newest `keep` snapshots, oldest first out, never `current`.
    Ordered by modification time: names alone misorder two snapshots taken in
    the same second (`amy-…Z-1.sqlite3` sorts before `amy-…Z.sqlite3`)."""
    snaps = []
    for f in os.listdir(dest):
        if f.startswith(name + "-") and f.endswith(".sqlite3") and f != "%s-latest.sqlite3" % name:
            try:
                snaps.append((os.stat(os.path.join(dest, f)).st_mtime_ns, f))
            except FileNotFoundError:
                continue  # pruned by a run beside this one
    snaps.sort()
    # Nor the one `-latest` names: a run beside this one may have just pointed
    # it there, and a backup server may be fetching through it.
    try:
        latest = os.path.join(dest, os.readlink(os.path.join(dest, "%s-latest.sqlite3" % name)))
    except OSError:
        latest = None
    for _, f in snaps[:-keep] if keep > 0 else []:
        path = os.path.join(dest, f)
        if path in (current, latest):
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    # Partials left by a run that was killed (harakiri, power loss).
    for f in os.listdir(dest):
        if f.startswith("." + name + "-") and f.endswith(".partial"):
            path = os.path.join(dest, f)
            if time.time() - os.path.getmtime(path) > 3600:
                os.unlink(path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("db", help="the live SQLite database")
    p.add_argument("dest", help="directory the backup servers fetch from")
    p.add_argument("--keep", type=int, default=48, help="snapshots to keep (default 48)")
    p.add_argument("--name", default="amy", help="file name prefix (default amy)")
    args = p.parse_args(argv)
    os.makedirs(args.dest, mode=0o750, exist_ok=True)
    started = time.monotonic()
    try:
        path = snapshot(args.db, args.dest, args.name)
    except (sqlite3.Error, OSError, RuntimeError) as e:
        print("sqlite-snapshot: FAILED %s: %s" % (args.db, e), file=sys.stderr)
        return 1
    size = os.path.getsize(path)
    prune(args.dest, args.name, args.keep, path)
    print("sqlite-snapshot: wrote %s (%d bytes) in %.2fs" % (path, size, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
