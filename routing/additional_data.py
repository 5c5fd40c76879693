"""RFC 7852 Additional Data for emergency calls: what the centre learns beside the location.

NG112 (ETSI TS 103 479) builds on RFC 7852: every field that arrives with the call is
one the call-taker need not ask for. The gateway sends each block **by value**
(RFC 7852 section 6): a ``Call-Info`` header whose ``cid:`` URI names a body part of
the same INVITE, in the multipart/mixed body beside the SDP and the PIDF-LO::

    Call-Info: <cid:pi-1f2e@voipgw>;purpose=EmergencyCallData.ProviderInfo

    --boundary
    Content-Type: application/EmergencyCallData.ProviderInfo+xml
    Content-ID: <pi-1f2e@voipgw>
    Content-Disposition: by-reference;handling=optional

The blocks (namespaces ``urn:ietf:params:xml:ns:EmergencyCallData:<Block>``):

* **ProviderInfo** (4.1): the operator, from ``[routing.provider]``: name, domain as
  ProviderID, contact URI, the languages of its staff. Always sent.
* **ServiceInfo** (4.2): ServiceEnvironment ``Business`` (the operator serves
  businesses only), ServiceType ``MLTS-hosted`` (a hosted multi-line telephone
  system), ServiceMobility ``Fixed`` for an office call and ``Nomadic`` for a nomadic
  one (``Unknown`` when the call was never classified). Always sent.
* **DeviceInfo** (4.3): DeviceClassification from the gateway's own classification of
  the device (4.3.1, the "Device Classification" registry): a desk phone or an ATA is
  ``fixed`` ("Fixed phone"), a softphone ``desktop`` ("Soft client on desktop PC"; it
  cannot be told from ``laptop``). A mobile app and an unknown device have none: the
  element is optional, and nothing is better than a guess. (A mobile app was once
  sent as ``handset``, which is no registered token: the registry's only handset is
  ``cordless``, and which of its cellular tokens fits an app cannot be told from
  here.) Always sent.
* **SubscriberInfo** (4.4): the caller as the operator knows her (an xCard, RFC 6351:
  name, company, number, the customer's language), for a known subscriber only and as
  ``[routing.additional_data] subscriber_info`` allows; ``privacyRequested`` is true
  when she restricts presentation (RFC 3323), which a centre honours when it passes
  the data on.

Every block carries the same ``DataProviderReference`` (4.1.1: it ties each block to
the ProviderInfo of the provider that supplied it, and must be globally unique): a
per-call token at the operator's domain.

The documents are built with :mod:`xml.etree.ElementTree` (escaping is its job). Each
root declares its namespace as the default (``xmlns``) and children are written
unprefixed, so the output needs no process-wide ``register_namespace`` and has no
``ns0:`` prefixes; tests parse it back with namespaces.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from routing.config import AdditionalDataConfig, ProviderInfo, SubscriberInfoPolicy
from routing.decision import CallFacts
from routing.model import CallClass, Customer, DeviceKind, Presentation, Subscriber

NS_EMERGENCY_CALL_DATA = "urn:ietf:params:xml:ns:EmergencyCallData"
NS_VCARD = "urn:ietf:params:xml:ns:vcard-4.0"

PROVIDER_INFO = "EmergencyCallData.ProviderInfo"
SERVICE_INFO = "EmergencyCallData.ServiceInfo"
DEVICE_INFO = "EmergencyCallData.DeviceInfo"
SUBSCRIBER_INFO = "EmergencyCallData.SubscriberInfo"

#: RFC 7852 4.1.4 TypeOfProvider, a token of its "Type of Data Provider" registry
#: (figure 2): "Service Provider", the calling or origination telecom service
#: provider, which the operator is. The PIDF-LO's provided-by says the same
#: (routing/pidf.py). It was once "Telecom Provider", which is no registered token.
TYPE_OF_PROVIDER = "Service Provider"
#: RFC 7852 4.2.1 ServiceEnvironment ("Business", "Residence", "Unknown"): every
#: customer is a business.
SERVICE_ENVIRONMENT = "Business"
#: RFC 7852 4.2.2 ServiceType (its "Service Type" registry): "MLTS-hosted", a hosted
#: multi-line telephone system, which a hosted business VoIP service is.
SERVICE_TYPE = "MLTS-hosted"
#: RFC 7852 4.2.3 ServiceMobility (its "Service Mobility" registry: "Mobile",
#: "Fixed", "Nomadic", "Unknown") per call class.
SERVICE_MOBILITY = {
    CallClass.OFFICE: "Fixed",
    CallClass.NOMADIC: "Nomadic",
    CallClass.UNKNOWN: "Unknown",
}
#: RFC 7852 4.3.1 DeviceClassification (its "Device Classification" registry, figure
#: 8) per device kind; a mobile app and an unknown kind have none (module docstring).
DEVICE_CLASSIFICATION = {
    DeviceKind.DESK_PHONE: "fixed",
    DeviceKind.ATA: "fixed",
    DeviceKind.SOFTPHONE: "desktop",
}
#: RFC 7852 4.1.3 ProviderIDSeries: "domain" (the registry's NENA, EENA, domain): the
#: ProviderID is the operator's fully qualified domain name.
PROVIDER_ID_SERIES = "domain"

#: XML 1.0 section 2.2 Char excludes most C0 controls; they are dropped from text.
_XML_INVALID_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
#: The token in Content-IDs and the DataProviderReference (RFC 2392 addr-spec local part).
_TOKEN_RE = re.compile(r"[A-Za-z0-9-]{1,64}")


@dataclass(frozen=True, slots=True, kw_only=True)
class AdditionalDataBlock:
    """One RFC 7852 block conveyed by value: a body part and the Call-Info naming it.

    Attributes:
        purpose: the Call-Info purpose and media type stem ("EmergencyCallData.ServiceInfo").
        content_id: the body part's Content-ID, without angle brackets.
        document: the UTF-8 XML document.
    """

    purpose: str
    content_id: str
    document: bytes

    @property
    def content_type(self) -> str:
        """The media type registered for the block (RFC 7852 section 11.1)."""
        return f"application/{self.purpose}+xml"

    @property
    def call_info(self) -> tuple[str, str]:
        """The ``Call-Info`` header referencing the part (RFC 7852 section 6)."""
        return ("Call-Info", f"<cid:{self.content_id}>;purpose={self.purpose}")


def additional_data(
    facts: CallFacts,
    *,
    provider: ProviderInfo,
    config: AdditionalDataConfig,
    subscriber: Subscriber | None,
    customer: Customer | None,
    token: str,
) -> tuple[AdditionalDataBlock, ...]:
    """The RFC 7852 blocks of one emergency call (see the module docstring).

    Args:
        facts: the call's facts (class, device kind).
        provider: the operator.
        config: whether to send blocks, and when SubscriberInfo goes.
        subscriber: the caller, when a known subscriber placed the call.
        customer: her customer (company, language), when known.
        token: a per-call random token (letters, digits, "-"): makes the Content-IDs
            and the DataProviderReference unique.

    Returns:
        The blocks in the order they go into the body (none when disabled).

    Raises:
        ValueError: for a token that is not letters, digits and "-".
    """
    if not _TOKEN_RE.fullmatch(token):
        raise ValueError(f"token must be letters, digits and '-', got {token!r}")
    if not config.enabled:
        return ()
    reference = f"{token}@{provider.id}"
    blocks = [
        _block(PROVIDER_INFO, "pi", token, provider_info(provider, reference)),
        _block(SERVICE_INFO, "si", token, service_info(facts, reference)),
        _block(DEVICE_INFO, "di", token, device_info(facts, reference)),
    ]
    if subscriber is not None and _subscriber_info_allowed(subscriber, config.subscriber_info):
        document = subscriber_info(subscriber, customer, reference)
        blocks.append(_block(SUBSCRIBER_INFO, "su", token, document))
    return tuple(blocks)


def provider_info(provider: ProviderInfo, reference: str) -> bytes:
    """The ProviderInfo document (RFC 7852 4.1; elements in the schema's sequence:
    DataProviderReference, DataProviderString, ProviderID, ProviderIDSeries,
    TypeOfProvider, ContactURI, Language, then the optional ones not sent)."""
    root = _root(PROVIDER_INFO, "ProviderInfo", reference)
    _child(root, "DataProviderString", provider.name)
    _child(root, "ProviderID", provider.id)
    _child(root, "ProviderIDSeries", PROVIDER_ID_SERIES)
    _child(root, "TypeOfProvider", TYPE_OF_PROVIDER)
    _child(root, "ContactURI", provider.contact)
    for language in provider.languages:
        _child(root, "Language", language)
    return _serialize(root)


def service_info(facts: CallFacts, reference: str) -> bytes:
    """The ServiceInfo document (RFC 7852 4.2)."""
    root = _root(SERVICE_INFO, "ServiceInfo", reference)
    _child(root, "ServiceEnvironment", SERVICE_ENVIRONMENT)
    _child(root, "ServiceType", SERVICE_TYPE)
    _child(root, "ServiceMobility", SERVICE_MOBILITY[facts.call_class])
    return _serialize(root)


def device_info(facts: CallFacts, reference: str) -> bytes:
    """The DeviceInfo document (RFC 7852 4.3): the classification, when known."""
    root = _root(DEVICE_INFO, "DeviceInfo", reference)
    kind = facts.device_kind
    classification = DEVICE_CLASSIFICATION.get(kind) if kind is not None else None
    if classification is not None:
        _child(root, "DeviceClassification", classification)
    return _serialize(root)


def subscriber_info(subscriber: Subscriber, customer: Customer | None, reference: str) -> bytes:
    """The SubscriberInfo document (RFC 7852 4.4) with an xCard (RFC 6351) of the caller."""
    root = _root(SUBSCRIBER_INFO, "SubscriberInfo", reference)
    restricted = subscriber.presentation is Presentation.RESTRICTED
    root.set("privacyRequested", "true" if restricted else "false")
    data = ET.SubElement(root, "SubscriberData")
    vcards = ET.SubElement(data, "vcards", {"xmlns": NS_VCARD})
    vcard = ET.SubElement(vcards, "vcard")
    # RFC 6350 6.2.1: FN is required; the number stands in for a missing name.
    name = subscriber.display_name or subscriber.e164
    _child(ET.SubElement(vcard, "fn"), "text", name)
    if customer is not None:
        _child(ET.SubElement(vcard, "org"), "text", customer.company)
        lang = ET.SubElement(vcard, "lang")
        _child(ET.SubElement(ET.SubElement(lang, "parameters"), "pref"), "integer", "1")
        _child(lang, "language-tag", customer.language.value)
    tel = ET.SubElement(vcard, "tel")
    kinds = ET.SubElement(ET.SubElement(tel, "parameters"), "type")
    _child(kinds, "text", "work")
    _child(kinds, "text", "voice")
    _child(tel, "uri", f"tel:{subscriber.e164}")
    return _serialize(root)


def _subscriber_info_allowed(subscriber: Subscriber, policy: SubscriberInfoPolicy) -> bool:
    if policy is SubscriberInfoPolicy.NEVER:
        return False
    if policy is SubscriberInfoPolicy.UNLESS_RESTRICTED:
        return subscriber.presentation is not Presentation.RESTRICTED
    return True


def _block(purpose: str, prefix: str, token: str, document: bytes) -> AdditionalDataBlock:
    return AdditionalDataBlock(
        purpose=purpose, content_id=f"{prefix}-{token}@voipgw", document=document
    )


def _root(purpose: str, block: str, reference: str) -> ET.Element:
    root = ET.Element(purpose, {"xmlns": f"{NS_EMERGENCY_CALL_DATA}:{block}"})
    # RFC 7852: DataProviderReference is the first element of every block.
    _child(root, "DataProviderReference", reference)
    return root


def _child(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = _XML_INVALID_RE.sub("", text)
    return element


def _serialize(root: ET.Element) -> bytes:
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document
