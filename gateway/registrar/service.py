"""The registrar service: answers REGISTER (RFC 3261 10.3) for the gateway.

Wiring::

    async with asyncpg.create_pool(dsn) as pool:
        registrar = Registrar(config.registrar, BindingStore(pool))
        gateway = Gateway(config, router=..., services={"REGISTER": registrar.handle})
        async with registrar.purging():
            ...

:meth:`Registrar.handle` goes through RFC 3261 10.3 in order, with the syntax checks
(which reveal nothing about users) first: Request-URI and To (400/416, RFC 4475
unksm2), domain (404), then digest authentication (401/403), authorization of the
authenticated user for the AoR (403), the minimum interval (423), the binding update
(400 on out-of-order CSeq) and the 200 OK listing every current binding (and the
request's Path, when the UA supports it: :func:`~gateway.registrar.path.path_echo`).

Enumeration: an unknown user and a wrong password both end in the same 403, built by
the same code path after the same database query and the same hashing.

Every authentication that does not succeed is one info line on ``voipgw.registrar``
saying why (:class:`~gateway.registrar.digest.AuthFailure`): "REGISTER from
127.0.0.1:5062 not authenticated: stale nonce (user 'alice')". A wrong password and an
unknown user read the same. No credentials, however malformed, raise out of
:meth:`Registrar.handle` or :meth:`Registrar.authenticate_call`: they end in 400, 401,
403 or 407 (503 when the database is down).

While PostgreSQL is unreachable, the :class:`~gateway.registrar.location.LocationService`
answers from what this instance remembers (:mod:`.location`): REGISTERs of users it has
authenticated before are accepted into memory and written through later, lookups
return remembered bindings; only what it cannot decide gets 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence

import asyncpg

from gateway.b2bua.events import ServiceRequest
from gateway.edge.peers import Network, in_networks
from gateway.registrar.bindings import (
    Binding,
    RegisterError,
    canonical_aor,
    check_min_expires,
    format_contact,
    parse_register,
)
from gateway.registrar.config import RegistrarConfig
from gateway.registrar.digest import (
    AuthFailure,
    AuthOutcome,
    DigestAuthenticator,
    DigestError,
    plausible_username,
)
from gateway.registrar.location import LocationService, LocationUnavailable
from gateway.registrar.path import path_echo
from gateway.registrar.store import BindingStore
from gateway.sip.builders import build_response
from gateway.sip.errors import ParseError
from gateway.sip.events import Endpoint
from gateway.sip.message import Request, Response
from gateway.sip.uri import SipUri, parse_uri

log = logging.getLogger("voipgw.registrar")

#: Seconds a client should wait before retrying when the database is unavailable.
RETRY_AFTER_DB_DOWN = 5

#: Errors that mean "the database is failing and memory cannot stand in", answered 503.
_DB_ERRORS = (
    LocationUnavailable,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


class Registrar:
    """REGISTER handler, binding lookup and purge loop for one gateway instance.

    Args:
        config: registrar settings.
        store: the credentials and bindings store.
        clock: wall-clock seconds (nonce times must agree between instances).
        random_bytes: source of nonce salts and To tags.
        on_auth_failure: told ``(source, username)`` of each rejected digest
            authentication (wrong password or unknown user), for the ingress
            guard's fail2ban-style bans (``gateway.edge.guard.Guard.auth_failed``).
        trusted_peers: the PBX's and trunks' networks, whose REGISTERs are refused
            unless ``config.register_from_trusted_peers``.
        flow_owner: this instance's ``[cluster] sip_uri``, recorded on the bindings
            of REGISTERs it takes into memory while the database is away (give the
            store the same: it records it on the others); None without ``[cluster]``.
    """

    def __init__(
        self,
        config: RegistrarConfig,
        store: BindingStore,
        *,
        clock: Callable[[], float] = time.time,
        random_bytes: Callable[[int], bytes] = os.urandom,
        on_auth_failure: Callable[[Endpoint, str], object] | None = None,
        trusted_peers: Sequence[Network] = (),
        flow_owner: str | None = None,
    ) -> None:
        self.config = config
        self.trusted_peers = trusted_peers
        self.on_auth_failure = on_auth_failure
        self.store = store
        self.clock = clock
        #: bindings and credentials, answered from memory while the database is away
        self.location = LocationService(store, clock=clock, flow_owner=flow_owner)
        self.random_bytes = random_bytes
        self.policy = config.expires_policy
        self.authenticator = DigestAuthenticator(
            realm=config.realm,
            secret=config.secret,
            algorithms=config.algorithms,
            nonce_lifetime=config.nonce_lifetime,
            accept_rfc2069=config.accept_rfc2069,
        )

    # ------------------------------------------------------------------ REGISTER

    async def handle(self, event: ServiceRequest) -> Response:
        """Answers one REGISTER (the gateway's ``services={"REGISTER": ...}`` hook).

        Args:
            event: the request, its source address and transaction.

        Returns:
            The final response: 200 with the bindings, 401 with challenges, 400, 403,
            404, 405, 416, 423, or 503 when the database is unavailable.
        """
        request = event.request
        if request.method != "REGISTER":
            return self._respond(request, 405, headers=(("Allow", "REGISTER"),))
        if not self.config.register_from_trusted_peers and in_networks(
            event.source.host, self.trusted_peers
        ):
            # RFC 3261 21.4.4 403: "Authorization will not help, and the request
            # SHOULD NOT be repeated." Not 401: a challenge would invite exactly the
            # password guessing this refuses (see RegistrarConfig).
            log.info(
                "REGISTER from %s refused: a trusted peer's address"
                " ([registrar] register_from_trusted_peers = false)",
                event.source.host_port,
            )
            return self._respond(request, 403, "Forbidden (trusted peer address)")
        try:
            update = parse_register(request, policy=self.policy)
            self._check_domain(request, update.aor_uri)
            username = await self._authenticate(request, event.source)
            if isinstance(username, Response):
                return username
            # RFC 3261 10.3 step 4: "the registrar MUST determine if the authenticated
            # user is authorized to modify registrations for this address-of-record."
            # Here a user may register its own AoR only.
            if update.aor_uri.user_unescaped != username:
                return self._respond(request, 403)
            check_min_expires(update, self.policy)
            bindings = await self.location.apply(update, event.source)
        except RegisterError as exc:
            return self._respond(request, exc.status, exc.reason, headers=exc.headers)
        except _DB_ERRORS:
            return self._database_unavailable(request)
        log.info(
            "REGISTER %s from %s: %d binding(s)", update.aor, event.source.host_port, len(bindings)
        )
        headers = [("Contact", format_contact(b)) for b in bindings]
        headers += path_echo(update)
        # RFC 3261 10.3 step 8: "The response SHOULD include a Date header field."
        headers.append(("Date", email.utils.formatdate(self.clock(), usegmt=True)))
        return self._respond(request, 200, headers=headers)

    def _check_domain(self, request: Request, aor_uri: SipUri) -> None:
        # RFC 3261 10.3 step 1 (Request-URI) and step 5 (To): we only keep bindings
        # for our domains. Not user-specific, so safe to say before authentication.
        domains = self.config.domains
        if not domains:
            return
        request_uri = parse_uri(request.uri)
        assert isinstance(request_uri, SipUri)  # parse_register checked the scheme
        if request_uri.host not in domains or aor_uri.host not in domains:
            raise RegisterError(404, "Domain Not Served")

    async def authenticate_call(self, request: Request, source: Endpoint) -> str | Response:
        """Authenticates a call (INVITE) with digest, as a proxy would (RFC 3261 22.3):
        Proxy-Authorization checked, 407 with Proxy-Authenticate when missing or
        stale, 403 when wrong (unknown users alike), 400 when malformed or for
        another resource (RFC 7616 3.4.6), 503 when the database is unavailable.

        Returns:
            The authenticated user name, or the response to send instead.
        """
        try:
            return await self._authenticate(request, source, proxy=True)
        except _DB_ERRORS:
            return self._database_unavailable(request)

    async def _authenticate(
        self, request: Request, source: Endpoint, *, proxy: bool = False
    ) -> str | Response:
        authenticator = self.authenticator
        header = "Proxy-Authorization" if proxy else "Authorization"
        try:
            chosen = authenticator.choose(request.headers.get_lines(header))
            if isinstance(chosen, AuthFailure):
                self._log_failure(request, source, chosen)
                return self._challenge(request, proxy=proxy)
            credentials = chosen
            # The same query for every plausible user name, then the same hashing (a
            # dummy HA1 for an unknown user): see DigestAuthenticator.verify.
            ha1 = None
            if plausible_username(credentials.username):
                ha1 = await self.location.get_ha1(
                    credentials.username, self.config.realm, credentials.algorithm
                )
            result = authenticator.verify(
                credentials,
                method=request.method,
                request_uri=request.uri,
                ha1=ha1,
                now=self.clock(),
            )
        except DigestError as exc:
            # RFC 7616 3.4.6: a digest-uri for another resource "SHOULD return a 400
            # Bad Request"; malformed credentials get the same (a challenge would
            # only bring them back).
            self._log_failure(request, source, exc.failure, detail=str(exc))
            return self._respond(request, 400, "Bad Authorization")
        if result.outcome is AuthOutcome.AUTHENTICATED:
            assert result.username is not None
            return result.username
        assert result.failure is not None
        self._log_failure(request, source, result.failure, username=credentials.username)
        if result.outcome is AuthOutcome.REJECTED:
            # A second 401 would make many phones resubmit the same wrong password in
            # a loop (and lock accounts upstream); 403 ends it. Same for unknown users.
            if self.on_auth_failure is not None:
                self.on_auth_failure(source, credentials.username)
            return self._respond(request, 403)
        return self._challenge(request, stale=result.outcome is AuthOutcome.STALE, proxy=proxy)

    def _database_unavailable(self, request: Request) -> Response:
        log.exception("registrar database unavailable")
        return self._respond(request, 503, headers=(("Retry-After", str(RETRY_AFTER_DB_DOWN)),))

    def _log_failure(
        self,
        request: Request,
        source: Endpoint,
        failure: AuthFailure,
        *,
        username: str | None = None,
        detail: str | None = None,
    ) -> None:
        # One line per failed authentication, at info: the first 401 of every
        # registration is one too, and an operator asking "why does this phone not
        # register" needs the reason without turning on debug. User names and
        # details come from the wire: %r keeps them on one line.
        who = "" if username is None else f" (user {username!r})"
        why = "" if detail is None else f": {detail[:200]!r}"
        log.info(
            "%s from %s not authenticated: %s%s%s",
            request.method,
            source.host_port,
            failure.value,
            who,
            why,
        )

    def _challenge(self, request: Request, *, stale: bool = False, proxy: bool = False) -> Response:
        values = self.authenticator.challenges(self.clock(), self.random_bytes(8), stale=stale)
        if proxy:
            return self._respond(request, 407, headers=[("Proxy-Authenticate", v) for v in values])
        return self._respond(request, 401, headers=[("WWW-Authenticate", v) for v in values])

    def _respond(
        self,
        request: Request,
        status: int,
        reason: str | None = None,
        *,
        headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
    ) -> Response:
        return build_response(
            request, status, reason, to_tag=self.random_bytes(8).hex(), headers=headers
        )

    # ------------------------------------------------------------------ lookup

    async def lookup(self, aor: str) -> list[Binding]:
        """Returns the current bindings of an AoR, best first (highest q, newest).

        Args:
            aor: a SIP URI naming the user (``sip:alice@voip.example.fi``, a
                Request-URI with parameters is fine) or an already canonical AoR.

        Returns:
            The unexpired bindings; empty when the user is not registered.

        Raises:
            ValueError: ``aor`` is not a sip/sips URI.
            LocationUnavailable: the database is away and this instance remembers no
                current binding of the AoR: nobody can tell whether it is registered.
        """
        try:
            uri = parse_uri(aor)
        except ParseError as exc:
            raise ValueError(f"not a SIP URI: {aor!r}") from exc
        if not isinstance(uri, SipUri):
            raise ValueError(f"not a SIP URI: {aor!r}")
        return await self.location.lookup(canonical_aor(uri))

    async def count_bindings(self) -> int:
        """Counts the unexpired bindings of every AoR, whichever instance took them.

        The table is shared by all instances (a phone refreshes through whichever
        instance it reaches), so this is the fleet's count, the same on each instance:
        the ``voipgw_registered_bindings`` gauge.

        Raises:
            asyncpg.PostgresError, OSError: the database is unavailable.
        """
        return await self.store.count_current()

    # ------------------------------------------------------------------ purge

    async def purge_forever(self) -> None:
        """Deletes expired bindings every ``purge_interval`` seconds until cancelled.

        Every instance may run it: the DELETE is idempotent. Database errors are
        logged and retried next round (the registrar keeps serving meanwhile).
        """
        while True:
            try:
                purged = await self.store.purge_expired()
            except asyncio.CancelledError:
                raise
            except _DB_ERRORS:
                # A database outage must not end the purge loop for good.
                log.warning("purging expired bindings failed", exc_info=True)
            else:
                if purged:
                    log.debug("purged %d expired binding(s)", purged)
            self.location.cache.forget_expired(self.clock())
            await asyncio.sleep(self.config.purge_interval)

    @contextlib.asynccontextmanager
    async def purging(self) -> AsyncIterator[None]:
        """Runs :meth:`purge_forever` in a task for the duration of the block."""
        task = asyncio.create_task(self.purge_forever(), name="registrar-purge")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
