"""SIP, SIPS, tel and other URIs (RFC 3261 19.1 and 25.1, RFC 3966, RFC 2396).

:func:`parse_uri` turns URI text into one of three frozen values:

* :class:`SipUri` for ``sip:`` and ``sips:``, split into user, password, host, port,
  parameters and headers, each kept escaped exactly as on the wire;
* :class:`TelUri` for ``tel:`` (RFC 3966);
* :class:`AbsoluteUri` for every other scheme (``urn:service:sos``, ``http:`` ...).
  An unknown scheme is not a syntax error: a UAS answers 416 (RFC 3261 8.2.2.1).

:func:`uri_equal` implements the comparison rules of RFC 3261 19.1.4.

The regular expression fragments below are the RFC 3261 25.1 ABNF; they are shared
with :mod:`gateway.sip.headers`, whose name-addr and Via grammars embed them.
Repetitions are possessive (``++``/``*+``) wherever the grammar is unambiguous, so a
hostile input cannot make a pattern backtrack for long.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Final
from urllib.parse import unquote

from gateway.sip.errors import ParseError, d

# alphanum / mark / escaped (RFC 3261 25.1)
#   unreserved  =  alphanum / mark
#   mark        =  "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
#   escaped     =  "%" HEXDIG HEXDIG
UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
ESCAPED = r"%[0-9A-Fa-f]{2}"

#   user             =  1*( unreserved / escaped / user-unreserved )
#   user-unreserved  =  "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
USER = rf"(?:[{UNRESERVED}&=+$,;?/]++|{ESCAPED})++"
#   password         =  *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
PASSWORD = rf"(?:[{UNRESERVED}&=+$,]++|{ESCAPED})*+"

#   hostname         =  *( domainlabel "." ) toplabel [ "." ]
#   domainlabel      =  alphanum / alphanum *( alphanum / "-" ) alphanum
#   toplabel         =  ALPHA / ALPHA *( alphanum / "-" ) alphanum
# The toplabel is allowed to start with a digit so that IPv4address (1*3DIGIT "."
# ...) is covered by the same pattern; the typed parse needs no distinction.
_LABEL = r"[A-Za-z0-9]++(?:-++[A-Za-z0-9]++)*+"
HOSTNAME = rf"(?:{_LABEL}\.)*{_LABEL}\.?"
#   IPv6reference    =  "[" IPv6address "]"   (checked by ipaddress in parse_uri)
IPV6_REFERENCE = r"\[[0-9A-Fa-f:.]++\]"
HOST = rf"(?:{HOSTNAME}|{IPV6_REFERENCE})"
#   port             =  1*DIGIT
PORT = r"[0-9]++"

#   paramchar        =  param-unreserved / unreserved / escaped
#   param-unreserved =  "[" / "]" / "/" / ":" / "&" / "+" / "$"
PARAMCHARS = rf"(?:[{UNRESERVED}\[\]/:&+$]++|{ESCAPED})++"
#   uri-parameters   =  *( ";" uri-parameter)
#   other-param      =  pname [ "=" pvalue ]
URI_PARAMS = rf"(?:;{PARAMCHARS}(?:={PARAMCHARS})?)*+"
#   headers          =  "?" header *( "&" header )
#   header           =  hname "=" hvalue
#   hnv-unreserved   =  "[" / "]" / "/" / "?" / ":" / "+" / "$"
_HCHAR = rf"[{UNRESERVED}\[\]/?:+$]++|{ESCAPED}"
_URI_HEADERS_BODY = rf"(?:{_HCHAR})++=(?:{_HCHAR})*+(?:&(?:{_HCHAR})++=(?:{_HCHAR})*+)*+"
URI_HEADERS = rf"(?:\?{_URI_HEADERS_BODY})"

#   SIP-URI  =  "sip:" [ userinfo ] hostport uri-parameters [ headers ]
#   userinfo =  ( user / telephone-subscriber ) [ ":" password ] "@"
SIP_URI = rf"(?i:sips?):(?:{USER}(?::{PASSWORD})?@)?{HOST}(?::{PORT})?{URI_PARAMS}{URI_HEADERS}?"

#   absoluteURI  =  scheme ":" ( hier-part / opaque-part )      (RFC 2396)
#   scheme       =  ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
#   uric         =  reserved / unreserved / escaped
SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*+"
_URIC = rf"[{UNRESERVED};/?:@&=+$,]++|{ESCAPED}"
ABSOLUTE_URI = rf"{SCHEME}:(?:{_URIC})++"
#   addr-spec  =  SIP-URI / SIPS-URI / absoluteURI
# A sip/sips URI must follow the SIP-URI grammar, not the looser absoluteURI one.
ADDR_SPEC = rf"(?:{SIP_URI}|(?!(?i:sips?):){ABSOLUTE_URI})"

# In the addr-spec form of a name-addr header the URI cannot hold ";", "," or "?"
# (RFC 3261 20.10): the first ";" starts the header parameters.
_USER_BARE = rf"(?:[{UNRESERVED}&=+$/]++|{ESCAPED})++"
_URIC_BARE = rf"[{UNRESERVED}/:@&=+$]++|{ESCAPED}"
ADDR_SPEC_BARE = (
    rf"(?:(?i:sips?):(?:{_USER_BARE}(?::{_USER_BARE})?@)?{HOST}(?::{PORT})?"
    rf"|(?!(?i:sips?):){SCHEME}:(?:{_URIC_BARE})++)"
)

_SIP_URI_RE = re.compile(
    rf"(?P<scheme>(?i:sips?)):(?:(?P<user>{USER})(?::(?P<password>{PASSWORD}))?@)?"
    rf"(?P<host>{HOST})(?::(?P<port>{PORT}))?(?P<params>{URI_PARAMS})"
    rf"(?:\?(?P<headers>{_URI_HEADERS_BODY}))?"
)
_ABSOLUTE_URI_RE = re.compile(rf"(?P<scheme>{SCHEME}):(?P<rest>(?:{_URIC})++)")

# RFC 3966 3:
#   global-number-digits = "+" *phonedigit DIGIT *phonedigit
#   local-number-digits  = *phonedigit-hex (HEXDIG / "*" / "#") *phonedigit-hex
#   phonedigit-hex       = HEXDIG / "*" / "#" / [ visual-separator ]
#   visual-separator     = "-" / "." / "(" / ")"
#   parameter            = ";" pname ["=" pvalue ]
_TEL_RE = re.compile(
    r"(?i:tel):(?P<number>\+(?=[\-.()]*+[0-9])[0-9\-.()]++"
    r"|(?=[\-.()]*+[0-9A-Fa-f*#])[0-9A-Fa-f*#\-.()]++)"
    rf"(?P<params>(?:;[A-Za-z0-9\-]++(?:=(?:[{UNRESERVED}\[\]/:&+$]++|{ESCAPED})++)?)*+)"
)
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")

Params = tuple[tuple[str, str | None], ...]


def _split_params(text: str) -> Params:
    """Splits ``;a=1;b`` (already validated) into ``(("a", "1"), ("b", None))``."""
    if not text:
        return ()
    result: list[tuple[str, str | None]] = []
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        result.append((name, value if eq else None))
    return tuple(result)


# The parameter helpers below serve the URIs here and the header values of
# gateway.sip.headers (Via, name-addr), which share the Params shape.


def format_params(params: Params) -> str:
    """Returns the wire form ``;a=1;b`` of parameters (``(("a", "1"), ("b", None))``)."""
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def find_param(params: Params, name: str) -> str | None:
    """Returns a parameter's value (case-insensitive name): None when absent, "" for a flag."""
    lower = name.lower()
    for n, v in params:
        if n.lower() == lower:
            return "" if v is None else v
    return None


