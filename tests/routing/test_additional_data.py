"""routing/additional_data.py, routing/multipart.py and the [routing.provider] /
[routing.additional_data] config (issue 14, item 4), parsed back with xml.etree."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from routing.additional_data import additional_data
from routing.config import AdditionalDataConfig, ProviderInfo, RoutingConfig, SubscriberInfoPolicy
from routing.configfields import ConfigError, Table
from routing.decision import CallFacts
from routing.model import CallClass, Customer, DeviceKind, Language, Presentation, Subscriber
from routing.multipart import BY_REFERENCE, BodyPart, build_mixed
from tests.emergency.additional_data_check import NS_ECD, NS_VCARD, additional_data_blocks

ALICE = Subscriber(e164="+358401000001", sip_user="alice", customer_id="c",
                   display_name="Alice <&> \x07", presentation=Presentation.RESTRICTED)  # fmt: skip
CUSTOMER = Customer(id="c", company="Åbo & Co", language=Language.SV)


def blocks(facts: CallFacts, **config: object) -> dict[str, ET.Element]:
    found = additional_data(
        facts, provider=ProviderInfo(), config=AdditionalDataConfig(**config),  # type: ignore[arg-type]
        subscriber=ALICE, customer=CUSTOMER, token="tok-1",
    )  # fmt: skip
    parts = [BodyPart(content_type="application/sdp", body=b"v=0\r\n")]
    parts += [BodyPart(content_type=b.content_type, body=b.document, content_id=b.content_id,
                       disposition=BY_REFERENCE) for b in found]  # fmt: skip
    content_type, body = build_mixed(parts, "b0und")
    return additional_data_blocks(content_type, body, [b.call_info[1] for b in found])


@pytest.mark.parametrize(
    ("kind", "classification"),
    [(DeviceKind.DESK_PHONE, "fixed"), (DeviceKind.ATA, "fixed"),
     (DeviceKind.MOBILE_APP, None), (DeviceKind.SOFTPHONE, "desktop"),
     (DeviceKind.UNKNOWN, None), (None, None)],
)  # fmt: skip
def test_device_classification_follows_the_classification(
    kind: DeviceKind | None, classification: str | None
) -> None:
    device = blocks(CallFacts(device_kind=kind))["DeviceInfo"]
    assert device.findtext(f"{{{NS_ECD}:DeviceInfo}}DeviceClassification") == classification


def test_service_mobility_per_class_and_subscriber_text_escaped() -> None:
    for call_class, mobility in [(CallClass.OFFICE, "Fixed"), (CallClass.NOMADIC, "Nomadic"),
                                 (CallClass.UNKNOWN, "Unknown")]:  # fmt: skip
        found = blocks(CallFacts(call_class=call_class))
        service = found["ServiceInfo"]
        assert service.findtext(f"{{{NS_ECD}:ServiceInfo}}ServiceMobility") == mobility
    subscriber = found["SubscriberInfo"]
    assert subscriber.get("privacyRequested") == "true"
    # XML-special characters escaped, a control character dropped (XML 1.0 2.2).
    assert subscriber.findtext(f".//{{{NS_VCARD}}}fn/{{{NS_VCARD}}}text") == "Alice <&> "
    assert subscriber.findtext(f".//{{{NS_VCARD}}}org/{{{NS_VCARD}}}text") == "Åbo & Co"


def test_subscriber_info_policy_and_disabled() -> None:
    assert "SubscriberInfo" not in blocks(CallFacts(), subscriber_info=SubscriberInfoPolicy.NEVER)
    restricted = blocks(CallFacts(), subscriber_info=SubscriberInfoPolicy.UNLESS_RESTRICTED)
    assert "SubscriberInfo" not in restricted
    assert blocks(CallFacts(), enabled=False) == {}


def test_token_must_be_safe() -> None:
    with pytest.raises(ValueError, match="token"):
        additional_data(CallFacts(), provider=ProviderInfo(), config=AdditionalDataConfig(),
                        subscriber=None, customer=None, token="a>b")  # fmt: skip


def test_multipart_rejects_a_boundary_inside_a_part_and_header_injection() -> None:
    with pytest.raises(ValueError, match="occurs"):
        build_mixed([BodyPart(content_type="text/plain", body=b"x--b0und")], "b0und")
    with pytest.raises(ValueError, match="Content-Disposition"):
        BodyPart(content_type="text/plain", body=b"", disposition="x\r\nVia: evil")


@pytest.mark.parametrize(
    ("table", "field"),
    [({"provider": {"contact": "mailto:noc@op.fi"}}, "routing.provider.contact"),
     ({"provider": {"id": "not a domain"}}, "routing.provider.id"),
     ({"provider": {"languages": ["fin"]}}, "routing.provider.languages"),
     ({"provider": {"languages": []}}, "routing.provider.languages"),
     ({"provider": {"name": " "}}, "routing.provider.name"),
     ({"provider": {"phone": "x"}}, "routing.provider.phone"),
     ({"additional_data": {"subscriber_info": "maybe"}}, "routing.additional_data.subscriber_info"),
     ({"additional_data": {"enabled": "yes"}}, "routing.additional_data.enabled")],
)  # fmt: skip
def test_bad_config_names_the_field(table: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}"):
        RoutingConfig.from_table(Table(table, "routing"))


#: Registry tokens of RFC 7852 (sections 4.1.3, 4.1.4, 4.2.1-4.2.3, 4.3.1) that the
#: gateway may send; anything else it emits is a mistake.
PROVIDER_ID_SERIES = {"NENA", "EENA", "domain"}
TYPES_OF_PROVIDER = {
    "Access Network Provider", "Service Provider", "Service Provider Subcontractor",
    "Telematics Provider", "Language Translation Provider", "Emergency Service Provider",
    "Emergency Modality Translation", "Relay Provider", "Other",
}  # fmt: skip
SERVICE_ENVIRONMENTS = {"Business", "Residence", "Unknown"}
SERVICE_MOBILITIES = {"Mobile", "Fixed", "Nomadic", "Unknown"}


@pytest.mark.parametrize("call_class", list(CallClass))
@pytest.mark.parametrize("kind", [*DeviceKind, None])
def test_every_emitted_value_is_a_registry_token_in_schema_order(
    call_class: CallClass, kind: DeviceKind | None
) -> None:
    found = blocks(CallFacts(call_class=call_class, device_kind=kind))
    assert set(found) == {"ProviderInfo", "ServiceInfo", "DeviceInfo", "SubscriberInfo"}
    pi, si, di = (f"{{{NS_ECD}:{b}}}" for b in ("ProviderInfo", "ServiceInfo", "DeviceInfo"))
    provider = found["ProviderInfo"]
    assert [c.tag.removeprefix(pi) for c in provider] == [
        "DataProviderReference", "DataProviderString", "ProviderID", "ProviderIDSeries",
        "TypeOfProvider", "ContactURI", "Language",
    ]  # fmt: skip
    assert provider.findtext(f"{pi}ProviderIDSeries") in PROVIDER_ID_SERIES
    assert provider.findtext(f"{pi}TypeOfProvider") in TYPES_OF_PROVIDER
    service = found["ServiceInfo"]
    assert [c.tag.removeprefix(si) for c in service] == [
        "DataProviderReference", "ServiceEnvironment", "ServiceType", "ServiceMobility",
    ]  # fmt: skip
    assert service.findtext(f"{si}ServiceEnvironment") in SERVICE_ENVIRONMENTS
    assert service.findtext(f"{si}ServiceType") == "MLTS-hosted"
    assert service.findtext(f"{si}ServiceMobility") in SERVICE_MOBILITIES
    device = found["DeviceInfo"]
    assert device.findtext(f"{di}DeviceClassification") in {None, "fixed", "desktop"}
    # Every block names the same provider (RFC 7852 4.1.1).
    references = {
        b.findtext(f"{b.tag.split('}')[0]}}}DataProviderReference") for b in found.values()
    }
    assert references == {"tok-1@setera.fi"}
