"""Pure REGISTER logic (RFC 3261 10.3) and the [registrar] config section."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.registrar.bindings import (
    Binding,
    ExpiresPolicy,
    RegisterError,
    canonical_aor,
    check_min_expires,
    format_contact,
    parse_register,
    plan_update,
)
from gateway.registrar.config import RegistrarConfig
from gateway.registrar.digest import Algorithm
from gateway.registrar.routing import best_binding, request_uri_for
from gateway.sip.events import Endpoint
from gateway.sip.uri import SipUri, parse_uri
from routing.configfields import ConfigError, Table
from tests.registrar.helpers import load_rfc4475, register

POLICY = ExpiresPolicy(min_expires=60, max_expires=3600, default_expires=1800)
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _binding(id: int, contact: str, **kw: object) -> Binding:
    fields: dict[str, object] = {
        "id": id,
        "aor": "sip:alice@example.com",
        "contact": contact,
        "call_id": "call-1",
        "cseq": 5,
        "received": Endpoint("UDP", "127.0.0.1", 5060),
        "registered_at": T0,
        "expires_at": T0,
        "expires": 100,
    }
    fields.update(kw)
    return Binding(**fields)  # type: ignore[arg-type]


def test_canonical_aor_drops_params_and_escapes() -> None:
    uri = parse_uri("sips:%61lice@Example.COM;user=phone")
    assert isinstance(uri, SipUri)
    assert canonical_aor(uri) == "sip:alice@example.com"
    with_port = parse_uri("sip:bob@10.0.0.1:5070;transport=tcp")
    assert isinstance(with_port, SipUri)
    assert canonical_aor(with_port) == "sip:bob@10.0.0.1:5070"


def test_parse_register_reads_contacts_and_expiry() -> None:
    request = register(
        contacts=(
            '"A" <sip:a@192.0.2.1>;expires=120;q=0.5;+sip.instance="<urn:uuid:1>";reg-id=2',
            "<sip:a@192.0.2.2>;foo=bar",
            "<sip:a@192.0.2.3>;expires=99999",
            "<sip:a@192.0.2.4>;expires=0",
        ),
        expires=None,
        extra=(("User-Agent", "UA/1"),),
    )
    update = parse_register(request, policy=POLICY)
    assert update.aor == "sip:alice@voip.example.fi"
    assert (update.call_id, update.cseq, update.user_agent) == ("call-1", 1, "UA/1")
    first, second, third, fourth = update.contacts
    assert (first.expires, first.q, first.instance_id, first.reg_id) == (
        120,
        0.5,
        "<urn:uuid:1>",
        2,
    )
    assert first.display_name == "A"
    assert first.params_text == ';q=0.5;+sip.instance="<urn:uuid:1>";reg-id=2'
    assert (second.expires, second.params_text) == (1800, ";foo=bar")  # default
    assert third.expires == 3600  # capped
    assert fourth.expires == 0


def test_rfc4475_contact_forms() -> None:
    (regescrt,) = parse_register(load_rfc4475("regescrt.dat"), policy=POLICY).contacts
    assert regescrt.uri == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
    (header_param,) = parse_register(load_rfc4475("cparam01.dat"), policy=POLICY).contacts
    assert (header_param.uri, header_param.params) == (
        "sip:+19725552222@gw1.example.net",
        (("unknownparam", None),),
    )
    (uri_param,) = parse_register(load_rfc4475("cparam02.dat"), policy=POLICY).contacts
    assert (uri_param.uri, uri_param.params) == (
        "sip:+19725552222@gw1.example.net;unknownparam",
        (),
    )
    with pytest.raises(RegisterError) as info:
        parse_register(load_rfc4475("unksm2.dat"), policy=POLICY)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("contacts", "expires", "status"),
    [
        (("*",), 60, 400),  # wildcard needs Expires: 0
        (("*", "<sip:a@192.0.2.1>"), 0, 400),  # wildcard mixed with contacts
        (("<sip:a@192.0.2.1>;q=1.5",), 60, 400),
        (("<sip:a@192.0.2.1>;q=abc",), 60, 400),
        (('<sip:a@192.0.2.1>;+sip.instance="<urn:x>";reg-id=0',), 60, 400),
    ],
)
def test_parse_register_rejects(contacts: tuple[str, ...], expires: int, status: int) -> None:
    with pytest.raises(RegisterError) as info:
        parse_register(register(contacts=contacts, expires=expires), policy=POLICY)
    assert info.value.status == status


def test_request_uri_scheme_and_to() -> None:
    request = register()
    request.uri = "tel:+358401234567"
    with pytest.raises(RegisterError) as info:
        parse_register(request, policy=POLICY)
    assert info.value.status == 416
    request = register()
    request.headers.set("To", "<tel:+358401234567>")
    with pytest.raises(RegisterError) as info:
        parse_register(request, policy=POLICY)
    assert (info.value.status, info.value.reason) == (400, "To Is Not A SIP URI")


def test_reg_id_without_instance_is_ignored() -> None:
    (contact,) = parse_register(
        register(contacts=("<sip:a@192.0.2.1>;reg-id=7",)), policy=POLICY
    ).contacts
    assert (contact.instance_id, contact.reg_id) == (None, None)


def test_min_expires() -> None:
    brief = parse_register(register(expires=59), policy=POLICY)
    with pytest.raises(RegisterError) as info:
        check_min_expires(brief, POLICY)
    assert (info.value.status, info.value.headers) == (423, (("Min-Expires", "60"),))
    check_min_expires(parse_register(register(expires=60), policy=POLICY), POLICY)
    check_min_expires(parse_register(register(expires=0), policy=POLICY), POLICY)
    with pytest.raises(ValueError, match="3600"):
        ExpiresPolicy(min_expires=4000, max_expires=8000, default_expires=5000)


def test_plan_update_step_7() -> None:
    current = [_binding(1, "sip:a@192.0.2.1"), _binding(2, "SIP:a@192.0.2.2")]
    update = parse_register(
        register(
            contacts=(
                "<sip:a@192.0.2.1>",  # same URI: update
                "<sip:a@192.0.2.2>;expires=0",  # equal URI (scheme case): delete
                "<sip:a@192.0.2.3>",  # new: insert
                "<sip:a@192.0.2.4>;expires=0",  # new with 0: nothing
            ),
            call_id="call-1",
            cseq=6,
        ),
        policy=POLICY,
    )
    plan = plan_update(current, update)
    assert plan.delete == (2,)
    assert [i for i, _ in plan.update] == [1]
    assert [c.uri for c in plan.insert] == ["sip:a@192.0.2.3"]
    # Same Call-ID, CSeq not higher: the whole update fails.
    old = parse_register(register(contacts=("<sip:a@192.0.2.1>",), cseq=5), policy=POLICY)
    with pytest.raises(RegisterError):
        plan_update(current, old)
    # Another Call-ID: fine whatever the CSeq.
    other = parse_register(
        register(contacts=("<sip:a@192.0.2.1>",), call_id="x", cseq=1), policy=POLICY
    )
    assert [i for i, _ in plan_update(current, other).update] == [1]
    # Wildcard removes all, subject to the same ordering rule.
    wildcard = parse_register(register(contacts=("*",), expires=0, cseq=9), policy=POLICY)
    assert plan_update(current, wildcard).delete == (1, 2)
    stale_wildcard = parse_register(register(contacts=("*",), expires=0, cseq=2), policy=POLICY)
    with pytest.raises(RegisterError):
        plan_update(current, stale_wildcard)


def test_plan_update_duplicate_contacts_and_instance_key() -> None:
    update = parse_register(
        register(contacts=("<sip:a@192.0.2.9>;expires=100", "<sip:a@192.0.2.9>;expires=200")),
        policy=POLICY,
    )
    (insert,) = plan_update([], update).insert
    assert insert.expires == 200
    flow = _binding(3, "sip:a@10.0.0.1:5060", instance_id="<urn:uuid:1>", reg_id=1)
    moved = parse_register(
        register(contacts=('<sip:a@10.0.0.1:6000>;+sip.instance="<urn:uuid:1>";reg-id=1',), cseq=9),
        policy=POLICY,
    )
    plan = plan_update([flow], moved)
    assert ([i for i, _ in plan.update], plan.insert) == ([3], ())


def test_format_contact_and_routing_helpers() -> None:
    binding = _binding(
        1,
        "sip:a@192.0.2.1;transport=tcp?Route=%3Csip:x%3E",
        display_name='Al "the" A',
        params=";q=0.5",
        q=0.5,
        expires=42,
    )
    assert format_contact(binding) == (
        '"Al \\"the\\" A" <sip:a@192.0.2.1;transport=tcp?Route=%3Csip:x%3E>;q=0.5;expires=42'
    )
    assert request_uri_for(binding) == "sip:a@192.0.2.1;transport=tcp"
    with pytest.raises(ValueError, match="not a SIP URI"):
        request_uri_for(_binding(2, "mailto:a@example.com"))
    newer = _binding(3, "sip:a@192.0.2.3", registered_at=T0.replace(year=2026))
    preferred = _binding(4, "sip:a@192.0.2.4", q=0.9)
    assert best_binding([binding, newer]) is newer  # no q counts as 1.0
    assert best_binding([binding, preferred]) is preferred
    assert best_binding([]) is None


def test_config_from_table(tmp_path: Path) -> None:
    key = tmp_path / "digest.key"
    key.write_text("k" * 32 + "\n")
    config = RegistrarConfig.from_table(
        Table(
            {
                "realm": "voip.example.fi",
                "domains": ["VOIP.example.fi"],
                "secret_file": str(key),
                "algorithms": ["MD5"],
                "min_expires": 30,
            },
            "registrar",
        )
    )
    assert config.secret == b"k" * 32
    assert config.domains == ("voip.example.fi",)
    assert config.algorithms == (Algorithm.MD5,)
    assert config.expires_policy.min_expires == 30
    assert "kkkk" not in repr(config)
    defaults = RegistrarConfig.from_table(
        Table({"realm": "r", "secret": "0123456789abcdef"}, "registrar")
    )
    # MD5 alone by default: what baresip 1.0 and SIPp can answer (issue 13).
    assert defaults.algorithms == (Algorithm.MD5,)
    assert defaults.accept_rfc2069


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"secret": "0123456789abcdef"}, r"^registrar.realm: required field is missing"),
        ({"realm": "r"}, r"^registrar.secret: give exactly one"),
        ({"realm": "r", "secret": "short"}, r"^registrar.secret: must be at least 16"),
        ({"realm": "r", "secret_file": "/nonexistent/key"}, r"^registrar.secret_file: cannot"),
        (
            {"realm": "r", "secret": "0123456789abcdef", "algorithms": ["SHA-512"]},
            r"^registrar.algorithms\[0\]: expected SHA-256 or MD5",
        ),
        (
            {"realm": "r", "secret": "0123456789abcdef", "algorithms": []},
            r"^registrar.algorithms: at least one",
        ),
        (
            {"realm": "r", "secret": "0123456789abcdef", "min_expires": 7200},
            r"^registrar.min_expires: must be <= 3600",
        ),
        (
            {"realm": "r", "secret": "0123456789abcdef", "max_expires": 10},
            r"^registrar.max_expires: must be >= 60",
        ),
        ({"realm": "r", "secret": "0123456789abcdef", "realmm": 1}, r"^registrar.realmm: unknown"),
    ],
)
def test_config_errors_name_the_field(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RegistrarConfig.from_table(Table(table, "registrar"))
