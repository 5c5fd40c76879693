"""Typed views of header values: Via, CSeq, name-addr (From/To/Contact/Route), auth.

A :class:`~gateway.sip.message.Headers` map keeps values as text; a layer that needs
structure calls one of the ``parse_*`` functions here. Each returns frozen values and
raises :class:`~gateway.sip.errors.ParseError` on bad syntax.

The module also exports the compiled whole-value grammars (``CONTACT_RE``,
``CALL_ID_RE``, ``CSEQ_RE``) that the parser uses to validate a message eagerly
without building these objects (RFC 3261 25.1 ABNF, applied to values whose folding
has already been replaced by a single SP, so ``LWS`` is ``1*WSP`` and ``SWS`` is
``*WSP``). From, To and Via are validated by parsing them (:func:`parse_name_address`,
:func:`parse_via`), whose caches then serve the layers above.

Nothing here draws random numbers: :func:`generate_branch` and :func:`generate_tag`
take the random octets from the caller (``os.urandom`` in the adapter), so the core
stays deterministic under test.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from gateway.sip.errors import ParseError, d
from gateway.sip.limits import MAX_CSEQ, MAX_DELTA_SECONDS, MAX_HEADER_VALUES
from gateway.sip.message import Headers
from gateway.sip.uri import (
    ADDR_SPEC,
    ADDR_SPEC_BARE,
    HOST,
    IPV6_REFERENCE,
    PORT,
    Params,
    Uri,
    find_param,
    format_params,
    parse_uri,
    set_param,
)

#: RFC 3261 8.1.1.7: a branch starting with this cookie was made by an RFC 3261
#: element, so it is unique and can identify the transaction by itself.
BRANCH_MAGIC_COOKIE: Final = "z9hG4bK"

#   LWS  =  [*WSP CRLF] 1*WSP     (folding already replaced by SP)
#   SWS  =  [LWS]
LWS = r"[ \t]++"
SWS = r"[ \t]*+"
#   token  =  1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]++"
#   quoted-string  =  SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
#   qdtext         =  LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
#   quoted-pair    =  "\" (%x00-09 / %x0B-0C / %x0E-7F)
QUOTED_STRING = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]++|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*+"'
#   generic-param  =  token [ EQUAL gen-value ]
#   gen-value      =  token / host / quoted-string
GEN_VALUE = rf"(?:{TOKEN}|{IPV6_REFERENCE}|{QUOTED_STRING})"
GENERIC_PARAM = rf"{TOKEN}(?:{SWS}={SWS}{GEN_VALUE})?"
#   SEMI  =  SWS ";" SWS
HEADER_PARAMS = rf"(?:{SWS};{SWS}{GENERIC_PARAM})*+"
#   COMMA  =  SWS "," SWS
COMMA = rf"{SWS},{SWS}"

#   name-addr     =  [ display-name ] LAQUOT addr-spec RAQUOT
#   display-name  =  *(token LWS)/ quoted-string
#   LAQUOT = SWS "<"; RAQUOT = ">" SWS
# "caller<sip:...>" (no LWS after the token) is accepted: RFC 4475 3.1.1.6 rules it
# valid because LAQUOT starts with SWS.
DISPLAY_NAME = rf"(?:{TOKEN}(?:{LWS}{TOKEN})*+|{QUOTED_STRING})"
NAME_ADDR = rf"(?:{DISPLAY_NAME}{SWS})?<{ADDR_SPEC}>"
#   from-spec  =  ( name-addr / addr-spec ) *( SEMI from-param )
NAME_ADDR_PARAMS = rf"(?:{NAME_ADDR}|{ADDR_SPEC_BARE}){HEADER_PARAMS}"
#   Contact  =  ( STAR / (contact-param *(COMMA contact-param)))
CONTACT_RE = re.compile(rf"\*|{NAME_ADDR_PARAMS}(?:{COMMA}{NAME_ADDR_PARAMS})*+")

#   via-parm       =  sent-protocol LWS sent-by *( SEMI via-params )
#   via-params     =  via-ttl / via-maddr / via-received / via-branch / via-extension
#   via-received   =  "received" EQUAL (IPv4address / IPv6address)
#   sent-protocol  =  protocol-name SLASH protocol-version SLASH transport
#   sent-by        =  host [ COLON port ]
#   SLASH = SWS "/" SWS; COLON = SWS ":" SWS
# IPv6address has no brackets in that rule, so it is no gen-value (a token has no
# colon); RFC 5118 4.5 and 4.6 rule both "received=[2001:db8::9:255]" and
# "received=2001:db8::9:255" valid. The lookahead keeps the unbracketed form from
# claiming the start of something else.
#   IPv6address  =  hexpart [ ":" IPv4address ]   (simplified: 2-7 colons, hex groups,
#                   an optional dotted tail; ipaddress validates where it is used)
IPV6_ADDRESS = r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|[0-9]{1,3}(?:\.[0-9]{1,3}){3})?"
_VIA_RECEIVED_IPV6 = rf"(?i:received){SWS}={SWS}{IPV6_ADDRESS}(?=[ \t;,]|$)"
VIA_PARAMS = rf"(?:{SWS};{SWS}(?:{_VIA_RECEIVED_IPV6}|{GENERIC_PARAM}))*+"

#   callid  =  word [ "@" word ]
#   word    =  1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" /
#              "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]++"
CALL_ID_RE = re.compile(rf"{WORD}(?:@{WORD})?")
#   CSeq  =  "CSeq" HCOLON 1*DIGIT LWS Method
CSEQ_RE = re.compile(rf"([0-9]++){LWS}({TOKEN})")

_PARAM_RE = re.compile(rf"{SWS};{SWS}({TOKEN})(?:{SWS}={SWS}({GEN_VALUE}))?")
_COMMA_RE = re.compile(COMMA)
_VIA_PARM_RE = re.compile(
    rf"(?P<name>{TOKEN}){SWS}/{SWS}(?P<version>{TOKEN}){SWS}/{SWS}(?P<transport>{TOKEN})"
    rf"{LWS}(?P<host>{HOST})(?:{SWS}:{SWS}(?P<port>{PORT}))?(?P<params>{VIA_PARAMS})"
)
_VIA_PARAM_RE = re.compile(
    rf"{SWS};{SWS}({TOKEN})(?:{SWS}={SWS}({IPV6_ADDRESS}(?=[ \t;,]|$)|{GEN_VALUE}))?"
)
_NAME_ADDR_RE = re.compile(
    rf"(?:(?:(?P<display>{DISPLAY_NAME}){SWS})?<(?P<uri>{ADDR_SPEC})>|(?P<bare>{ADDR_SPEC_BARE}))"
    rf"(?P<params>{HEADER_PARAMS})"
)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
#   auth-param  =  auth-param-name EQUAL ( token / quoted-string )
_AUTH_PARAM_RE = re.compile(rf"({TOKEN}){SWS}={SWS}({TOKEN}|{QUOTED_STRING}){SWS}(?:,{SWS}|$)")
_TOKEN_RE = re.compile(TOKEN)
_LWS_RE = re.compile(LWS)


def _show(text: str) -> str:
    return d(text.encode("utf-8", "surrogateescape"))


def _split_header_params(text: str) -> Params:
    if not text:
        return ()
    # findall gives "" for a parameter without a value; a gen-value is never empty
    # (token, host or quoted-string), so "" can only mean "no value" (None).
    return tuple([(name, value or None) for name, value in _PARAM_RE.findall(text)])


def _split_via_params(text: str) -> Params:
    """Like :func:`_split_header_params`, with an unbracketed IPv6 ``received``.

    Raises:
        ParseError: a ``received`` holding a colon is no IPv6 address (the grammar
            above only approximates IPv6address: "2001:db8::9:" passes it).
    """
    if not text:
        return ()
    params = tuple([(name, value or None) for name, value in _VIA_PARAM_RE.findall(text)])
    for name, value in params:
        if value is not None and ":" in value and name.lower() == "received":
            try:
                ipaddress.IPv6Address(value.strip("[]"))
            except ValueError:
                raise ParseError(f"invalid Via received: {_show(value)}") from None
    return params


def unquote_string(text: str) -> str:
    """Removes the quotes and quoted-pair escapes of a quoted-string (RFC 3261 25.1).

    Args:
        text: a quoted-string as matched by the grammar, or a bare token.

    Returns:
        The content; a text not starting with a quote is returned unchanged.
    """
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        # A quoted-pair starts with a backslash; display names almost never hold
        # one, and the regex substitution was ~1.5 % of the CPU per call.
        return _QUOTED_PAIR_RE.sub(r"\1", inner) if "\\" in inner else inner
    return text


def quote_string(text: str) -> str:
    """Returns ``text`` as a quoted-string, escaping ``"`` and ``\\``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, unsafe_hash=True, kw_only=True)
