"""HTTP Digest authentication for SIP (RFC 3261 22, RFC 7616, RFC 8760), sans-IO.

Theory of operation
-------------------

*Challenge.* A request without usable credentials is answered 401 with one
``WWW-Authenticate: Digest`` value per configured algorithm, in the configured order:
RFC 8760 section 2.4 ("the UAS ... MUST add [challenges] in the order of preference,
with the most preferred algorithm first") and RFC 7616 section 3.7. The default offer
is MD5 alone (:data:`DEFAULT_ALGORITHMS`, why in gateway/registrar/config.py). Every
challenge offers ``qop="auth"`` only (auth-int would make us hash bodies; SIP clients
rarely do it).

*Why it failed.* Every way credentials fail has an :class:`AuthFailure`, whose value is
the text of the registrar's one info line about it; a wrong password and an unknown
user share one.

*Stateless nonces.* A nonce is ``base64url(issued_ms || salt || mac)`` where ``mac`` is
an HMAC-SHA-256 over the realm, the issue time and the salt under a key derived from
the server secret. Any gateway instance that shares the secret can check a nonce that
another instance issued, with no shared nonce table: the signature proves we made it,
the embedded time says how old it is. An expired nonce with an otherwise *correct*
response is answered with a fresh challenge carrying ``stale=true`` (RFC 7616 3.3:
"stale: ... indicating that the previous request from the client was rejected because
the nonce value was stale ... the server should only set stale to true if it receives
a request for which the nonce is invalid and with a valid digest for that nonce").

*Replay.* Stateless nonces cannot remember the nonce counts they have seen across
instances. :class:`NonceCounts` keeps, per instance and within a memory bound, the
highest ``nc`` seen for each nonce; a correct response that does not raise it is a
replay and is answered like a stale nonce (the genuine client just retries with a new
nonce; a replayer learns nothing). Credentials without qop (RFC 2069) carry no ``nc``:
their nonce counts as used once (``nc`` 1), so each such nonce authenticates one
request. A replay sent to another instance is caught only by the nonce lifetime, which
is why that lifetime should stay short.

*No enumeration.* :meth:`DigestAuthenticator.verify` takes ``ha1=None`` for an unknown
user and then hashes with a dummy HA1 derived from the secret, so the work done and the
outcome (:attr:`AuthOutcome.REJECTED`) are the same as for a known user with a wrong
password. Comparisons use :func:`hmac.compare_digest`.

Nothing here reads the clock or draws random numbers: ``now`` (wall-clock seconds,
shared between instances, so ``time.time()`` and not the loop's monotonic clock) and
the nonce salt come from the caller.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import struct
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.sip.errors import ParseError
from gateway.sip.headers import DEFAULT_QUOTED, format_auth, parse_auth
from gateway.sip.uri import SipUri, parse_uri

#: Nonce layout: 8-byte issue time in milliseconds, 8-byte salt, 16-byte HMAC tag.
_NONCE_STRUCT: Final = struct.Struct(">Q8s")
_MAC_LENGTH: Final = 16
_NONCE_BYTES: Final = _NONCE_STRUCT.size + _MAC_LENGTH

#: Seconds a nonce may claim to be from the future (clock skew between instances).
MAX_CLOCK_SKEW: Final = 30.0

#: Distinct nonces whose highest nonce count one instance remembers.
MAX_TRACKED_NONCES: Final = 65_536

#: Longest user name looked up, in characters. Longer ones (and ones PostgreSQL cannot
#: store: NUL, lone surrogates) are unknown users without a query.
MAX_USERNAME_LENGTH: Final = 256

#   nc-value  =  8LHEX     (RFC 7616 3.4)
_NC_RE: Final = re.compile(r"[0-9a-fA-F]{8}")

#   credentials  =  auth-scheme LWS auth-params    (RFC 3261 25.1, folding replaced)
_SCHEME_RE: Final = re.compile(r"[ \t]*([^ \t]*)")

#: A challenge's qop is a quoted-string; in credentials it is a token (RFC 7616 3.3/3.4).
_CHALLENGE_QUOTED: Final = DEFAULT_QUOTED | {"qop"}


class Algorithm(enum.Enum):
    """Digest algorithms we implement (RFC 8760 section 3 registry names)."""

    SHA_256 = "SHA-256"
    MD5 = "MD5"

    def hash(self, text: str) -> str:
        """Returns the lower-case hex digest of ``text`` (UTF-8, RFC 7616 3.4.4).

        Args:
            text: the string to hash.

        Returns:
            32 (MD5) or 64 (SHA-256) lower-case hex digits.
        """
        data = text.encode("utf-8", "surrogateescape")
        if self is Algorithm.MD5:
            return hashlib.md5(data, usedforsecurity=False).hexdigest()
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def from_token(cls, token: str | None) -> Algorithm | None:
        """Returns the algorithm named by an ``algorithm`` parameter, or None if unknown.

        RFC 7616 3.3: "If this is not present, it is assumed to be 'MD5'."
        """
        if token is None:
            return cls.MD5
        for algorithm in cls:
            if algorithm.value.lower() == token.lower():
                return algorithm
        return None


class AuthFailure(enum.Enum):
    """Why credentials did not authenticate; the value is the registrar's log text."""

    NO_CREDENTIALS = "no credentials (challenged)"
    """No Digest credentials at all: the usual first request of every client."""
    UNKNOWN_ALGORITHM = "algorithm not offered"
    """Digest with an algorithm we did not offer (RFC 8760 2.4 lets us challenge)."""
    WRONG_REALM = "wrong realm"
    """Digest for another realm only (RFC 3261 22.4: not ours to check)."""
    MALFORMED = "malformed credentials"
    """Digest credentials that break the grammar or lack a parameter."""
    URI_MISMATCH = "digest uri does not name the Request-URI"
    """RFC 7616 3.4.6: the digest-uri names another resource."""
    FOREIGN_OPAQUE = "opaque not ours"
    """The opaque we send was not echoed back unchanged."""
    QOP_NOT_OFFERED = "qop not offered"
    """A qop other than auth, or none while RFC 2069 credentials are refused."""
    FORGED_NONCE = "nonce not issued here"
    """Not a nonce of ours (another realm, a rotated secret, garbage)."""
    STALE_NONCE = "stale nonce"
    """A correct response to a nonce past its lifetime."""
    REPLAYED = "nonce count replayed"
    """A correct response whose nonce count did not rise (RFC 7616 3.4)."""
    WRONG_PASSWORD = "wrong password or unknown user"
    """One text for both, so the log cannot enumerate users either."""


