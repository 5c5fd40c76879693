"""The PostgreSQL a benchmark runs against: ``VOIPGW_TEST_DATABASE_URL``, or a fresh
embedded server in a temporary directory, removed afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cdr.db import EmbeddedPostgres


@contextlib.contextmanager
def bench_database(prefix: str) -> Iterator[tuple[str, Path]]:
    """Yields ``(dsn, scratch directory)``; the directory is the benchmark's to use."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    url = os.environ.get("VOIPGW_TEST_DATABASE_URL")
    server = None
    try:
        if url:
            dsn = url
        else:
            server = EmbeddedPostgres(root / "pgdata")
            server.start()
            dsn = server.dsn("postgres")
        yield dsn, root
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