class Via:
    """One via-parm of a Via header (RFC 3261 20.42).

    Attributes:
        protocol: protocol name and version, "SIP/2.0" (whitespace removed).
        transport: transport in upper case; unknown transports are kept
            (RFC 4475 3.1.1.10).
        host: sent-by host, IPv6 without brackets, as written otherwise.
        port: sent-by port, or None when absent (the transport default applies,
            RFC 3261 18.2.2).
        params: via-params in order; a parameter without "=" has value None.
    """

    protocol: Final[str]
    transport: Final[str]
    host: Final[str]
    port: Final[int | None]
    params: Final[Params]

    def __init__(
        self,
        *,
        protocol: str = "SIP/2.0",
        transport: str,
        host: str,
        port: int | None = None,
        params: Params = (),
    ) -> None:
        self.protocol = protocol
        self.transport = transport
        self.host = host
        self.port = port
        self.params = params

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter (transaction id, RFC 3261 8.1.1.7), or None."""
        return find_param(self.params, "branch")

    @property
    def received(self) -> str | None:
        """The ``received`` address (RFC 3261 18.2.1), or None; an IPv6 address is
        returned without the brackets RFC 5118 4.5 allows around it."""
        value = find_param(self.params, "received")
        if value is not None and value.startswith("[") and value.endswith("]"):
            return value[1:-1]
        return value

    @property
    def rport(self) -> str | None:
        """RFC 3581 ``rport``: None when absent, "" when a bare flag, else the port."""
        return find_param(self.params, "rport")

    @property
    def maddr(self) -> str | None:
        """The ``maddr`` parameter, or None."""
        return find_param(self.params, "maddr")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        """``(host, port)`` as sent; used in transaction matching (RFC 3261 17.2.3)."""
        return (self.host, self.port)

    def param(self, name: str) -> str | None:
        """Returns a parameter (case-insensitive name): None when absent, "" for a flag."""
        return find_param(self.params, name)

    def with_param(self, name: str, value: str | None) -> Via:
        """Returns a copy with a parameter set in place, or appended (None: a flag)."""
        # The constructor, not dataclasses.replace (see NameAddress.with_tag).
        return Via(
            protocol=self.protocol,
            transport=self.transport,
            host=self.host,
            port=self.port,
            params=set_param(self.params, name, value),
        )

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {host}{port}{format_params(self.params)}"


def _port(text: str | None, value: str) -> int | None:
    if text is None:
        return None
    port = int(text) if len(text) <= 5 else 65536
    if port > 65535:
        raise ParseError(f"port out of range in {_show(value)}")
    return port


def _host(text: str) -> str:
    return text[1:-1].lower() if text.startswith("[") else text


#: The characters of a token (RFC 3261 25.1), for str.strip: a text holding nothing
#: else strips to "".
_TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~"


def _parse_plain_via(value: str) -> Via | None:
    """The via-parm of a Via as nearly every peer writes it, read without the grammar
    regex: ``SIP/2.0/`` and a token transport, one SP, a host of letters, digits and
    dots (an IPv4 address or a host name without hyphens), an optional port, and
    ``;name`` or ``;name=value`` parameters of tokens. Whatever that leaves out
    (LWS, commas, IPv6, quoted strings, hyphenated host names) gives None, and
    :func:`_parse_via_grammar` decides. Every value accepted here matches _VIA_PARM_RE,
    and gives the Via that the grammar's parse gives.
    """
    if not value.startswith("SIP/2.0/"):
        return None
    space = value.find(" ", 8)
    transport = value[8:space]
    if space < 0 or not transport or transport.strip(_TOKEN_CHARS):
        return None
    sent_by, *params = value[space + 1 :].split(";")
    host, colon, port = sent_by.partition(":")
    for label in host.split("."):
        if not (label.isascii() and label.isalnum()):
            return None  # also an empty label: "", "a..b", a trailing dot
    if colon and not (port.isascii() and port.isdigit()):
        return None
    pairs: list[tuple[str, str | None]] = []
    for param in params:
        name, equals, param_value = param.partition("=")
        if not name or name.strip(_TOKEN_CHARS):
            return None
        if not equals:
            pairs.append((name, None))
        elif param_value and not param_value.strip(_TOKEN_CHARS):
            pairs.append((name, param_value))
        else:
            return None
    return Via(
        protocol="SIP/2.0",
        transport=transport.upper(),
        host=host,
        port=_port(port, value) if colon else None,
        params=tuple(pairs),
    )


def _parse_via(value: str) -> list[Via]:
    """Parses one Via header line, which may hold several comma-separated via-parms.

    Raises:
        ParseError: as :func:`_parse_via_grammar`.
    """
    plain = _parse_plain_via(value)
    if plain is not None:
        return [plain]
    return _parse_via_grammar(value)


def _parse_via_grammar(value: str) -> list[Via]:
    """Parses one Via header line, which may hold several comma-separated via-parms.

    Args:
        value: the header value (unfolded).

    Returns:
        The via-parms in order, topmost first.

    Raises:
        ParseError: the value breaks the RFC 3261 via-parm grammar (empty params,
            missing sent-by ...) or holds more than MAX_HEADER_VALUES entries.
    """
    vias: list[Via] = []
    pos = 0
    end = len(value)
    while True:
        m = _VIA_PARM_RE.match(value, pos)
        if m is None:
            raise ParseError(f"invalid Via: {_show(value)}")
        vias.append(
            Via(
                protocol=f"{m['name']}/{m['version']}".upper(),
                transport=m["transport"].upper(),
                host=_host(m["host"]),
                port=_port(m["port"], value),
                params=_split_via_params(m["params"]),
            )
        )
        if len(vias) > MAX_HEADER_VALUES:
            raise ParseError(f"too many Via values in {_show(value[:80])}")
        pos = m.end()
        if pos == end:
            return vias
        comma = _COMMA_RE.match(value, pos)
        if comma is None:
            raise ParseError(f"invalid Via: {_show(value)}")
        pos = comma.end()


def top_via(headers: Headers) -> Via:
    """Returns the topmost Via of a message.

    Args:
        headers: the message headers.

    Returns:
        The first via-parm of the first Via line.

    Raises:
        ParseError: there is no Via, or the first one is malformed.
    """
    first = headers.get("Via")
    if first is None:
        raise ParseError("missing Via header")
    return parse_via(first)[0]


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, unsafe_hash=True)
class CSeq:
    """A CSeq value (RFC 3261 20.16).

    Attributes:
        seq: sequence number, 0 to 2**31 - 1.
        method: the method, case-sensitive.
    """

    seq: Final[int]
    method: Final[str]

    def __init__(self, seq: int, method: str) -> None:
        self.seq = seq
        self.method = method

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def _parse_cseq(value: str) -> CSeq:
    """Parses a CSeq value (``1*DIGIT LWS Method``).

    Args:
        value: the header value.

    Returns:
        The sequence number and method.

    Raises:
        ParseError: bad syntax, or a number not below 2**31 (RFC 3261 8.1.1.5).
    """
    m = CSEQ_RE.fullmatch(value)
    if m is None:
        raise ParseError(f"invalid CSeq: {_show(value)}")
    digits = m[1]
    seq = int(digits) if len(digits) <= 10 else MAX_CSEQ + 1
    if seq > MAX_CSEQ:
        raise ParseError(f"CSeq number out of range: {_show(value)}")
    return CSeq(seq, m[2])


# __init__ written out: compiled, unlike the one dataclass() generates (gateway.ops.native)
@dataclass(init=False, slots=True, unsafe_hash=True)
class NameAddress:
    """A name-addr or addr-spec with header parameters: From, To, Contact, Route ...

    Attributes:
        display_name: the display name unquoted, or None.
        uri: the URI text (parse it with :meth:`parsed_uri`).
        params: header parameters (tag, expires, q ...) in order; None for a flag.
    """

    display_name: Final[str | None]
    uri: Final[str]
    params: Final[Params]

    def __init__(self, display_name: str | None, uri: str, params: Params = ()) -> None:
        self.display_name = display_name
        self.uri = uri
        self.params = params

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 19.3), or None."""
        return find_param(self.params, "tag")

    def param(self, name: str) -> str | None:
        """Returns a parameter (case-insensitive name): None when absent, "" for a flag."""
        return find_param(self.params, name)

    # The constructor, not dataclasses.replace: replace() is interpreted and reads
    # the fields by introspection, a measurable share of a call's CPU (issue 17).
    def with_tag(self, tag: str) -> NameAddress:
        """Returns a copy with the ``tag`` parameter set."""
        return NameAddress(self.display_name, self.uri, set_param(self.params, "tag", tag))

    def with_param(self, name: str, value: str | None) -> NameAddress:
        """Returns a copy with a parameter set in place, or appended (None: a flag)."""
        return NameAddress(self.display_name, self.uri, set_param(self.params, name, value))

    def parsed_uri(self) -> Uri:
        """Parses :attr:`uri`.

        Raises:
            ParseError: the URI is malformed.
        """
        return parse_uri(self.uri)

    def __str__(self) -> str:
        # Always the name-addr form: it is unambiguous whatever the URI holds
        # (RFC 3261 20.10).
        display = "" if self.display_name is None else quote_string(self.display_name) + " "
        return f"{display}<{self.uri}>{format_params(self.params)}"


