"""``[registrar]``: realm, digest secret, digest algorithms, expiry bounds.

Example::

    [registrar]
    realm = "voip.example.fi"
    domains = ["voip.example.fi"]           # To/Request-URI hosts served; [] = any
    secret_file = "/etc/voipgw/digest.key"  # shared by every gateway instance
    algorithms = ["MD5"]                    # offered in this order (RFC 8760 2.4)
    nonce_lifetime = 300.0                  # seconds
    min_expires = 60                        # 423 below (seconds)
    max_expires = 7200                      # longer requests are shortened
    default_expires = 3600
    accept_rfc2069 = true                   # credentials without qop (RFC 3261 22.4)
    purge_interval = 60.0                   # seconds between expired-row purges
    authenticate_calls = true               # 407 for calls from untrusted sources
    register_from_trusted_peers = false     # REGISTER from a PBX/trunk address: 403

``algorithms``: the trade-off
-----------------------------

The registrar sends one challenge per algorithm, in the listed order, and RFC 8760 2.4
has a client answer the first one it supports. Measured on loopback (2026-12) with
the clients of the interop tests, for each offer:

=====================  ======================  ======================  ==========
client                 SHA-256, MD5            MD5, SHA-256            MD5
=====================  ======================  ======================  ==========
baresip 1.0 (Debian)   fails: "Function not    fails: "Function not    MD5
                       implemented"            implemented"
SIPp 3.6               fails: "authentication  MD5                     MD5
                       must use MD5"
linphonec 5.1          SHA-256                 MD5                     MD5
pyVoIP 1.6             MD5, no qop (RFC 2069)  MD5, no qop             MD5, no qop
=====================  ======================  ======================  ==========

baresip 1.0's libre refuses the whole 401 when any challenge names an algorithm
other than MD5, whatever the order, and many deployed phones do the same; SIPp only
reads the first challenge. So the default is ``["MD5"]``: every client registers.

MD5's cost: a leaked credentials table (H(A1) per user) and a captured exchange are
cheaper to attack offline than with SHA-256, and MD5 H(A1) values are kept. Deployments
whose phones all do SHA-256 (linphone, recent Yealink/Snom/Polycom firmware) should
set ``["SHA-256"]``, or ``["SHA-256", "MD5"]`` while migrating (SHA-256 clients take
it, MD5-only clients that skip unknown challenges take MD5; libre-based phones such as
baresip 1.0 then fail). Passwords are provisioned for every algorithm
(``voipgw users set-password``), so changing the list needs no re-provisioning.

``accept_rfc2069``: RFC 3261 22.4, "SIP servers supporting RFC 2617 MUST ensure they
are backwards compatible with RFC 2069"; pyVoIP answers that way. Such credentials
carry no client nonce and no nonce count, so each nonce authenticates one request
only (gateway/registrar/digest.py); set it false when no client needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gateway.registrar.bindings import ONE_HOUR, ExpiresPolicy
from gateway.registrar.digest import DEFAULT_ALGORITHMS, Algorithm
from routing.configfields import ConfigError, Table

#: Shortest accepted secret, in bytes (the HMAC key material of every nonce).
MIN_SECRET_BYTES = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrarConfig:
    """Registrar settings.

    Attributes:
        realm: digest realm of the challenges (credentials are stored per realm).
        domains: hosts whose AoRs we keep (To and Request-URI host); empty for any.
        secret: HMAC key material for nonces; the same on every instance.
        algorithms: digest algorithms offered, most preferred first (MD5 only by
            default: see the module docstring for what each client does).
        nonce_lifetime: seconds a nonce is accepted (then ``stale=true``).
        min_expires: shortest registration interval, seconds (423 below it).
        max_expires: longest interval granted, seconds.
        default_expires: interval when the REGISTER names none, seconds.
        accept_rfc2069: accept credentials without qop/nc/cnonce.
        purge_interval: seconds between deletions of expired bindings.
    """

    realm: str
    domains: tuple[str, ...] = ()
    secret: bytes = field(repr=False)
    algorithms: tuple[Algorithm, ...] = DEFAULT_ALGORITHMS
    nonce_lifetime: float = 300.0
    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600
    accept_rfc2069: bool = True
    purge_interval: float = 60.0
    authenticate_calls: bool = True
    """Ordinary calls from sources that are not trusted peers must authenticate with
    digest (407 Proxy-Authenticate, RFC 3261 22.3); emergency calls never do."""
    register_from_trusted_peers: bool = False
    """Accept REGISTER from the addresses of trusted peers (``[upstream]`` and
    ``[guard] trusted_peers``: the PBX and trunks). Off by default: a PBX or trunk
    does not register phones here, so a REGISTER from its address is someone
    guessing passwords from (or spoofing) the one address the gateway trusts most;
    it is answered 403 (RFC 3261 21.4.4: "Authorization will not help"). Turn it on
    only when phones really sit behind a trusted address (an office NAT listed as a
    trusted peer)."""

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET_BYTES:
            raise ValueError(f"secret must be at least {MIN_SECRET_BYTES} bytes")
        if not self.algorithms:
            raise ValueError("at least one algorithm is required")
        self.expires_policy  # noqa: B018 - validates the interval bounds

    @property
    def expires_policy(self) -> ExpiresPolicy:
        """The interval bounds as the pure REGISTER functions take them."""
        return ExpiresPolicy(
            min_expires=self.min_expires,
            max_expires=self.max_expires,
            default_expires=self.default_expires,
        )

    @classmethod
    def from_table(cls, table: Table) -> RegistrarConfig:
        """Reads a ``[registrar]`` table.

        Args:
            table: the table (unknown keys are rejected).

        Returns:
            The config.

        Raises:
            ConfigError: a field is missing or invalid; the message names it.
        """
        realm = table.str("realm", required=True)
        if not realm or '"' in realm or "\\" in realm:
            raise ConfigError(table.field("realm"), "must be non-empty, without quotes")
        secret = _read_secret(table)
        algorithms: list[Algorithm] = []
        for i, name in enumerate(
            table.str_list("algorithms", tuple(a.value for a in DEFAULT_ALGORITHMS))
        ):
            algorithm = Algorithm.from_token(name)
            if algorithm is None or algorithm in algorithms:
                raise ConfigError(
                    f"{table.field('algorithms')}[{i}]",
                    f"expected SHA-256 or MD5, each once, got {name!r}",
                )
            algorithms.append(algorithm)
        if not algorithms:
            raise ConfigError(table.field("algorithms"), "at least one algorithm is required")
        min_expires = table.int("min_expires", 60, min=1, max=ONE_HOUR)
        max_expires = table.int("max_expires", 7200, min=min_expires, max=2**31 - 1)
        default_expires = table.int("default_expires", 3600, min=min_expires, max=max_expires)
        config = cls(
            realm=realm,
            domains=tuple(str.lower(d) for d in table.str_list("domains")),
            secret=secret,
            algorithms=tuple(algorithms),
            nonce_lifetime=table.float("nonce_lifetime", 300.0, min=1, max=86400),
            min_expires=min_expires,
            max_expires=max_expires,
            default_expires=default_expires,
            accept_rfc2069=table.bool("accept_rfc2069", True),
            purge_interval=table.float("purge_interval", 60.0, min=1, max=86400),
            authenticate_calls=table.bool("authenticate_calls", True),
            register_from_trusted_peers=table.bool("register_from_trusted_peers", False),
        )
        table.reject_unknown()
        return config


def _read_secret(table: Table) -> bytes:
    text = table.opt_str("secret")
    path = table.opt_str("secret_file")
    if (text is None) == (path is None):
        raise ConfigError(table.field("secret"), "give exactly one of secret or secret_file")
    if path is not None:
        try:
            data = Path(path).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(table.field("secret_file"), f"cannot read: {exc}") from None
        key = "secret_file"
    else:
        assert text is not None
        data = text.encode("utf-8")
        key = "secret"
    if len(data) < MIN_SECRET_BYTES:
        raise ConfigError(table.field(key), f"must be at least {MIN_SECRET_BYTES} bytes")
    return data
