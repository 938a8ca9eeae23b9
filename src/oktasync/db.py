"""The one way the engine's SQLite files (run index, ownership) group writes atomically."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, *, immediate: bool = False) -> Iterator[None]:
    """One atomic step: committed whole, or rolled back whole when anything raises.

    Deferred by default: the run index's connection has the ownership database attached,
    which it only reads (and may read from an older snapshot while the feed streams, which a
    write lock there would refuse). ``immediate`` takes the write lock at ``BEGIN``, waiting
    (the busy timeout) while another process writes: what ``state.db`` needs, shared by runs
    of several apps at once, where a deferred transaction that read first could only fail
    when it came to write. The connections run in autocommit mode (``isolation_level=None``),
    so ``BEGIN`` is ours to say.
    """
    db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