def _name_address(m: re.Match[str]) -> NameAddress:
    display = m["display"]
    if display is not None:
        display = unquote_string(display)
    uri = m["uri"] if m["uri"] is not None else m["bare"]
    return NameAddress(display, uri, _split_header_params(m["params"]))


def _parse_name_address(value: str) -> NameAddress:
    """Parses a From/To/Route/Record-Route-like value holding one address.

    In the addr-spec form (no ``<>``), everything after the URI's first ``;`` is a
    header parameter, and the URI may hold no ``,``, ``;`` or ``?`` (RFC 3261 20.10).

    Args:
        value: the header value.

    Returns:
        The display name, URI text and header parameters.

    Raises:
        ParseError: bad syntax (unterminated quote, spaces inside ``<>``, non-token
            display name ...).
    """
    m = _NAME_ADDR_RE.fullmatch(value.strip(" \t"))
    if m is None:
        raise ParseError(f"invalid name-addr: {_show(value)}")
    return _name_address(m)


def parse_contacts(value: str) -> list[NameAddress] | Literal["*"]:
    """Parses a Contact value: ``*`` or a comma-separated list of addresses.

    Args:
        value: one Contact header value.

    Returns:
        The string ``"*"`` for the wildcard (REGISTER removing all bindings, RFC 3261
        10.2.2), else the addresses in order.

    Raises:
        ParseError: bad syntax (RFC 4475 3.1.2.13: a URI holding ``;``, ``,`` or
            ``?`` outside ``<>``), an ``expires`` parameter over 2**32 - 1, or more
            than MAX_HEADER_VALUES entries.
    """
    value = value.strip(" \t")
    if value == "*":
        return "*"
    result: list[NameAddress] = []
    pos = 0
    end = len(value)
    while True:
        m = _NAME_ADDR_RE.match(value, pos)
        if m is None:
            raise ParseError(f"invalid Contact: {_show(value)}")
        contact = _name_address(m)
        expires = contact.param("expires")
        if expires is not None:
            parse_int_header(expires, "Contact expires")
        result.append(contact)
        if len(result) > MAX_HEADER_VALUES:
            raise ParseError("too many Contact values")
        pos = m.end()
        if pos == end:
            return result
        comma = _COMMA_RE.match(value, pos)
        if comma is None:
            raise ParseError(f"invalid Contact: {_show(value)}")
        pos = comma.end()


