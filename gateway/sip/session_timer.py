"""Session timers (RFC 4028): the header fields and the negotiation, as pure functions.

Theory of operation
-------------------
A session timer is negotiated per dialog by the INVITE (or a refresh) and its 2xx. The
UAC offers (``Supported: timer``, ``Session-Expires``, ``Min-SE``); the UAS answers with
the interval and who refreshes (``Session-Expires: delta;refresher=uac|uas``), or 422
with its ``Min-SE`` when the interval offered is too small. The refresher sends a
re-INVITE or UPDATE at half the interval; the other side ends the session when no
refresh came by ``interval - min(32, interval / 3)`` (RFC 4028 10).

``refresher`` always names a role in the transaction that negotiated it, never a side
of the call: in a re-INVITE from the callee, "uac" is the callee. The caller of these
functions turns the role into a side.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

from gateway.sip.errors import ParseError
from gateway.sip.headers import parse_option_tags
from gateway.sip.message import Headers

#: RFC 4028 4: "the minimum value [...] MUST NOT be less than 90 seconds".
RFC_MIN_SE = 90
#: RFC 4028 4: "It is RECOMMENDED that [Session-Expires] be 1800 seconds".
RECOMMENDED_INTERVAL = 1800
#: Largest delta-seconds accepted (RFC 3261 25.1 allows any digits; a day is plenty).
MAX_DELTA_SECONDS = 86_400

# RFC 4028 4:
#   Session-Expires  =  ("Session-Expires" / "x") HCOLON delta-seconds
#                       *(SEMI se-params)
#   se-params        =  refresher-param / generic-param
#   refresher-param  =  "refresher" EQUAL  ("uas" / "uac")
#   Min-SE  =  "Min-SE" HCOLON delta-seconds *(SEMI generic-param)
_DELTA_RE = re.compile(r"[ \t]*([0-9]{1,10})[ \t]*(?:;(.*))?", re.DOTALL)


class Refresher(enum.Enum):
    """Who refreshes, as a role in the transaction that negotiated the timer."""

    __hash__ = object.__hash__  # singletons: C identity hash (SessionTimer's hash)

    UAC = "uac"
    UAS = "uas"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionTimerPolicy:
    """What a B2BUA asks of session timers on each leg.

    Attributes:
        interval: the session interval it offers and prefers, in seconds.
        min_se: the smallest interval it accepts from a peer (its Min-SE), in seconds.
    """

    interval: int = RECOMMENDED_INTERVAL
    min_se: int = RFC_MIN_SE


# __init__ written out for these three: compiled, unlike the one dataclass() generates
# (gateway.ops.native); five per call came through the interpreter.
@dataclass(init=False, slots=True, unsafe_hash=True, kw_only=True)
class SessionExpires:
    """A ``Session-Expires`` value.

    Attributes:
        delta: the session interval, in seconds.
        refresher: the ``refresher`` parameter, None when absent.
    """

    delta: Final[int]
    refresher: Final[Refresher | None]

    def __init__(self, *, delta: int, refresher: Refresher | None = None) -> None:
        self.delta = delta
        self.refresher = refresher

    def __str__(self) -> str:
        if self.refresher is None:
            return str(self.delta)
        return f"{self.delta};refresher={self.refresher.value}"


@dataclass(init=False, slots=True, unsafe_hash=True, kw_only=True)
class TimerOffer:
    """What a session refresh request says about the session timer.

    Attributes:
        supported: the UAC supports the extension (``timer`` in Supported or Require).
        session_expires: its ``Session-Expires``, None when absent.
        min_se: its ``Min-SE`` in seconds (RFC 4028 5: 90 when absent).
    """

    supported: Final[bool]
    session_expires: Final[SessionExpires | None]
    min_se: Final[int]

    def __init__(
        self,
        *,
        supported: bool,
        session_expires: SessionExpires | None = None,
        min_se: int = RFC_MIN_SE,
    ) -> None:
        self.supported = supported
        self.session_expires = session_expires
        self.min_se = min_se


@dataclass(init=False, slots=True, unsafe_hash=True, kw_only=True)
class SessionTimer:
    """A negotiated session timer.

    Attributes:
        interval: the session interval, in seconds.
        refresher: who refreshes, as a role in the negotiating transaction.
        require: the UAS puts ``Require: timer`` in its 2xx (RFC 4028 9).
    """

    interval: Final[int]
    refresher: Final[Refresher]
    require: Final[bool]

    def __init__(self, *, interval: int, refresher: Refresher, require: bool = False) -> None:
        self.interval = interval
        self.refresher = refresher
        self.require = require

    @property
    def refresh_delay(self) -> float:
        """Seconds after a refresh when the refresher sends the next one (RFC 4028
        10: "at the half-way point")."""
        return self.interval / 2

    @property
    def expiry_delay(self) -> float:
        """Seconds after a refresh after which the other side ends the session: RFC
        4028 10, "the BYE SHOULD be sent [...] min(32, one third of the session
        interval)" before the session expires."""
        return self.interval - min(32.0, self.interval / 3)

    @property
    def response_header(self) -> SessionExpires:
        return SessionExpires(delta=self.interval, refresher=self.refresher)


