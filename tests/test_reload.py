"""Routing data reloads without a restart: SIGHUP -> DirectoryHolder.reload() swaps in
what the database now holds, and the next call is classified with it."""

from __future__ import annotations

import asyncpg
import pytest

from gateway.service.app import DirectoryHolder
from gateway.service.sitestore import import_sites, load_directory
from routing.sites_file import parse_sites
from tests.test_callrouter import DEMO

pytestmark = [pytest.mark.asyncio, pytest.mark.postgres]


async def test_reload_picks_up_new_sites(pg_pool: asyncpg.Pool) -> None:
    text = DEMO.read_text()
    async with pg_pool.acquire() as con:
        await import_sites(con, parse_sites(text, "toml"))

    async def load():
        async with pg_pool.acquire() as con:
            return await load_directory(con)

    holder = DirectoryHolder(directory=await load(), load=load)
    before = holder.get()
    assert "alice" in before.subscribers
    async with pg_pool.acquire() as con:
        await import_sites(
            con, parse_sites(text.replace('sip_user = "alice"', 'sip_user = "alicia"'), "toml")
        )
    assert holder.get() is before  # nothing changes until the reload
    await holder.reload()
    after = holder.get()
    assert "alicia" in after.subscribers
    assert "alice" not in after.subscribers
