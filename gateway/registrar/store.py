"""Credentials and bindings in PostgreSQL (tables of ``cdr/migrations/0200_registrar.sql``).

Several gateway instances share one database, so everything they must agree on lives
there: expiry is computed with the database's ``now()`` (one clock for all instances),
and a REGISTER's read-decide-write of RFC 3261 10.3 step 7 runs in one transaction
holding a transaction-scoped advisory lock on the AoR, so two instances handling
REGISTERs for the same AoR at once apply them one after the other rather than both
inserting the same contact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import asyncpg

from gateway.registrar.bindings import (
    Binding,
    ContactUpdate,
    RegisterUpdate,
    UpdatePlan,
    plan_update,
)
from gateway.registrar.digest import Algorithm, compute_ha1
from gateway.sip.events import Endpoint

#: First key of the registrar's advisory locks ("REGI"); the second is the AoR's hash.
LOCK_CLASS = 0x52454749

_COLUMNS = """
    id, aor, contact, display_name, params, q, instance_id, reg_id, call_id, cseq,
    received_transport, host(received_host) AS received_host, received_port, user_agent,
    registered_at, expires_at, flow_owner, path,
    GREATEST(0, ceil(extract(epoch FROM expires_at - now())))::int AS expires_left
"""

_SELECT_CURRENT = f"""
    SELECT {_COLUMNS} FROM registrar_bindings
    WHERE aor = $1 AND expires_at > now()
    ORDER BY COALESCE(q, 1.0) DESC, registered_at DESC, id DESC