def set_param(params: Params, name: str, value: str | None) -> Params:
    """Returns the parameters with one set: replaced where it stands, else appended.

    A replaced parameter keeps its place and its name's spelling, so rewriting one
    (``received``/``rport`` on a Via, RFC 3581 section 4; ``transport`` on a URI)
    leaves the rest of the value as the peer wrote it.

    Args:
        params: the parameters in order.
        name: parameter name, matched case-insensitively (RFC 3261 7.3.1).
        value: the new value; None for a flag parameter (``;lr``).
    """
    lower = name.lower()
    if any(n.lower() == lower for n, _ in params):
        return tuple((n, value) if n.lower() == lower else (n, v) for n, v in params)
    return (*params, (name, value))


def _unescape(text: str) -> str:
    # RFC 3261 19.1.4: characters other than those in the "reserved" set are
    # equivalent to their %-encoding. surrogateescape keeps %00 and non-UTF-8 octets
    # (RFC 4475 3.1.1.4: no truncation at an escaped null).
    return unquote(text, errors="surrogateescape") if "%" in text else text


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, unsafe_hash=True, kw_only=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 19.1.1).

    Attributes:
        scheme: "sip" or "sips", lower-case.
        user: user part, escaped as on the wire (may hold ";" — RFC 4475 3.1.1.9).
        password: password part, escaped as on the wire.
        host: host name lower-cased, IPv4 address, or IPv6 address without brackets.
        port: port number, or None when the URI names none (not the same as 5060
            for comparison, RFC 3261 19.1.4).
        params: uri-parameters in order; a parameter without "=" has value None.
        headers: URI headers (``?name=value&...``), escaped as on the wire.
    """

    scheme: Final[str]
    user: Final[str | None]
    password: Final[str | None]
    host: Final[str]
    port: Final[int | None]
    params: Final[Params]
    headers: Final[tuple[tuple[str, str], ...]]

    def __init__(
        self,
        *,
        scheme: str = "sip",
        user: str | None = None,
        password: str | None = None,
        host: str,
        port: int | None = None,
        params: Params = (),
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = params
        self.headers = headers

    @property
    def user_unescaped(self) -> str | None:
        """The user part with %-escapes decoded (undecodable octets kept)."""
        return None if self.user is None else _unescape(self.user)

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower-cased, or None."""
        value = find_param(self.params, "transport")
        return value.lower() if value else None

    @property
    def host_port(self) -> str:
        """``host[:port]`` with brackets around an IPv6 address."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    def param(self, name: str) -> str | None:
        """Returns a uri-parameter (case-insensitive name): None when absent, "" for a flag."""
        return find_param(self.params, name)

    def with_param(self, name: str, value: str | None = None) -> SipUri:
        """Returns a copy with one parameter set (replaced in place, else appended)."""
        return replace(self, params=set_param(self.params, name, value))

    def with_params(self, **params: str | None) -> SipUri:
        """Returns a copy with several parameters set (``lr=None`` gives ``;lr``)."""
        result = self.params
        for name, value in params.items():
            result = set_param(result, name, value)
        return replace(self, params=result)

    def without_param(self, name: str) -> SipUri:
        """Returns a copy without the named parameter."""
        lower = name.lower()
        return replace(self, params=tuple(p for p in self.params if p[0].lower() != lower))

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user
            if self.password is not None:
                userinfo += f":{self.password}"
            userinfo += "@"
        text = f"{self.scheme}:{userinfo}{self.host_port}{format_params(self.params)}"
        if self.headers:
            text += "?" + "&".join(f"{n}={v}" for n, v in self.headers)
        return text


@dataclass(frozen=True, slots=True)
class TelUri:
    """A ``tel:`` URI (RFC 3966).

    Attributes:
        number: the global (``+...``) or local number, visual separators kept.
        params: parameters in order (``phone-context``, ``ext``, ``isub`` ...).
    """

    number: str
    params: Params = ()

    @property
    def is_global(self) -> bool:
        """True for a global number (``+`` and the country code)."""
        return self.number.startswith("+")

    @property
    def phone_context(self) -> str | None:
        """The ``phone-context`` parameter a local number must carry, or None."""
        return find_param(self.params, "phone-context")

    def param(self, name: str) -> str | None:
        """Returns a parameter (case-insensitive name): None when absent, "" for a flag."""
        return find_param(self.params, name)

    def __str__(self) -> str:
        return f"tel:{self.number}{format_params(self.params)}"


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """A URI of any other scheme (RFC 2396 absoluteURI), kept as text.

    Attributes:
        scheme: the scheme as written ("urn", "http" ...).
        rest: everything after the first colon.
    """

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | TelUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parses a URI as found in a Request-URI or inside ``<...>``.

    Args:
        text: the URI text, without angle brackets or surrounding whitespace.

    Returns:
        A :class:`SipUri` for sip/sips, a :class:`TelUri` for tel, an
        :class:`AbsoluteUri` for any other scheme.

    Raises:
        ParseError: the text is not a URI, or a sip/sips/tel URI breaks its grammar
            (bad host, port above 65535, bad escape ...).
    """
    scheme, colon, _ = text.partition(":")
    if not colon:
        raise ParseError(f"URI has no scheme: {_show(text)}")
    lower = scheme.lower()
    if lower in ("sip", "sips"):
        return _parse_sip_uri(text)
    if lower == "tel":
        m = _TEL_RE.fullmatch(text)
        if m is None:
            raise ParseError(f"invalid tel URI: {_show(text)}")
        return TelUri(m["number"], _split_params(m["params"]))
    m = _ABSOLUTE_URI_RE.fullmatch(text)
    if m is None:
        raise ParseError(f"invalid URI: {_show(text)}")
    return AbsoluteUri(m["scheme"], m["rest"])


