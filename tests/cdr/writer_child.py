"""Child process for the SIGKILL test: streams CDRs, prints each acknowledged index.

Usage: python -m tests.cdr.writer_child DSN SPOOL_DIR COUNT

Record ``i`` has ``call_uuid = uuid5(NAMESPACE, str(i))`` so the parent can check which
acknowledged records reached the table.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import uuid
from pathlib import Path

import asyncpg

from cdr.config import CdrConfig
from cdr.writer import CdrWriter
from tests.cdr.factory import make_record

NAMESPACE = uuid.UUID("6f1c3d1e-6d0e-4d7e-9d0e-0a1b2c3d4e5f")
START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def record_uuid(i: int) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, str(i))


async def main(dsn: str, spool: str, count: int) -> None:
    config = CdrConfig(batch_size=500, batch_age=0.005, retry_initial=0.05, retry_max=0.2)
    async with (
        asyncpg.create_pool(dsn, min_size=0, max_size=2) as pool,
        CdrWriter(pool, config, spool_dir=Path(spool)) as writer,
    ):
        for base in range(0, count, 100):
            indices = range(base, min(base + 100, count))
            await asyncio.gather(
                *(
                    writer.write(
                        make_record(
                            call_uuid=record_uuid(i),
                            started_at=START + dt.timedelta(seconds=i),
                        )
                    )
                    for i in indices
                )
            )
            sys.stdout.write("".join(f"{i}\n" for i in indices))
            sys.stdout.flush()
        # Keep running until killed: the parent decides when.
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
