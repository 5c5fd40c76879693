"""``[cluster]`` and the multi-host ``[database] url``: defaults, and errors that name
the field (issue 16)."""

from __future__ import annotations

import socket

import pytest

from gateway.config import parse_config
from routing.configfields import ConfigError


def doc(**sections: dict[str, object]) -> dict[str, object]:
    base: dict[str, object] = {
        "sip": {"listen": [{"transport": "UDP", "host": "127.0.0.1", "port": 5070}]},
        "upstream": {"uri": "sip:127.0.0.1:5080"},
    }
    return base | sections


def test_cluster_defaults_name_the_host_and_the_first_listener() -> None:
    config = parse_config(doc(cluster={}))
    assert config.cluster is not None
    assert config.cluster.instance == socket.gethostname() == config.instance
    assert config.cluster.sip_uri == "sip:127.0.0.1:5070"
    assert (config.cluster.heartbeat_interval, config.cluster.dead_after) == (5.0, 30.0)


def test_cluster_takes_the_gateway_instance_name_and_ipv6_listeners() -> None:
    config = parse_config(
        doc(
            gateway={"instance": "gw-a"},
            sip={"listen": [{"transport": "UDP", "host": "::1", "port": 5060}]},
            cluster={},
        )
    )
    assert config.cluster is not None
    assert (config.cluster.instance, config.instance) == ("gw-a", "gw-a")
    assert config.cluster.sip_uri == "sip:[::1]:5060"


@pytest.mark.parametrize(
    ("listen", "shown"),
    [
        ({"transport": "UDP", "host": "127.0.0.1", "port": 0}, "UDP 127.0.0.1:0"),
        ({"transport": "UDP", "host": "0.0.0.0", "port": 5060}, "UDP 0.0.0.0:5060"),
        ({"transport": "TCP", "host": "::", "port": 5060}, "TCP [::]:5060"),
    ],
)
def test_sip_uri_without_a_reachable_listener_must_be_given(
    listen: dict[str, object], shown: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(doc(sip={"listen": [listen]}, cluster={}))
    assert raised.value.field == "cluster.sip_uri"
    assert f"sip.listen[0] ({shown}) names no address" in raised.value.problem
    # Given, it is taken as it is: the listener's port 0 does not matter then.
    config = parse_config(doc(sip={"listen": [listen]}, cluster={"sip_uri": "sip:192.0.2.11:5060"}))
    assert config.cluster is not None
    assert config.cluster.sip_uri == "sip:192.0.2.11:5060"


def test_sip_uri_defaults_to_a_tls_listener_as_sips() -> None:
    listen = [{"transport": "TLS", "host": "192.0.2.11", "port": 5061}]
    tls = {"certificate": "c.pem", "private_key": "k.pem"}
    config = parse_config(doc(sip={"listen": listen, "tls": tls}, cluster={}))
    assert config.cluster is not None
    assert config.cluster.sip_uri == "sips:192.0.2.11:5061"


def test_without_cluster_the_instance_is_as_before() -> None:
    config = parse_config(doc())
    assert config.cluster is None
    assert config.instance == "voipgw-1"


@pytest.mark.parametrize(
    ("sections", "field", "problem"),
    [
        ({"cluster": {"dead_after": 5.0}}, "cluster.dead_after", "more than heartbeat_interval"),
        (
            {"cluster": {"heartbeat_interval": 2.0, "dead_after": 2.0}},
            "cluster.dead_after",
            "more than heartbeat_interval",
        ),
        ({"cluster": {"sip_uri": "http://x"}}, "cluster.sip_uri", ""),
        ({"cluster": {"sip_uri": "sip:127.0.0.1:0"}}, "cluster.sip_uri", "port 0"),
        ({"cluster": {"instance": ""}}, "cluster.instance", "must not be empty"),
        (
            {"gateway": {"instance": "gw-a"}, "cluster": {"instance": "gw-b"}},
            "cluster.instance",
            "must equal gateway.instance",
        ),
        ({"cluster": {"heartbeat": 1.0}}, "cluster.heartbeat", ""),
        (
            {"database": {"url": "postgresql://db1:5432,db2:5432/voipgw"}},
            "database.url",
            "target_session_attrs",
        ),
        (
            {
                "database": {
                    "url": "postgresql://db1:5432,db2:x/voipgw?target_session_attrs=read-write"
                }
            },
            "database.url",
            "bad port 'x'",
        ),
        (
            {"database": {"url": "postgresql://db1,db2/v?target_session_attrs=primary-ish"}},
            "database.url",
            "target_session_attrs must be one of",
        ),
        ({"database": {"url": "mysql://db1/voipgw"}}, "database.url", "postgresql://"),
        ({"database": {"url": "postgresql://db1,,db2/v"}}, "database.url", "empty host"),
    ],
)
def test_bad_fields_are_named(
    sections: dict[str, dict[str, object]], field: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(doc(**sections))
    assert raised.value.field == field
    assert problem in raised.value.problem


def test_a_multi_host_url_with_read_write_is_accepted() -> None:
    url = "postgresql://voipgw@db1:5432,db2:5433/voipgw?target_session_attrs=read-write"
    assert parse_config(doc(database={"url": url})).database.url == url