def all_contacts(headers: Headers) -> list[NameAddress] | Literal["*"]:
    """Parses every Contact line of a message.

    Returns:
        ``"*"`` when the only Contact is the wildcard, else all addresses in order.

    Raises:
        ParseError: a bad value, or ``*`` mixed with other contacts (RFC 3261 10.3
            step 6 makes that a 400).
    """
    lines = headers.get_lines("Contact")
    parsed = [parse_contacts(line) for line in lines]
    if any(p == "*" for p in parsed):
        if len(parsed) != 1:
            raise ParseError("Contact '*' mixed with other contacts")
        return "*"
    result: list[NameAddress] = []
    for contacts in parsed:
        if not isinstance(contacts, str):
            result.extend(contacts)
    return result


def parse_int_header(value: str, name: str, *, maximum: int = MAX_DELTA_SECONDS) -> int:
    """Parses a ``1*DIGIT`` header value such as Expires, Content-Length, Max-Forwards.

    Args:
        value: the header value (surrounding whitespace allowed).
        name: the header name, for the error text.
        maximum: the largest value accepted (2**32 - 1 unless told).

    Returns:
        The number.

    Raises:
        ParseError: not all digits, or above ``maximum`` (RFC 4475 3.1.2.4).
    """
    text = value.strip(" \t")
    if not (text.isascii() and text.isdigit()):
        raise ParseError(f"invalid {name}: {_show(value)}")
    # Length first: int() of thousands of digits is slow and then raises ValueError.
    number = int(text) if len(text) <= 20 else maximum + 1
    if number > maximum:
        raise ParseError(f"{name} out of range: {_show(value)}")
    return number


