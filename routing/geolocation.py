"""What RFC 6442 lets a device and the gateway say about a conveyed location, typed:
the caller's ``Geolocation-Routing`` permission and the ``Geolocation-Error`` the
gateway answers with when it could not use the device's own location.

Both are decided here as pure functions over :mod:`routing.device_location`'s
outcome; the routing adapter renders them as header fields once
(:func:`geolocation_error_header`, :func:`routing.pidf.geolocation_headers`).

Geolocation-Error (RFC 6442 section 4.3)::

    Geolocation-Error        = "Geolocation-Error" HCOLON locationErrorValue
    locationErrorValue       = location-error-code *(SEMI location-error-params)
    location-error-code      = 1*3DIGIT
    location-error-params    = location-error-code-text / generic-param
    location-error-code-text = "code" EQUAL quoted-string

Which code a refused device location gets (:func:`geolocation_error_for`):

* every check of the document or the body failing (too large, not XML, a DTD, not a
  PIDF, no location, an unchecked shape, bad coordinates, a ``cid:`` naming no body
  part) is ``100 "Cannot Process Location"``: the gateway could not process the
  location the request carried.
* a location **by reference** is also ``100``, not ``300 "Dereference Failure"``:
  the gateway deliberately never dereferences a caller's URI (no fetch on the
  emergency path, and the reference's server would learn of the call), so no
  dereference was tried and none failed. ``300`` would tell the device that its
  location server or URI is broken and send it looking there; ``100`` tells it the
  truth, that this location was not usable here, which a device can act on by
  sending its location by value.

The call goes on whatever the code: the header rides on the responses to a call
that connects (RFC 6442 4.3 allows it in any response; 424 "Bad Location
Information" would refuse an emergency call over a claim, which the gateway never
does).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

from routing.device_location import DeviceLocationProblem


class GeolocationErrorCode(IntEnum):
    """The location-error-code values of RFC 6442 section 4.3 (IANA "Geolocation-
    Error Codes" registry, RFC 6442 section 8.6); :attr:`text` is the registered
    code text."""

    CANNOT_PROCESS_LOCATION = 100
    PERMISSION_TO_USE = 200
    PERMISSION_TO_RETRANSMIT = 201
    PERMISSION_TO_ROUTE = 202
    DEREFERENCE_FAILURE = 300

    @property
    def text(self) -> str:
        """The code's registered text (RFC 6442 4.3), the ``code`` parameter's value."""
        return _ERROR_TEXT[self]


_ERROR_TEXT = {
    GeolocationErrorCode.CANNOT_PROCESS_LOCATION: "Cannot Process Location",
    GeolocationErrorCode.PERMISSION_TO_USE: "Permission To Use Location Information",
    GeolocationErrorCode.PERMISSION_TO_RETRANSMIT: (
        "Permission To Retransmit Location Information to a Third Party"
    ),
    GeolocationErrorCode.PERMISSION_TO_ROUTE: "Permission to Route based on Location Information",
    GeolocationErrorCode.DEREFERENCE_FAILURE: "Dereference Failure",
}


class GeolocationRouting(StrEnum):
    """A request's ``Geolocation-Routing`` value (RFC 6442 section 4.2)::

    Geolocation-Routing = "Geolocation-Routing" HCOLON
                          ( "yes" / "no" / generic-value )
    """

    YES = "yes"
    """Intermediaries may route the request on the conveyed location."""
    NO = "no"
    """They may not: the location is for the final recipient only."""


def read_geolocation_routing(values: list[str] | tuple[str, ...]) -> GeolocationRouting | None:
    """The permission a request's Geolocation-Routing header fields give.

    Only one value is defined per request (RFC 6442 4.2); several that disagree, or a
    generic-value this gateway does not know, grant nothing beyond "no" (a permission
    the device did not clearly give is not assumed).

    Args:
        values: the header field values, in order.

    Returns:
        YES or NO, or None when the request has no such header field.
    """
    tokens = {v.strip().lower() for value in values for v in value.split(",") if v.strip()}
    if not tokens:
        return None
    return GeolocationRouting.YES if tokens == {"yes"} else GeolocationRouting.NO


def routing_allowed(stated: GeolocationRouting | None) -> bool:
    """Whether a device's location may drive a routing decision: only after an
    explicit ``yes``. RFC 6442 4.2 makes ``no`` the value of an absent header field,
    so no header and ``no`` mean the same here."""
    return stated is GeolocationRouting.YES


def geolocation_error_for(problem: DeviceLocationProblem | None) -> GeolocationErrorCode | None:
    """The Geolocation-Error the caller is answered with for a refused device
    location (see the module docstring for the choice of codes).

    Args:
        problem: why the device's own location was not used, or None (it sent none,
            or it was used).

    Returns:
        The code, or None when there is nothing to report.
    """
    if problem is None:
        return None
    return GeolocationErrorCode.CANNOT_PROCESS_LOCATION


def geolocation_error_header(code: GeolocationErrorCode) -> tuple[str, str]:
    """The header field (name, value) reporting ``code``, in the form of the RFC 6442
    4.3 example: ``Geolocation-Error: 100 ;code="Cannot Process Location"``.

    Args:
        code: the error.

    Returns:
        The (name, value) pair.
    """
    return ("Geolocation-Error", f'{code.value} ;code="{code.text}"')