def telephone_user(text: str) -> str | None:
    """The user a SIP or tel URI names, as a caller or callee: a SIP URI's unescaped
    user part without its parameters (RFC 3261 19.1.6: a telephone-subscriber user part
    may carry ``;params``) or a tel URI's number (RFC 3966); None for anything else
    (no user part, another scheme, not a URI).

    Args:
        text: the URI as written (a Request-URI, a From URI ...).
    """
    try:
        uri = parse_uri(text)
    except ParseError:
        return None
    if isinstance(uri, SipUri) and uri.user_unescaped:
        return uri.user_unescaped.split(";", 1)[0]
    if isinstance(uri, TelUri):
        return uri.number
    return None


def validate_uri(text: str, *, allow_headers: bool = True) -> None:
    """Checks URI syntax as :func:`parse_uri` does, without building the value.

    The parser calls this on every Request-URI, where building a :class:`SipUri`
    would cost more than the check itself.

    Args:
        text: the URI text.
        allow_headers: False to reject ``?headers`` in a sip/sips URI (a
            Request-URI may not carry them, RFC 3261 19.1.1 table).

    Raises:
        ParseError: as :func:`parse_uri`, or URI headers where not allowed.
    """
    scheme = text[:5].lower()
    if not scheme.startswith(("sip:", "sips:")):
        parse_uri(text)
        return
    m = _SIP_URI_RE.fullmatch(text)
    if m is None:
        raise ParseError(f"invalid SIP URI: {_show(text)}")
    if m["port"] is not None or m["host"].startswith("[") or m["headers"] is not None:
        uri = _parse_sip_uri(text)
        if uri.headers and not allow_headers:
            raise ParseError(f"URI headers not allowed here: {_show(text)}")


