"""Sites file: TOML and CSV parse, per-row errors naming line and field, round trips."""

from __future__ import annotations

import pytest

from routing.model import Customer
from routing.sites_export import dump_sites
from routing.sites_file import CSV_COLUMNS, SitesFileError, parse_sites
from tests.routing.data import DEMO_SITES, demo_data

GOOD_TOML = """\
[[customers]]
id = "acme"
company = "Acme Oy"

[[sites]]
id = "acme-hq"
customer = "acme"
name = "HQ"
networks = [{ cidr = "10.0.0.0/24", kind = "office-lan" }]
[sites.address]
country = "FI"
A3 = "Espoo"

[[subscribers]]
e164 = "+358401234567"
sip_user = "u1"
customer = "acme"
site = "acme-hq"

[[centres]]
id = "national"
name = "National"
sip_uri = "sip:112@127.0.0.1:5090"
national_default = true
"""


def _errors(text: str, fmt: str) -> list[tuple[int | None, str]]:
    with pytest.raises(SitesFileError) as info:
        parse_sites(text, fmt)
    assert "nothing imported" in str(info.value)
    return [(e.line, e.field) for e in info.value.errors]


def test_good_toml() -> None:
    data = parse_sites(GOOD_TOML, "toml")
    assert [s.id for s in data.sites] == ["acme-hq"]
    assert data.sites[0].address.a3 == "Espoo"
    assert data.subscribers[0].site_id == "acme-hq"


def test_one_bad_row_names_line_and_field() -> None:
    bad = GOOD_TOML.replace('cidr = "10.0.0.0/24"', 'cidr = "10.0.0.300/24"')
    assert _errors(bad, "toml") == [(9, "sites[0].networks[0].cidr")]


def test_all_errors_are_collected() -> None:
    bad = (
        GOOD_TOML.replace('e164 = "+358401234567"', 'e164 = "0401234567"')
        .replace('A3 = "Espoo"', 'A3 = "Espoo"\nSTREET = "x"')
        .replace('company = "Acme Oy"', 'company = "Acme Oy"\nstate = "gone"')
        .replace('kind = "office-lan"', 'kind = "lan"')
    )
    assert sorted(_errors(bad, "toml")) == [
        (4, "customers[0].state"),
        (10, "sites[0].networks[0].kind"),
        (14, "sites[0].address.STREET"),
        (17, "subscribers[0].e164"),
    ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (('customer = "acme"\nname', 'customer = "nobody"\nname'), "sites[0].customer"),
        (('site = "acme-hq"', 'site = "elsewhere"'), "subscribers[0].site"),
        (('country = "FI"', 'country = "Finland"'), "sites[0].address.country"),
        (('country = "FI"\n', ""), "sites[0].address.country"),
        (('"10.0.0.0/24"', '"10.0.0.1/24"'), "sites[0].networks[0].cidr"),
        (("national_default = true", "national_default = false"), "centres[0].national_default"),
        (('sip_uri = "sip:112@127.0.0.1:5090"', 'sip_uri = "tel:112"'), "centres[0].sip_uri"),
        (('id = "acme"\n', 'id = "acme corp"\n'), "customers[0].id"),
        (("[[customers]]", "[[customer]]"), "customer"),
        (
            ('company = "Acme Oy"', 'company = "Acme Oy"\nsecurity_desk = "tel:+358401"'),
            "customers[0].security_desk",
        ),
    ],
)
def test_bad_values_are_named(change: tuple[str, str], field: str) -> None:
    bad = GOOD_TOML.replace(*change, 1)
    assert bad != GOOD_TOML
    assert field in [f for _, f in _errors(bad, "toml")]


def test_duplicates_and_cross_references() -> None:
    dup = (
        GOOD_TOML
        + """
[[subscribers]]
e164 = "+358401234567"
sip_user = "u1"
customer = "acme"

[[devices]]
id = "d1"
kind = "desk-phone"
sip_user = "ghost"
instance_id = "urn:uuid:1"

[[centres]]
id = "second"
name = "Second"
sip_uri = "sip:112@127.0.0.1:5091"
municipalities = ["Espoo"]
secondary = "second"
national_default = true
"""
    )
    fields = [f for _, f in _errors(dup, "toml")]
    assert "subscribers[1].sip_user" in fields
    assert "subscribers[1].e164" in fields
    assert "devices[0].sip_user" in fields
    assert "centres[1].national_default" in fields
    assert "centres[1].secondary" in fields


def test_security_desk_is_read_and_validated() -> None:
    good = GOOD_TOML.replace(
        'company = "Acme Oy"', 'company = "Acme Oy"\nsecurity_desk = "sip:desk@10.0.0.9:5070"'
    )
    (customer,) = parse_sites(good, "toml").customers
    assert customer.security_desk == "sip:desk@10.0.0.9:5070"
    assert parse_sites(GOOD_TOML, "toml").customers[0].security_desk is None
    for bad_uri in (
        "https://desk.example/112",
        "sip:desk@host?Subject=spoofed",
        "sip:desk@bad host",
        "sip:desk@10.0.0.9:70000",
        "sip:",
    ):
        bad = GOOD_TOML.replace(
            'company = "Acme Oy"', f'company = "Acme Oy"\nsecurity_desk = "{bad_uri}"'
        )
        with pytest.raises(SitesFileError) as info:
            parse_sites(bad, "toml")
        (error,) = info.value.errors
        assert (error.line, error.field) == (4, "customers[0].security_desk"), bad_uri
        assert bad_uri in error.problem
    csv_text = CSV_GOOD + _csv_row(
        record="customer", id="acme", company="Acme Oy", security_desk="mailto:desk@x"
    )
    assert _errors(csv_text, "csv") == [(2, "customer.security_desk")]


