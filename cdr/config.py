"""``[cdr]`` config: the CDR writer, its spool and partition maintenance."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cdr.spool import DEFAULT_SEGMENT_BYTES, MIN_SEGMENT_BYTES
from routing.configfields import Table


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CdrConfig:
    """How call records are written and kept. Durations are float seconds."""

    spool_dir: str = "state/cdr-spool"
    """Local spool directory; one per gateway instance (it is locked). In a config file
    its default is ``<[gateway] state_dir>/cdr-spool``."""
    queue_size: int = 50_000
    """Records held in memory before ``submit`` spools them directly."""
    batch_size: int = 10_000
    """Rows per COPY batch."""
    batch_age: float = 0.02
    """Seconds the first record of a batch may wait for more records. The batch is then
    written to the spool file: from then on its records survive a crash of the gateway
    (kill -9, OOM)."""
    fsync_interval: float = 0.1
    """Least seconds between two fsyncs of the spool: the batches written meanwhile are
    fsynced together (by a thread, never the event loop), so a record survives a power
    cut at most ``batch_age`` + this after its call ended. 0 fsyncs each batch as soon
    as it is written. A record someone waits for (``CdrWriter.write``) is fsynced at
    once either way."""
    insert_interval: float = 0.2
    """Least seconds between two transactions that insert in-memory batches: the
    batches spooled meanwhile (each written to the spool after ``batch_age``) wait
    and go into PostgreSQL together, one COPY + INSERT + commit and one checkpoint for
    all. 0 inserts each batch as soon as it is spooled. Records reach the table up to
    this much later; their durability does not change."""
    insert_connections: int = 2
    """Batches inserted at once, each on its own connection (PostgreSQL's per-row work,
    parsing, partition routing and six indexes, runs on one core per connection)."""
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    """Spool segment rotation size, in bytes."""
    memory_rows: int = 200_000
    """Uncommitted rows also kept in memory; beyond that they are re-read from the spool."""
    retry_initial: float = 0.2
    """First back-off, in seconds, after a failed insert."""
    retry_max: float = 10.0
    """Longest back-off, in seconds."""
    command_timeout: float = 30.0
    """Seconds one batch's COPY and INSERT may take before it counts as failed."""
    shutdown_timeout: float = 10.0
    """Seconds shutdown waits for the last batches to commit (the rest stays spooled)."""
    retention_months: int = 15
    """Months call records are kept (privacy policy: 15), then only aggregates."""
    partitions_ahead: int = 3
    """Monthly partitions kept ready beyond the current month."""
    maintenance_interval: float = 3600.0
    """Seconds between partition maintenance rounds."""
    in_progress_records: bool = True
    """Write an in-progress record when a call is answered (completed under the same key
    when it ends), so that a call cut short by a crash of the gateway keeps its row.
    False writes records only when calls end (a crash then loses the calls up)."""
    interim_interval: float = 300.0
    """Seconds between updates of an in-progress record's duration: a crash loses at
    most this much of a call's duration if the heartbeat is lost too."""
    heartbeat_interval: float = 1.0
    """Seconds between fsyncs of the liveness file (``alive`` in the spool directory).
    After a crash, the calls left in progress are closed at the last heartbeat: their
    end is at most this (plus the event loop's lag) before the crash."""

    def __post_init__(self) -> None:
        if self.queue_size < 1 or self.batch_size < 1 or self.memory_rows < 0:
            raise ValueError("queue_size and batch_size must be >= 1, memory_rows >= 0")
        if self.insert_connections < 1:
            raise ValueError("insert_connections must be >= 1")
        if self.segment_bytes < MIN_SEGMENT_BYTES:
            raise ValueError(f"segment_bytes must be >= {MIN_SEGMENT_BYTES}")
        if self.insert_interval < 0:
            raise ValueError("insert_interval must be >= 0")
        if self.fsync_interval < 0:
            raise ValueError("fsync_interval must be >= 0")
        if self.retry_initial <= 0 or self.retry_max < self.retry_initial:
            raise ValueError("retry back-off must satisfy 0 < retry_initial <= retry_max")

    @classmethod
    def from_table(cls, table: Table, *, state_dir: str = "state") -> CdrConfig:
        """Reads a ``[cdr]`` table.

        Args:
            table: the table (unknown keys are rejected).
            state_dir: the gateway's state directory (``[gateway] state_dir``): the
                spool is ``<state_dir>/cdr-spool`` unless ``spool_dir`` says otherwise.

        Returns:
            The config.

        Raises:
            ConfigError: a field is invalid; the message names it.
        """
        d = cls()
        retry_initial = table.float("retry_initial", d.retry_initial, min=0.001, max=60.0)
        config = cls(
            spool_dir=table.str("spool_dir", str(Path(state_dir) / "cdr-spool")),
            queue_size=table.int("queue_size", d.queue_size, min=1, max=10_000_000),
            batch_size=table.int("batch_size", d.batch_size, min=1, max=1_000_000),
            batch_age=table.float("batch_age", d.batch_age, min=0.0, max=60.0),
            fsync_interval=table.float("fsync_interval", d.fsync_interval, min=0.0, max=60.0),
            insert_interval=table.float("insert_interval", d.insert_interval, min=0.0, max=60.0),
            insert_connections=table.int("insert_connections", d.insert_connections, min=1, max=64),
            segment_bytes=table.int(
                "segment_bytes", d.segment_bytes, min=MIN_SEGMENT_BYTES, max=1 << 40
            ),
            memory_rows=table.int("memory_rows", d.memory_rows, min=0, max=100_000_000),
            retry_initial=retry_initial,
            retry_max=table.float("retry_max", d.retry_max, min=retry_initial, max=3600.0),
            command_timeout=table.float("command_timeout", d.command_timeout, min=0.1),
            shutdown_timeout=table.float("shutdown_timeout", d.shutdown_timeout, min=0.0),
            retention_months=table.int("retention_months", d.retention_months, min=1, max=1200),
            partitions_ahead=table.int("partitions_ahead", d.partitions_ahead, min=3, max=120),
            maintenance_interval=table.float(
                "maintenance_interval", d.maintenance_interval, min=1.0
            ),
            in_progress_records=table.bool("in_progress_records", d.in_progress_records),
            interim_interval=table.float("interim_interval", d.interim_interval, min=1.0),
            heartbeat_interval=table.float(
                "heartbeat_interval", d.heartbeat_interval, min=0.05, max=3600.0
            ),
        )
        table.reject_unknown()
        return config