def parse_option_tags(value: str) -> list[str]:
    """Parses a Require/Supported/Proxy-Require/Unsupported value (``option-tag`` list).

    Args:
        value: the header value.

    Returns:
        The option tags in order (empty for an empty Supported).

    Raises:
        ParseError: an entry is not a token.
    """
    tags: list[str] = []
    for part in value.split(","):
        tag = part.strip(" \t")
        if _TOKEN_RE.fullmatch(tag) is None:
            if not tag and not value.strip(" \t"):
                return []
            raise ParseError(f"invalid option-tag list: {_show(value)}")
        tags.append(tag)
    return tags


def parse_auth(value: str) -> tuple[str, dict[str, str]]:
    """Parses an Authorization, Proxy-Authorization, WWW- or Proxy-Authenticate value.

    ``credentials = auth-scheme LWS auth-param *(COMMA auth-param)`` (RFC 3261 25.1,
    RFC 2617). Unknown schemes parse the same way (RFC 4475 3.3.7).

    Args:
        value: the header value.

    Returns:
        The scheme as written and the parameters, names lower-cased, quoted-string
        values unquoted.

    Raises:
        ParseError: bad syntax or a parameter given twice.
    """
    value = value.strip(" \t")
    scheme_match = _TOKEN_RE.match(value)
    if scheme_match is None:
        raise ParseError(f"invalid auth header: {_show(value)}")
    scheme = scheme_match[0]
    params: dict[str, str] = {}
    pos = scheme_match.end()
    end = len(value)
    if pos < end:
        lws = _LWS_RE.match(value, pos)
        if lws is None:
            raise ParseError(f"invalid auth header: {_show(value)}")
        pos = lws.end()
    while pos < end:
        m = _AUTH_PARAM_RE.match(value, pos)
        if m is None or m.end() == pos:
            raise ParseError(f"invalid auth parameter in {_show(value)}")
        name = m[1].lower()
        if name in params:
            raise ParseError(f"duplicate auth parameter {name!r}")
        params[name] = unquote_string(m[2])
        pos = m.end()
    return scheme, params