"""


def _binding(row: asyncpg.Record) -> Binding:
    return Binding(
        id=row["id"],
        aor=row["aor"],
        contact=row["contact"],
        display_name=row["display_name"],
        params=row["params"],
        q=row["q"],
        instance_id=row["instance_id"],
        reg_id=row["reg_id"],
        call_id=row["call_id"],
        cseq=row["cseq"],
        received=Endpoint(row["received_transport"], row["received_host"], row["received_port"]),
        user_agent=row["user_agent"],
        registered_at=row["registered_at"],
        expires_at=row["expires_at"],
        expires=row["expires_left"],
        flow_owner=row["flow_owner"],
        path=tuple(row["path"] or ()),
    )


class BindingStore:
    """The registrar's tables, on an asyncpg pool owned by the caller.

    Args:
        pool: an open pool on a database migrated with ``cdr.db.migrate``.
        flow_owner: this instance's ``[cluster] sip_uri``, recorded on every binding
            it writes as the holder of the device's flow (None: not recorded).
    """

    def __init__(self, pool: asyncpg.Pool, *, flow_owner: str | None = None) -> None:
        self.pool = pool
        self.flow_owner = flow_owner

    # ------------------------------------------------------------------ credentials

    async def get_ha1(self, username: str, realm: str, algorithm: Algorithm) -> str | None:
        """Returns the stored H(A1) of a user, or None when there is none.

        The query is the same for known and unknown users, so its timing does not tell
        them apart.
        """
        value: str | None = await self.pool.fetchval(
            "SELECT ha1 FROM registrar_credentials "
            "WHERE username = $1 AND realm = $2 AND algorithm = $3",
            username,
            realm,
            algorithm.value,
        )
        return value

    async def set_password(
        self,
        username: str,
        realm: str,
        password: str,
        algorithms: Iterable[Algorithm] = (Algorithm.SHA_256, Algorithm.MD5),
    ) -> None:
        """Provisions a user: stores H(A1) for each algorithm, never the password.

        Args:
            username: SIP user name.
            realm: the registrar's realm.
            password: the clear-text password (hashed here, then dropped).
            algorithms: algorithms the user may authenticate with.
        """
        await self.set_ha1(
            username, realm, {a: compute_ha1(username, realm, password, a) for a in algorithms}
        )

    async def set_ha1(self, username: str, realm: str, ha1: dict[Algorithm, str]) -> None:
        """Stores precomputed H(A1) values (from a provisioning system).

        Args:
            username: SIP user name.
            realm: the realm they were computed for.
            ha1: hex H(A1) by algorithm.

        Raises:
            asyncpg.CheckViolationError: a value is not lower-case hex of the right length.
        """
        await self.pool.executemany(
            """
            INSERT INTO registrar_credentials (username, realm, algorithm, ha1)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (username, realm, algorithm)
            DO UPDATE SET ha1 = EXCLUDED.ha1, updated_at = now()
            """,
            [(username, realm, a.value, value) for a, value in ha1.items()],
        )

    async def delete_credentials(self, username: str, realm: str) -> int:
        """Removes a user's credentials in a realm; returns how many rows went."""
        status: str = await self.pool.execute(
            "DELETE FROM registrar_credentials WHERE username = $1 AND realm = $2",
            username,
            realm,
        )
        return int(status.split()[-1])

    # ------------------------------------------------------------------ bindings

    async def lookup(self, aor: str) -> list[Binding]:
        """Returns an AoR's unexpired bindings, highest q first, then newest.

        Args:
            aor: canonical AoR (:func:`gateway.registrar.bindings.canonical_aor`).
        """
        rows = await self.pool.fetch(_SELECT_CURRENT, aor)
        return [_binding(r) for r in rows]

    async def lookup_many(self, aors: Sequence[str]) -> dict[str, list[Binding]]:
        """Returns the unexpired bindings of several AoRs in one query (AoRs without
        any are absent), each list in :meth:`lookup`'s order."""
        rows = await self.pool.fetch(
            f"""
            SELECT {_COLUMNS} FROM registrar_bindings
            WHERE aor = ANY($1::text[]) AND expires_at > now()
            ORDER BY aor, COALESCE(q, 1.0) DESC, registered_at DESC, id DESC
            """,
            list(aors),
        )
        found: dict[str, list[Binding]] = {}
        for row in rows:
            found.setdefault(row["aor"], []).append(_binding(row))
        return found

    async def apply(self, update: RegisterUpdate, received: Endpoint) -> list[Binding]:
        """Applies an authenticated REGISTER and returns the AoR's bindings after it.

        Args:
            update: the parsed REGISTER.
            received: the transport address it came from.

        Returns:
            The current bindings (what the 200 OK lists).

        Raises:
            RegisterError: out-of-order Call-ID/CSeq (nothing is changed).
        """
        async with self.pool.acquire() as con, con.transaction():
            await con.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", LOCK_CLASS, update.aor
            )
            # Expired rows of this AoR are gone for good: dropping them here keeps them
            # out of the Call-ID/CSeq comparison without waiting for the purge.
            await con.execute(
                "DELETE FROM registrar_bindings WHERE aor = $1 AND expires_at <= now()",
                update.aor,
            )
            current = [_binding(r) for r in await con.fetch(_SELECT_CURRENT, update.aor)]
            plan = plan_update(current, update)
            await self._run(con, plan, update, received)
            rows = await con.fetch(_SELECT_CURRENT, update.aor)
        return [_binding(r) for r in rows]

    async def _run(
        self,
        con: asyncpg.Connection,
        plan: UpdatePlan,
        update: RegisterUpdate,
        received: Endpoint,
    ) -> None:
        if plan.delete:
            await con.execute(
                "DELETE FROM registrar_bindings WHERE id = ANY($1::bigint[])", list(plan.delete)
            )
        if plan.update:
            await con.executemany(
                """
                UPDATE registrar_bindings SET
                    contact = $2, display_name = $3, params = $4, q = $5,
                    instance_id = $6, reg_id = $7, call_id = $8, cseq = $9,
                    received_transport = $10, received_host = $11::inet,
                    received_port = $12, user_agent = $13,
                    expires_at = now() + make_interval(secs => $14), flow_owner = $15,
                    path = $16
                WHERE id = $1
                """,
                [
                    (i, *_values(c, update, received), self.flow_owner, _path(update))
                    for i, c in plan.update
                ],
            )
        if plan.insert:
            await con.executemany(
                """
                INSERT INTO registrar_bindings (
                    aor, contact, display_name, params, q, instance_id, reg_id, call_id,
                    cseq, received_transport, received_host, received_port, user_agent,
                    expires_at, flow_owner, path)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::inet, $12, $13,
                        now() + make_interval(secs => $14), $15, $16)
                """,
                [
                    (update.aor, *_values(c, update, received), self.flow_owner, _path(update))
                    for c in plan.insert
                ],
            )

    async def remove_all(self, aor: str) -> int:
        """Removes every binding of an AoR (administrative de-registration)."""
        status: str = await self.pool.execute("DELETE FROM registrar_bindings WHERE aor = $1", aor)
        return int(status.split()[-1])

    async def count_current(self) -> int:
        """Counts the unexpired bindings of every AoR (what lookups can still return)."""
        count: int = await self.pool.fetchval(
            "SELECT count(*) FROM registrar_bindings WHERE expires_at > now()"
        )
        return count

    async def purge_expired(self) -> int:
        """Deletes expired bindings; returns how many.

        Readers never see them anyway; this only bounds the table's size.
        """
        status: str = await self.pool.execute(
            "DELETE FROM registrar_bindings WHERE expires_at <= now()"
        )
        return int(status.split()[-1])


def _path(update: RegisterUpdate) -> list[str] | None:
    # NULL, not an empty array, for "no Path" (migration 0720).
    return list(update.path) or None


def _values(contact: ContactUpdate, update: RegisterUpdate, received: Endpoint) -> Sequence[object]:
    return (
        contact.uri,
        contact.display_name,
        contact.params_text,
        contact.q,
        contact.instance_id,
        contact.reg_id,
        update.call_id,
        update.cseq,
        received.transport,
        received.host,
        received.port,
        update.user_agent,
        float(contact.expires),
    )