def test_customer_refuses_a_bad_desk_uri() -> None:
    with pytest.raises(ValueError, match="security_desk"):
        Customer(id="acme", company="Acme Oy", security_desk="desk@example")


def test_toml_syntax_error_names_line() -> None:
    errors = _errors(GOOD_TOML + "\nbroken = = 1\n", "toml")
    assert errors[0][1] == "<file>"
    assert errors[0][0] == 26


CSV_GOOD = ",".join(CSV_COLUMNS) + "\n"


def _csv_row(**cells: str) -> str:
    return ",".join(cells.get(c, "") for c in CSV_COLUMNS) + "\n"


def test_csv_bad_row_names_line_and_field() -> None:
    text = (
        CSV_GOOD
        + "# comment line\n"
        + _csv_row(record="customer", id="acme", company="Acme Oy")
        + _csv_row(record="site", id="hq", customer="acme", name="HQ", country="FI")
        + _csv_row(record="network", site="hq", cidr="10.0.0.0/24", kind="office-lan")
        + _csv_row(record="network", site="hq", cidr="not-a-net", kind="office-lan")
        + _csv_row(
            record="subscriber", e164="+358401", sip_user="u", customer="acme", cidr="10.0.0.0/8"
        )
        + _csv_row(record="gizmo", id="x")
    )
    assert _errors(text, "csv") == [
        (6, "network.cidr"),
        (7, "subscriber.cidr"),
        (8, "gizmo"),
    ]


def test_csv_header_must_be_known() -> None:
    assert _errors("record,id,colour\n", "csv") == [(1, "<header>")]
    assert _errors("id,record\n", "csv") == [(1, "<header>")]


@pytest.mark.parametrize("fmt", ["toml", "csv"])
def test_demo_round_trip(fmt: str) -> None:
    data = demo_data()
    text = dump_sites(data, fmt)
    again = parse_sites(text, fmt)
    assert again.sorted() == data.sorted()
    assert dump_sites(again, fmt) == text


def test_demo_file_contents() -> None:
    data = demo_data()
    setera = next(s for s in data.sites if s.id == "setera-espoo")
    assert setera.address.a3 == "Espoo"
    assert setera.address.pc == "02130"
    assert {c.name for c in data.centres} >= {
        f"Hätäkeskus {city}" for city in ("Kerava", "Turku", "Pori", "Vaasa", "Kuopio", "Oulu")
    }
    assert sum(c.national_default for c in data.centres) == 1
    assert DEMO_SITES.suffix == ".toml"
    desks = {c.id: c.security_desk for c in data.customers}
    assert desks == {"setera": "sip:desk@127.0.70.1:5070", "esimerkki": None, "suljettu": None}


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="format"):
        parse_sites("", "yaml")
    with pytest.raises(ValueError, match="format"):
        dump_sites(demo_data(), "yaml")


NUMBERS_TOML = """\
[[customers]]
id = "a"
company = "A Oy"

[[customers]]
id = "b"
company = "B Oy"

[[subscribers]]
e164 = "+358912340001"
sip_user = "a1"
customer = "a"

[[subscribers]]
e164 = "+358401234567"
sip_user = "b1"
customer = "b"

[[numbers]]
customer = "a"
range = "+358 9 1234 xxxx"

[[numbers]]
customer = "b"
range = "+358 9 1234 5xxx"

[[numbers]]
customer = "b"
range = "+358 40 999 xxxx"
"""


def test_number_ranges_overlap_and_subscriber_outside_name_line_and_field() -> None:
    with pytest.raises(SitesFileError) as err:
        parse_sites(NUMBERS_TOML, "toml")
    messages = [str(e) for e in err.value.errors]
    assert messages == [
        "line 25: numbers[1].range: +358912345xxx overlaps +35891234xxxx of customer 'a' (line 21)",
        "line 15: subscribers[1].e164: +358401234567 is outside the number ranges of customer 'b'",
    ]


def test_number_ranges_csv_and_a_number_in_another_customers_range() -> None:
    csv_text = (
        "record,id,company,e164,sip_user,customer,range,roaming\n"
        "customer,a,A Oy,,,,,\n"
        "customer,b,B Oy,,,,,\n"
        "subscriber,,,+358912340001,b1,b,,\n"
        "number,,,,,a,+358 9 1234 xxxx,false\n"
        "number,,,,,a,+358 9 1234 0001,true\n"
        "number,,,,,a,+358 9 12x4,\n"
    )
    with pytest.raises(SitesFileError) as err:
        parse_sites(csv_text, "csv")
    messages = [str(e) for e in err.value.errors]
    assert messages[0].startswith("line 7: number.range: expected an E.164 number or block")
    assert messages[1] == (
        "line 6: number.range: +358912340001 overlaps +35891234xxxx of customer 'a' (line 5)"
    )
    assert messages[2] == (
        "line 4: subscriber.e164: +358912340001 is in range +35891234xxxx of customer 'a',"
        " not of 'b'"
    )


def test_demo_number_ranges_round_trip() -> None:
    data = demo_data()
    assert len(data.number_ranges) == 4
    for fmt in ("toml", "csv"):
        assert parse_sites(dump_sites(data, fmt), fmt).sorted() == data.sorted()