#: Digest parameters sent as quoted-strings (RFC 2617 3.2.2, RFC 3261 25.1); the
#: others (algorithm, nc, qop in credentials, stale) are tokens.
DEFAULT_QUOTED: Final = frozenset(
    {"username", "realm", "nonce", "uri", "response", "cnonce", "opaque", "domain"}
)


def format_auth(
    scheme: str, params: Mapping[str, str], *, quoted: Collection[str] = DEFAULT_QUOTED
) -> str:
    """Builds a credentials or challenge value.

    Args:
        scheme: the auth scheme ("Digest").
        params: parameters in the order to write them.
        quoted: names whose values are written as quoted-strings (a challenge's
            ``qop`` is quoted: pass ``DEFAULT_QUOTED | {"qop"}``).

    Returns:
        ``scheme name=value, name="value", ...``.
    """
    items = [f"{n}={quote_string(v) if n in quoted else v}" for n, v in params.items()]
    return f"{scheme} {', '.join(items)}" if items else scheme


def generate_branch(token: bytes) -> str:
    """Returns a Via branch made from caller-supplied random octets.

    Args:
        token: random bytes (e.g. ``os.urandom(8)``); RFC 3261 8.1.1.7 wants the
            branch unique across space and time.

    Returns:
        ``z9hG4bK`` followed by the octets in hex.
    """
    return BRANCH_MAGIC_COOKIE + token.hex()


