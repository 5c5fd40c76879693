"""[routing] config: defaults, every field read, bad fields named."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from routing.config import NomadicPolicy, RoutingConfig
from routing.configfields import ConfigError, Table
from routing.model import CIVIC_ELEMENTS, CIVIC_FIELDS, CivicAddress, DeviceKind


def _load(text: str) -> RoutingConfig:
    data: dict[str, Any] = tomllib.loads(text)
    return RoutingConfig.from_table(Table(data.get("routing", {}), "routing"))


def test_defaults() -> None:
    config = _load("")
    assert config == RoutingConfig()
    assert config.emergency.numbers == ("112",)
    assert config.nomadic_policy is NomadicPolicy.ANNOUNCE_THEN_ROUTE


def test_all_fields() -> None:
    config = _load(
        """
        [routing]
        default_next_hop = "sip:carrier.example:5060"
        nomadic_policy = "announce-and-end"
        resource_priority = ""
        notification_webhook = "https://hooks.example/112"
        test_route = "sips:echo@test.example"
        [routing.emergency]
        numbers = ["112", "911"]
        outside_line_prefixes = ["0"]
        country_codes = ["358", "46"]
        test_numbers = ["10112"]
        [routing.devices]
        softphone = "MyPhone"
        ata = ""
        [routing.provider]
        name = "Op"
        id = "op.example"
        contact = "sip:noc@op.example"
        """
    )
    assert config.nomadic_policy is NomadicPolicy.ANNOUNCE_AND_END
    assert config.resource_priority == ""
    assert config.emergency.numbers == ("112", "911")
    assert config.devices.match("MyPhone 1.0") is DeviceKind.SOFTPHONE
    assert config.devices.match("Zoiper") is None
    assert config.devices.match("Grandstream HT802") is DeviceKind.DESK_PHONE  # ata disabled
    assert config.provider.id == "op.example"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[routing]\nnomadic_policy = "drop"', "routing.nomadic_policy"),
        ('[routing]\ndefault_next_hop = "http://x"', "routing.default_next_hop"),
        ('[routing]\nresource_priority = "esnet"', "routing.resource_priority"),
        ('[routing]\nnotification_webhook = "ftp://x"', "routing.notification_webhook"),
        ('[routing]\ntest_route = "echo"', "routing.test_route"),
        ("[routing]\nnomadic = 1", "routing.nomadic"),
        ('[routing.emergency]\nnumbers = ["11x"]', "routing.emergency.numbers"),
        ("[routing.emergency]\nnumbers = []", "routing.emergency.numbers"),
        ('[routing.emergency]\ntest_numbers = ["112"]', "routing.emergency.test_numbers"),
        ("[routing.emergency]\nnumbers = 112", "routing.emergency.numbers"),
        ('[routing.devices]\nsoftphone = "("', "routing.devices.softphone"),
        ('[routing.devices]\nfax = "x"', "routing.devices.fax"),
        ("[routing.provider]\nname = 1", "routing.provider.name"),
    ],
)
def test_bad_field_is_named(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(text)
    assert info.value.field == field


def test_civic_field_tables_agree() -> None:
    import dataclasses

    names = tuple(f.name for f in dataclasses.fields(CivicAddress) if f.name != "lang")
    assert names == CIVIC_FIELDS
    assert len({n for _, n in CIVIC_ELEMENTS}) == len(CIVIC_ELEMENTS)


def test_max_call_duration() -> None:
    config = _load(
        """
        [routing]
        max_call_duration = 7200
        [routing.max_call_duration_by_customer]
        acme = 600
        """
    )
    assert config.max_call_duration_for("acme") == 600.0
    assert config.max_call_duration_for("other") == 7200.0
    assert _load("").max_call_duration_for("acme") is None
    with pytest.raises(ConfigError, match=r"routing\.max_call_duration_by_customer\.acme"):
        _load("[routing.max_call_duration_by_customer]\nacme = -1")