def _show(text: str) -> str:
    return d(text.encode("utf-8", "surrogateescape"))


def _parse_sip_uri(text: str) -> SipUri:
    m = _SIP_URI_RE.fullmatch(text)
    if m is None:
        raise ParseError(f"invalid SIP URI: {_show(text)}")
    host = m["host"].lower()
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ParseError(f"invalid IPv6 reference in URI: {_show(text)}") from None
    port: int | None = None
    if m["port"] is not None:
        port = int(m["port"]) if len(m["port"]) <= 5 else 65536
        if port > 65535:
            raise ParseError(f"URI port out of range: {_show(text)}")
    headers: tuple[tuple[str, str], ...] = ()
    if m["headers"]:
        headers = tuple((n, v) for n, _, v in (h.partition("=") for h in m["headers"].split("&")))
    return SipUri(
        scheme=m["scheme"].lower(),
        user=m["user"],
        password=m["password"],
        host=host,
        port=port,
        params=_split_params(m["params"]),
        headers=headers,
    )


def _normalized_host(host: str) -> str:
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host).compressed
        except ValueError:
            return host
    return host.lower()


# RFC 3261 19.1.4: "A user, ttl, or method uri-parameter appearing in only one URI
# never matches ... A URI that includes an maddr parameter will not match a URI that
# contains no maddr parameter."
_MUST_MATCH_PARAMS = ("user", "ttl", "method", "maddr", "transport")


def _param_map(params: Params) -> dict[str, str | None]:
    return {_unescape(n).lower(): (None if v is None else _unescape(v).lower()) for n, v in params}


def uri_equal(a: Uri, b: Uri) -> bool:
    """Compares two URIs by RFC 3261 19.1.4 (sip/sips), RFC 3966 4 (tel), else text.

    Userinfo compares case-sensitively after unescaping (``%75ser`` equals ``user``,
    RFC 4475 3.1.1.3); host, scheme and parameters compare case-insensitively;
    user/ttl/method/maddr/transport parameters must be in both or neither; other
    parameters are compared only when present in both; URI headers must all match.

    Args:
        a: first URI.
        b: second URI.

    Returns:
        True when the URIs are equivalent.
    """
    if isinstance(a, SipUri) and isinstance(b, SipUri):
        return _sip_uri_equal(a, b)
    if isinstance(a, TelUri) and isinstance(b, TelUri):
        return a.number.translate(_VISUAL_SEPARATORS).lower() == b.number.translate(
            _VISUAL_SEPARATORS
        ).lower() and _param_map(a.params) == _param_map(b.params)
    if isinstance(a, AbsoluteUri) and isinstance(b, AbsoluteUri):
        return a.scheme.lower() == b.scheme.lower() and _unescape(a.rest) == _unescape(b.rest)
    return False


def _sip_uri_equal(a: SipUri, b: SipUri) -> bool:
    if a.scheme != b.scheme or a.port != b.port:
        return False
    if a.user_unescaped != b.user_unescaped:
        return False
    pa = None if a.password is None else _unescape(a.password)
    pb = None if b.password is None else _unescape(b.password)
    if pa != pb or _normalized_host(a.host) != _normalized_host(b.host):
        return False
    params_a, params_b = _param_map(a.params), _param_map(b.params)
    for name in _MUST_MATCH_PARAMS:
        if (name in params_a) != (name in params_b):
            return False
    for name, value in params_a.items():
        if name in params_b and params_b[name] != value:
            return False
    # RFC 3261 19.1.4: "URI header components are never ignored."
    headers_a = {(_unescape(n).lower(), _unescape(v)) for n, v in a.headers}
    headers_b = {(_unescape(n).lower(), _unescape(v)) for n, v in b.headers}
    return headers_a == headers_b
