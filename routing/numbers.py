"""Numbers a customer holds: Finnish number formats and number ranges (pure).

Traficom regulation 28 (28 L/2025, in force 4 May 2026) makes the originating operator
responsible for the A-number being one the customer has the right to use, and requires
calls arriving from abroad that present a Finnish fixed or mobile number to be blocked
or have the number removed. Both need one reading of a number whatever format a device
or a peer wrote it in (:func:`to_e164`) and the customer's ranges (:class:`NumberIndex`).

A range is written ``+358 9 1234 xxxx``: an E.164 prefix and trailing ``x`` digits, so a
block is every number of that length under the prefix (``+35891234xxxx`` holds
``+358912340000`` ... ``+358912349999``) and a single number has no ``x``. Blocks that are
not a power of ten (5000-5499) are written as several ranges.

Not :mod:`phonenumbers`: the rule needs three Finnish prefixes and digit counting, not a
metadata database of every country's plan; a per-call lookup here is a few dict probes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from routing.model import E164_RE

#: Finland's country code (ITU-T E.164 assignment).
FINLAND_CC: Final = "358"
#: Longest run of ``x`` a range may have: a block of 10^8 numbers is already a plan.
MAX_WILDCARDS: Final = 8

_SEPARATORS: Final = str.maketrans("", "", " ()-./")
_RANGE_RE: Final = re.compile(r"(\+[1-9][0-9]{0,14})(x*)")


def to_e164(text: str | None) -> str | None:
    """A number as written by a device or a peer, in E.164 with ``+``; None when it is
    not a number.

    The formats peers use for Finnish numbers: international ``+358 9 1234 5678``,
    the international prefix ``00358 ...`` (ITU-T E.164 / Finnish numbering plan:
    ``00`` is Finland's international call prefix, so ``00`` + digits is any country)
    and national ``09 1234 5678`` (trunk prefix ``0``, read as Finland). A number
    without either prefix (``112``, an extension) is not an E.164 number.

    Args:
        text: a SIP user part or tel number (visual separators allowed).

    Returns:
        ``+`` and digits, or None.
    """
    if not text:
        return None
    digits = text.translate(_SEPARATORS)
    if digits.startswith("+"):
        candidate = digits
    elif digits.startswith("00"):
        candidate = "+" + digits[2:]
    elif digits.startswith("0") and len(digits) > 1:
        candidate = "+" + FINLAND_CC + digits[1:]
    else:
        return None
    return candidate if E164_RE.fullmatch(candidate) else None


def is_finnish(e164: str) -> bool:
    """Whether an E.164 number is in Finland's country code (+358).

    +358 also holds Åland (+358 18); the regulation's rule is about Finnish numbers,
    which Åland's are.
    """
    return e164.startswith("+" + FINLAND_CC)


@dataclass(frozen=True, slots=True, kw_only=True)
class NumberRange:
    """A single number or block of numbers a customer holds.

    Attributes:
        customer_id: the customer holding the range.
        prefix: the E.164 prefix with ``+`` (the whole number for a single number).
        wildcards: how many digits follow the prefix (0 for a single number).
        roaming: mobile numbers whose subscribers may call from abroad: calls from an
            international peer presenting them are not blocked (regulation 28's
            roaming exception).
    """

    customer_id: str
    prefix: str
    wildcards: int = 0
    roaming: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.wildcards <= MAX_WILDCARDS:
            raise ValueError(f"range may end in at most {MAX_WILDCARDS} x, got {self.wildcards}")
        if not E164_RE.fullmatch(self.prefix + "0" * self.wildcards):
            raise ValueError(f"range {self.text!r} is not E.164 ('+' and 2-15 digits)")

    @property
    def text(self) -> str:
        """The range as written in the sites file (``+35891234xxxx``)."""
        return self.prefix + "x" * self.wildcards

    @property
    def length(self) -> int:
        """Length of every number in the range, ``+`` included."""
        return len(self.prefix) + self.wildcards

    def overlaps(self, other: NumberRange) -> bool:
        """Whether a number is in both ranges (same length, one prefix under the other)."""
        return self.length == other.length and (
            self.prefix.startswith(other.prefix) or other.prefix.startswith(self.prefix)
        )

    def __contains__(self, e164: object) -> bool:
        return isinstance(e164, str) and len(e164) == self.length and e164.startswith(self.prefix)


def parse_range(text: str) -> tuple[str, int]:
    """Reads a range as written in the sites file.

    Args:
        text: ``+358 9 1234 xxxx`` (spaces allowed; ``X`` too) or a single number.

    Returns:
        (prefix, wildcards).

    Raises:
        ValueError: not an E.164 prefix followed by ``x`` digits.
    """
    compact = text.translate(_SEPARATORS).lower()
    match = _RANGE_RE.fullmatch(compact)
    if match is None:
        raise ValueError(f"expected an E.164 number or block like '+358 9 1234 xxxx', got {text!r}")
    return match.group(1), len(match.group(2))


@dataclass(frozen=True, slots=True)
class NumberIndex:
    """The ranges of every customer, indexed for a per-call lookup.

    A lookup tries each wildcard count present (at most ``MAX_WILDCARDS + 1`` dict
    probes): ranges of one length do not overlap (the sites file rejects it), so at
    most one range holds a number.
    """

    by_key: Mapping[tuple[int, str], NumberRange]
    """(number length, prefix) -> range."""
    wildcard_counts: tuple[int, ...]

    @classmethod
    def build(cls, ranges: Iterable[NumberRange]) -> NumberIndex:
        """Indexes ranges (the caller has rejected overlaps; a later duplicate wins)."""
        by_key = {(r.length, r.prefix): r for r in ranges}
        return cls(by_key, tuple(sorted({r.wildcards for r in by_key.values()})))

    def range_of(self, e164: str) -> NumberRange | None:
        """The range holding ``e164``, or None."""
        length = len(e164)
        for wildcards in self.wildcard_counts:
            found = self.by_key.get((length, e164[: length - wildcards]))
            if found is not None:
                return found
        return None


EMPTY_NUMBER_INDEX: Final = NumberIndex({}, ())