def generate_tag(token: bytes) -> str:
    """Returns a From/To tag (RFC 3261 19.3: at least 32 bits of randomness).

    Args:
        token: random bytes (e.g. ``os.urandom(8)``).

    Returns:
        The octets in hex, a valid token.
    """
    return token.hex()


# The typed views are pure functions of the header text and their results are frozen,
# so they are memoised: a call's From, To and CSeq values, and a message's own Via,
# are parsed again by several layers (matching, dialogs, the B2BUA). Bounded LRU
# caches, small: the repeats come within milliseconds of each other (one call's
# set-up), and entries kept longer would only cost memory per idle dialog. Errors are
# not cached (the parser raises again).


@functools.lru_cache(maxsize=2048)
def _parse_via_cached(value: str) -> tuple[Via, ...]:
    return tuple(_parse_via(value))


def parse_via(value: str) -> list[Via]:
    """Parses one Via header line, which may hold several comma-separated via-parms.

    Args:
        value: the header value.

    Returns:
        The Via values in order (a new list; the Via objects are frozen).

    Raises:
        ParseError: the value is not a Via.
    """
    return list(_parse_via_cached(value))


parse_cseq = functools.lru_cache(maxsize=2048)(_parse_cseq)
parse_cseq.__doc__ = _parse_cseq.__doc__
parse_name_address = functools.lru_cache(maxsize=4096)(_parse_name_address)
parse_name_address.__doc__ = _parse_name_address.__doc__