class DigestError(ValueError):
    """Credentials that are Digest but malformed: answered 400 (RFC 7616 3.4.6).

    Attributes:
        status_hint: the status the UAS answers with.
        failure: why, for the log.
    """

    status_hint = 400

    def __init__(self, message: str, failure: AuthFailure = AuthFailure.MALFORMED) -> None:
        super().__init__(message)
        self.failure = failure


def compute_ha1(username: str, realm: str, password: str, algorithm: Algorithm) -> str:
    """Computes the HA1 to store for a user (provisioning), never the password itself.

    RFC 7616 3.4.2: ``A1 = unq(username) ":" unq(realm) ":" passwd``; the registrar keeps
    ``H(A1)`` per realm and algorithm, so a leaked table does not reveal passwords and
    cannot be replayed in another realm.

    Args:
        username: the SIP user name (as the client will send it).
        realm: the realm of the challenges (``RegistrarConfig.realm``).
        password: the clear-text password.
        algorithm: the hash.

    Returns:
        H(A1) as lower-case hex.
    """
    return algorithm.hash(f"{username}:{realm}:{password}")


def digest_response(
    *,
    ha1: str,
    algorithm: Algorithm,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """Computes the ``response`` a client sends (RFC 7616 3.4.1, RFC 2617 3.2.2.1).

    Args:
        ha1: H(A1) as hex.
        algorithm: the hash.
        method: the request method ("REGISTER").
        uri: the ``uri`` parameter exactly as the client sent it.
        nonce: the server nonce.
        qop: "auth", or None for the RFC 2069 form (no qop, nc, cnonce).
        nc: nonce count, 8 hex digits (with qop).
        cnonce: client nonce (with qop).

    Returns:
        The expected response as lower-case hex.
    """
    ha2 = algorithm.hash(f"{method}:{uri}")
    if qop is None:
        return algorithm.hash(f"{ha1}:{nonce}:{ha2}")
    return algorithm.hash(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DigestCredentials:
    """One ``Authorization: Digest`` value (RFC 7616 3.4).

    Attributes:
        username: the user name.
        realm: the realm the client answers.
        nonce: the nonce it answers.
        uri: the digest-uri, as sent (hashed as is).
        response: the client's response, lower-cased hex.
        algorithm: the algorithm (MD5 when the parameter is absent).
        qop: "auth", another token, or None (RFC 2069 form).
        nc: nonce count (8 hex digits) with qop, else None.
        cnonce: client nonce with qop, else None.
        opaque: the opaque value echoed back, or None.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: Algorithm
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None


def parse_credentials(value: str) -> DigestCredentials | None:
    """Parses an Authorization value.

    Args:
        value: the header value.

    Returns:
        The credentials, or None when the scheme is not Digest or the algorithm is one
        we do not implement (both are answered with a challenge: RFC 4475 3.3.7
        regaut01, "NoOneKnowsThisScheme", must get a 401).

    Raises:
        DigestError: Digest credentials that break the grammar or lack a required
            parameter (username, realm, nonce, uri, response; nc and cnonce with qop).
    """
    # The scheme decides first: another scheme's syntax (Basic's token68, RFC 4475
    # regaut01's opaque data) is none of our business, and it gets a challenge.
    scheme = _SCHEME_RE.match(value)
    if scheme is None or scheme[1].lower() != "digest":
        return None
    try:
        _, params = parse_auth(value)
    except ParseError as exc:
        raise DigestError(f"malformed Authorization: {exc}") from None
    algorithm = Algorithm.from_token(params.get("algorithm"))
    if algorithm is None:
        return None
    missing = [n for n in ("username", "realm", "nonce", "uri", "response") if n not in params]
    qop = params.get("qop")
    if qop is not None:
        missing += [n for n in ("nc", "cnonce") if n not in params]
    if missing:
        raise DigestError(f"Digest credentials lack {', '.join(missing)}")
    nc = params.get("nc")
    if nc is not None and _NC_RE.fullmatch(nc) is None:
        raise DigestError(f"Digest nc is not 8 hex digits: {nc!r}")
    return DigestCredentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"].lower(),
        algorithm=algorithm,
        qop=qop,
        nc=nc,
        cnonce=params.get("cnonce"),
        opaque=params.get("opaque"),
    )


class NonceState(enum.Enum):
    """What a received nonce turned out to be."""

    VALID = "valid"
    """Ours, and within its lifetime."""
    STALE = "stale"
    """Ours, but too old (or implausibly far in the future)."""
    FORGED = "forged"
    """Not made with our secret for this realm (or not a nonce at all)."""


class NonceCounts:
    """Highest nonce count seen per nonce, in a bounded LRU (one gateway instance).

    Args:
        limit: most nonces remembered; the least recently used are forgotten first.
    """

    def __init__(self, limit: int = MAX_TRACKED_NONCES) -> None:
        self._limit = limit
        self._seen: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def advance(self, nonce: str, nc: int) -> bool:
        """Records ``nc`` for ``nonce`` if it is higher than any seen before.

        RFC 7616 3.4: "The nc value is the hexadecimal count of the number of requests
        (including the current request) that the client has sent with the nonce value
        in this request ... the server can detect request replays by maintaining its
        own copy of this count -- if the same nc value is seen twice, then the request
        is a replay."

        Args:
            nonce: the nonce.
            nc: the nonce count as an integer.

        Returns:
            False for a replay (``nc`` not above the highest seen), True otherwise.
        """
        last = self._seen.get(nonce)
        if last is not None and nc <= last:
            self._seen.move_to_end(nonce)
            return False
        self._seen[nonce] = nc
        self._seen.move_to_end(nonce)
        while len(self._seen) > self._limit:
            self._seen.popitem(last=False)
        return True


#: The default offer: what every client we measured answers (gateway/registrar/config.py).
DEFAULT_ALGORITHMS: Final[tuple[Algorithm, ...]] = (Algorithm.MD5,)


class AuthOutcome(enum.Enum):
    """The verdict on one request's credentials, and so the answer to give."""

    AUTHENTICATED = "authenticated"
    """Correct response on a valid nonce: go on."""
    CHALLENGE = "challenge"
    """No usable credentials: 401 with fresh challenges."""
    STALE = "stale"
    """Correct response, but the nonce expired or nc was replayed: 401 stale=true."""
    REJECTED = "rejected"
    """Wrong response (wrong password or unknown user alike): 403."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResult:
    """What :meth:`DigestAuthenticator.verify` decided.

    Attributes:
        outcome: the verdict.
        username: the authenticated user (AUTHENTICATED only), else None.
        failure: why it did not authenticate, else None.
    """

    outcome: AuthOutcome
    username: str | None = None
    failure: AuthFailure | None = None


class DigestAuthenticator:
    """Issues challenges and checks credentials for one realm.

    Args:
        realm: the protection realm (RFC 7616 3.3; commonly the SIP domain).
        secret: server secret shared by every gateway instance (at least 16 bytes).
        algorithms: algorithms to offer, most preferred first.
        nonce_lifetime: seconds a nonce stays valid.
        accept_rfc2069: accept credentials without qop (RFC 2069 / RFC 2617 3.2.2.1
            compatibility; needed by some simple clients, weaker: no cnonce, no nc).
        nonce_counts: replay tracker; a fresh one by default.

    Raises:
        ValueError: a short secret, no algorithms, or a non-positive lifetime.
    """

    def __init__(
        self,
        *,
        realm: str,
        secret: bytes,
        algorithms: Sequence[Algorithm] = (Algorithm.SHA_256, Algorithm.MD5),
        nonce_lifetime: float = 300.0,
        accept_rfc2069: bool = False,
        nonce_counts: NonceCounts | None = None,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the digest secret must be at least 16 bytes")
        if not algorithms:
            raise ValueError("at least one digest algorithm is required")
        if nonce_lifetime <= 0:
            raise ValueError("nonce_lifetime must be positive")
        self.realm = realm
        self.algorithms = tuple(algorithms)
        self.nonce_lifetime = nonce_lifetime
        self.accept_rfc2069 = accept_rfc2069
        self.nonce_counts = nonce_counts if nonce_counts is not None else NonceCounts()
        # Separate keys per use, so a value made for one purpose never verifies as
        # another (a nonce tag is not an opaque, nor a dummy HA1).
        self._nonce_key = hmac.digest(secret, b"voipgw digest nonce", "sha256")
        self._dummy_key = hmac.digest(secret, b"voipgw digest dummy ha1", "sha256")
        opaque_mac = hmac.digest(secret, b"voipgw digest opaque " + _b(realm), "sha256")
        self.opaque = _b64(opaque_mac[:12])

    # ------------------------------------------------------------------ nonces

    def make_nonce(self, now: float, salt: bytes) -> str:
        """Returns a signed nonce issued at ``now``.

        Args:
            now: wall-clock time in seconds (Unix epoch).
            salt: 8 random bytes (``os.urandom(8)``), so two nonces issued in the same
                millisecond differ.

        Returns:
            43 base64url characters (a valid token and quoted-string content).

        Raises:
            ValueError: ``salt`` is not 8 bytes.
        """
        if len(salt) != 8:
            raise ValueError("nonce salt must be 8 bytes")
        payload = _NONCE_STRUCT.pack(max(0, int(now * 1000)), salt)
        return _b64(payload + self._nonce_mac(payload))

    def check_nonce(self, nonce: str, now: float) -> NonceState:
        """Says whether a nonce is ours and fresh.

        Args:
            nonce: the nonce from the credentials.
            now: wall-clock time in seconds.

        Returns:
            VALID, STALE or FORGED.
        """
        raw = _unb64(nonce)
        if raw is None or len(raw) != _NONCE_BYTES:
            return NonceState.FORGED
        payload, mac = raw[: _NONCE_STRUCT.size], raw[_NONCE_STRUCT.size :]
        if not hmac.compare_digest(mac, self._nonce_mac(payload)):
            return NonceState.FORGED
        issued_ms, _ = _NONCE_STRUCT.unpack(payload)
        age = now - issued_ms / 1000
        if age > self.nonce_lifetime or age < -MAX_CLOCK_SKEW:
            return NonceState.STALE
        return NonceState.VALID

    def _nonce_mac(self, payload: bytes) -> bytes:
        message = _b(self.realm) + b"\x00" + payload
        return hmac.digest(self._nonce_key, message, "sha256")[:_MAC_LENGTH]

    # ------------------------------------------------------------------ challenges

    def challenges(self, now: float, salt: bytes, *, stale: bool = False) -> list[str]:
        """Returns the WWW-Authenticate values of a 401, most preferred algorithm first.

        All challenges share one nonce: RFC 8760 section 2.4 lets a client pick any of
        them, and one nonce keeps the response the same size per algorithm.

        Args:
            now: wall-clock time in seconds.
            salt: 8 random bytes for the nonce.
            stale: add ``stale=true`` (RFC 7616 3.3).

        Returns:
            One header value per configured algorithm.
        """
        nonce = self.make_nonce(now, salt)
        values = []
        for algorithm in self.algorithms:
            params = {
                "realm": self.realm,
                "nonce": nonce,
                "opaque": self.opaque,
                "algorithm": algorithm.value,
                "qop": "auth",
            }
            if stale:
                params["stale"] = "true"
            values.append(format_auth("Digest", params, quoted=_CHALLENGE_QUOTED))
        return values

    # ------------------------------------------------------------------ credentials

    def select(self, values: Iterable[str]) -> DigestCredentials | None:
        """Picks the credentials meant for us among Authorization header values.

        Args:
            values: every Authorization header value of the request.

        Returns:
            What :meth:`choose` picks, or None (answer with a challenge).

        Raises:
            DigestError: Digest credentials are malformed.
        """
        chosen = self.choose(values)
        return None if isinstance(chosen, AuthFailure) else chosen

    def choose(self, values: Iterable[str]) -> DigestCredentials | AuthFailure:
        """Picks the credentials meant for us, or says why there are none.

        RFC 3261 22.4: a request may carry credentials for several realms; the server
        uses the one whose realm it owns.

        Args:
            values: every Authorization (or Proxy-Authorization) value of the request.

        Returns:
            The first Digest credentials for our realm with an algorithm we offer;
            otherwise why none fits (answer with a challenge): UNKNOWN_ALGORITHM or
            WRONG_REALM when some Digest credentials came, else NO_CREDENTIALS.

        Raises:
            DigestError: Digest credentials are malformed.
        """
        failure = AuthFailure.NO_CREDENTIALS
        for value in values:
            credentials = parse_credentials(value)
            if credentials is None:
                if _is_digest(value):
                    failure = AuthFailure.UNKNOWN_ALGORITHM
                continue
            if credentials.realm != self.realm:
                if failure is AuthFailure.NO_CREDENTIALS:
                    failure = AuthFailure.WRONG_REALM
                continue
            if credentials.algorithm in self.algorithms:
                return credentials
            failure = AuthFailure.UNKNOWN_ALGORITHM
        return failure

    def dummy_ha1(self, username: str, algorithm: Algorithm) -> str:
        """Returns a secret-derived HA1 for a user that does not exist.

        Hashing with it costs what hashing with a real HA1 costs, and no password can
        produce it without the secret, so an unknown user fails the same way, at the
        same speed, as a wrong password.
        """
        mac = hmac.digest(self._dummy_key, _b(f"{username}:{self.realm}"), "sha256")
        return algorithm.hash(mac.hex())

    def verify(
        self,
        credentials: DigestCredentials,
        *,
        method: str,
        request_uri: str,
        ha1: str | None,
        now: float,
    ) -> AuthResult:
        """Checks credentials selected by :meth:`select`.

        Args:
            credentials: the client's credentials.
            method: the request method (A2 uses it, RFC 7616 3.4.3).
            request_uri: the Request-URI; the digest-uri must name the same resource.
            ha1: the stored H(A1) for (username, realm, algorithm), or None when the
                user is unknown (a dummy is used, see :meth:`dummy_ha1`).
            now: wall-clock time in seconds.

        Returns:
            The outcome, and the user name when authenticated.

        Raises:
            DigestError: the digest-uri names another resource than the Request-URI
                (RFC 7616 3.4.6: "the server SHOULD ... return 400 Bad Request"),
                with ``failure`` URI_MISMATCH.
        """
        if not _same_resource(credentials.uri, request_uri):
            raise DigestError(
                f"digest uri {credentials.uri!r} does not name the Request-URI",
                AuthFailure.URI_MISMATCH,
            )
        if credentials.opaque is not None and not hmac.compare_digest(
            _b(credentials.opaque), _b(self.opaque)
        ):
            return _challenge(AuthFailure.FOREIGN_OPAQUE)
        if credentials.qop is None:
            if not self.accept_rfc2069:
                return _challenge(AuthFailure.QOP_NOT_OFFERED)
        elif credentials.qop.lower() != "auth":
            # We only offer qop=auth: anything else does not answer our challenge.
            return _challenge(AuthFailure.QOP_NOT_OFFERED)
        state = self.check_nonce(credentials.nonce, now)
        if state is NonceState.FORGED:
            # Not a nonce of ours (another realm, a rotated secret, garbage): a new
            # challenge, the same for every user name.
            return _challenge(AuthFailure.FORGED_NONCE)
        # Always hash, known user or not: equal work and an equal answer.
        key = (
            ha1 if ha1 is not None else self.dummy_ha1(credentials.username, credentials.algorithm)
        )
        expected = digest_response(
            ha1=key,
            algorithm=credentials.algorithm,
            method=method,
            uri=credentials.uri,
            nonce=credentials.nonce,
            qop=None if credentials.qop is None else "auth",
            nc=credentials.nc,
            cnonce=credentials.cnonce,
        )
        correct = hmac.compare_digest(_b(expected), _b(credentials.response))
        if not correct or ha1 is None:
            return AuthResult(outcome=AuthOutcome.REJECTED, failure=AuthFailure.WRONG_PASSWORD)
        if state is NonceState.STALE:
            return AuthResult(outcome=AuthOutcome.STALE, failure=AuthFailure.STALE_NONCE)
        # RFC 2069 credentials have no nc: count their one use as nc 1, so the same
        # nonce cannot authenticate a second (replayed) request on this instance.
        nc = 1 if credentials.nc is None else int(credentials.nc, 16)
        if not self.nonce_counts.advance(credentials.nonce, nc):
            return AuthResult(outcome=AuthOutcome.STALE, failure=AuthFailure.REPLAYED)
        return AuthResult(outcome=AuthOutcome.AUTHENTICATED, username=credentials.username)


def _challenge(failure: AuthFailure) -> AuthResult:
    return AuthResult(outcome=AuthOutcome.CHALLENGE, failure=failure)


def _is_digest(value: str) -> bool:
    scheme = _SCHEME_RE.match(value)
    return scheme is not None and scheme[1].lower() == "digest"


def plausible_username(username: str) -> bool:
    """Whether a user name can be looked up at all.

    PostgreSQL text holds no NUL and only valid UTF-8, and no provisioned user has a
    name of kilobytes: such names are unknown users, answered without a query (they
    would otherwise fail in the driver, not as a wrong password).

    Args:
        username: the ``username`` parameter as received.

    Returns:
        False when it cannot name a provisioned user.
    """
    if len(username) > MAX_USERNAME_LENGTH or "\x00" in username:
        return False
    try:
        username.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _same_resource(digest_uri: str, request_uri: str) -> bool:
    """True when the digest-uri names the Request-URI's resource.

    RFC 7616 3.4.6: "The authenticating server MUST assure that the resource
    designated by the "uri" parameter is the same as the resource specified in the
    Request-Line". Two forms name it:

    * the Request-URI itself, compared on scheme, user, host and port, ignoring
      parameters: clients differ in whether they copy ``;transport=`` into the
      digest-uri (pyVoIP adds it), and the response hash covers the digest-uri as sent;
    * the server the Request-URI is addressed to, with no user part
      (``sip:host:port``, SIPp's form). What a registrar or proxy protects is its own
      service: RFC 3261 22.1, "the realm string alone defines the protection domain",
      and a 407 challenges for the proxy, not for the callee. Such credentials do not
      bind the user part: a man in the middle, or a replay to another instance within
      the nonce lifetime (the nonce count stops it on the same instance, see the
      module docstring), could send them with another callee. Clients that put the
      Request-URI in the digest-uri (baresip, linphone, pyVoIP) keep that binding.
    """
    if digest_uri == request_uri:
        return True
    try:
        a, b = parse_uri(digest_uri), parse_uri(request_uri)
    except ParseError:
        return False
    if not (isinstance(a, SipUri) and isinstance(b, SipUri)):
        return False
    if (a.scheme, a.host, a.port) != (b.scheme, b.host, b.port):
        return False
    return a.user_unescaped in (b.user_unescaped, None)


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    if not text.isascii():
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