@dataclass(frozen=True, slots=True, kw_only=True)
class IntervalTooSmall:
    """RFC 4028 6: the request's interval is below the UAS's minimum: answer 422 with
    ``Min-SE: min_se``."""

    min_se: int


def parse_session_expires(value: str) -> SessionExpires:
    """Parses a ``Session-Expires`` value.

    Raises:
        ParseError: not ``delta-seconds *(;param)`` (status hint 400).
    """
    delta, params = _delta_and_params(value, "Session-Expires")
    refresher = None
    for param in params.split(";") if params else ():
        name, _, text = param.partition("=")
        if name.strip().lower() == "refresher":
            try:
                refresher = Refresher(text.strip().lower())
            except ValueError:
                raise ParseError(f"bad refresher parameter: {param.strip()!r}") from None
    return SessionExpires(delta=delta, refresher=refresher)


def parse_min_se(value: str) -> int:
    """Parses a ``Min-SE`` value, in seconds.

    Raises:
        ParseError: not ``delta-seconds *(;param)`` (status hint 400).
    """
    return _delta_and_params(value, "Min-SE")[0]


def _delta_and_params(value: str, name: str) -> tuple[int, str]:
    match = _DELTA_RE.fullmatch(value)
    if match is None or int(match.group(1)) > MAX_DELTA_SECONDS:
        raise ParseError(f"bad {name}: {value[:40]!r}")
    return int(match.group(1)), match.group(2) or ""


def timer_offer(headers: Headers) -> TimerOffer:
    """The session-timer part of a request.

    Raises:
        ParseError: a malformed Session-Expires, Min-SE or option-tag list.
    """
    tags = parse_option_tags(
        ",".join(headers.get_lines("Supported") + headers.get_lines("Require"))
    )
    se = headers.get("Session-Expires")
    min_se = headers.get("Min-SE")
    return TimerOffer(
        supported="timer" in (tag.lower() for tag in tags),
        session_expires=parse_session_expires(se) if se is not None else None,
        min_se=parse_min_se(min_se) if min_se is not None else RFC_MIN_SE,
    )


def negotiate_as_uas(
    offer: TimerOffer, *, interval: int, min_se: int, lenient: bool = False
) -> SessionTimer | IntervalTooSmall:
    """The UAS's answer to a session refresh request (RFC 4028 9).

    The UAS always runs a timer (it wants to learn when a peer vanished): when the
    request offers none it adds its own ``interval``. It lowers a larger offered
    interval to its own, never below the request's Min-SE ("the UAS MAY reduce its
    value but MUST NOT set it to a duration lower than the value of the Min-SE header
    field in the request"). The refresher follows RFC 4028 table 2; when the UAS may
    choose it picks the UAC, whose refreshes then prove it is still there.

    Args:
        offer: what the request says.
        interval: the interval the UAS prefers, in seconds.
        min_se: the smallest interval the UAS accepts, in seconds.
        lenient: accept an interval below ``min_se`` instead of answering 422 (an
            emergency call is never refused).

    Returns:
        The timer to put in the 2xx, or :class:`IntervalTooSmall` for a 422.
    """
    se = offer.session_expires
    if se is not None and se.delta < min_se and not lenient:
        # RFC 4028 6: "the UAS MUST reject the request with a 422".
        return IntervalTooSmall(min_se=min_se)
    chosen = interval if se is None else min(se.delta, max(interval, offer.min_se))
    if not offer.supported:
        # Table 2, "N none -> uas": a UAC that knows nothing of timers cannot refresh
        # on its own, so the UAS does (a plain re-INVITE or UPDATE works with it).
        return SessionTimer(interval=chosen, refresher=Refresher.UAS)
    refresher = se.refresher if se is not None and se.refresher is not None else Refresher.UAC
    # RFC 4028 9: with refresher=uac, "the UAS MUST place a Require header field into
    # the response with the value 'timer'".
    return SessionTimer(interval=chosen, refresher=refresher, require=refresher is Refresher.UAC)


def negotiate_as_uac(requested: int, response: Headers) -> SessionTimer:
    """The timer a UAC runs after the 2xx to its refresh request (RFC 4028 7.2).

    With a Session-Expires in the 2xx, its interval and refresher apply (a missing
    refresher is taken as the UAC's own duty: the safe side). Without one the UAS does
    not support timers, and "if the UAC still wishes to use the session timer [...]
    it has to perform them": the UAC refreshes at the interval it requested.

    Raises:
        ParseError: a malformed Session-Expires in the 2xx.
    """
    value = response.get("Session-Expires")
    if value is None:
        return SessionTimer(interval=requested, refresher=Refresher.UAC)
    se = parse_session_expires(value)
    return SessionTimer(interval=se.delta, refresher=se.refresher or Refresher.UAC)


def retry_after_422(interval: int, min_se: int, response: Headers) -> tuple[int, int] | None:
    """The (Session-Expires, Min-SE) of the retry after a 422 (RFC 4028 7.3), or None
    when the 422 gives no usable Min-SE.

    RFC 4028 7.3: the retry's Min-SE is "the largest value amongst all Min-SE values
    returned in all 422 responses" and its Session-Expires at least that.
    """
    value = response.get("Min-SE")
    if value is None:
        return None
    try:
        theirs = parse_min_se(value)
    except ParseError:
        return None
    floor = max(min_se, theirs)
    return max(interval, floor), floor
