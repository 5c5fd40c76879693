"""Registrar(on_auth_failure=...): rejected digest authentications reach the guard.

A fake credentials store (the hook fires before any binding is written, so only
``get_ha1`` is needed) keeps this pure; the PostgreSQL-backed path runs in
test_sipvicious.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.edge.guard import Guard, GuardConfig
from gateway.registrar import Registrar
from gateway.registrar.digest import Algorithm, compute_ha1
from gateway.sip.events import Endpoint
from tests.registrar.helpers import authorize, config, event, register

SCANNER = Endpoint("UDP", "203.0.113.66", 5070)


class FakeStore:
    """Credentials of one user; anything past authentication is not expected."""

    def __init__(self, user: str, password: str) -> None:
        self.user = user
        self.password = password

    async def get_ha1(self, username: str, realm: str, algorithm: Algorithm) -> str | None:
        if username != self.user:
            return None
        return compute_ha1(username, realm, self.password, algorithm)


def registrar(on_auth_failure: Any) -> Registrar:
    return Registrar(
        config(),
        FakeStore("alice", "s3cret"),  # type: ignore[arg-type]
        on_auth_failure=on_auth_failure,
    )


async def attempt(reg: Registrar, user: str, password: str) -> int:
    request = register(user)
    challenge = await reg.handle(event(request, SCANNER))
    assert challenge.status == 401
    authed = authorize(request, challenge, username=user, password=password)
    return (await reg.handle(event(authed, SCANNER))).status


@pytest.mark.asyncio
async def test_wrong_password_and_unknown_user_are_reported() -> None:
    reports: list[tuple[Endpoint, str]] = []
    reg = registrar(lambda source, user: reports.append((source, user)))
    assert await attempt(reg, "alice", "guess") == 403
    assert await attempt(reg, "mallory", "guess") == 403
    assert reports == [(SCANNER, "alice"), (SCANNER, "mallory")]


@pytest.mark.asyncio
async def test_challenges_are_not_failures() -> None:
    reports: list[tuple[Endpoint, str]] = []
    reg = registrar(lambda source, user: reports.append((source, user)))
    for _ in range(10):
        assert (await reg.handle(event(register("alice"), SCANNER))).status == 401
    assert reports == []


@pytest.mark.asyncio
async def test_guard_bans_after_repeated_failures() -> None:
    guard = Guard(GuardConfig(max_auth_failures=3))
    reg = registrar(guard.auth_failed)
    data = register("alice").serialize()
    for i in range(3):
        assert guard.admit(data, SCANNER, 10.0 + i)
        assert await attempt(reg, "alice", f"guess{i}") == 403
    assert not guard.admit(data, SCANNER, 13.0)
    assert guard.stats.bans == 1
