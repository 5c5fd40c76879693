"""GuardConfig.from_table: the [guard] TOML section."""

from __future__ import annotations

import ipaddress
import tomllib

import pytest

from gateway.edge.guard import LossController
from gateway.edge.guard_config import DEFAULT_SCANNER_USER_AGENTS, GuardConfig, RateLimit
from routing.configfields import ConfigError, Table


def read(text: str) -> GuardConfig:
    return GuardConfig.from_table(Table(tomllib.loads(text).get("guard", {}), "guard"))


def test_defaults() -> None:
    config = read("")
    assert config == GuardConfig()
    assert config.enabled
    assert config.invites == RateLimit(rate=10.0, burst=20.0)
    assert config.scanner_user_agents == DEFAULT_SCANNER_USER_AGENTS
    assert LossController.from_config(config) is None


def test_every_field() -> None:
    config = read(
        """
        [guard]
        enabled = false
        requests_per_second = 30
        requests_burst = 60
        invites_per_second = 2.5
        invites_burst = 5
        registers_per_second = 0
        registers_burst = 1
        max_auth_failures = 3
        auth_failure_window = 30
        ban_time = 3600
        ban_scanners = false
        scanner_user_agents = ["^evil"]
        trusted_peers = ["10.20.0.0/16", "2001:db8::1"]
        max_sources = 500
        ipv6_prefix = 56
        oc_capacity = 150
        oc_target = 0.8
        oc_interval = 0.5
        oc_validity = 1.5
        """
    )
    assert config == GuardConfig(
        enabled=False,
        requests=RateLimit(rate=30, burst=60),
        invites=RateLimit(rate=2.5, burst=5),
        registers=RateLimit(rate=0, burst=1),
        max_auth_failures=3,
        auth_failure_window=30.0,
        ban_time=3600.0,
        ban_scanners=False,
        scanner_user_agents=("^evil",),
        trusted_peers=(
            ipaddress.ip_network("10.20.0.0/16"),
            ipaddress.ip_network("2001:db8::1/128"),
        ),
        max_sources=500,
        ipv6_prefix=56,
        oc_capacity=150.0,
        oc_target=0.8,
        oc_interval=0.5,
        oc_validity=1.5,
    )
    assert not config.registers.enabled
    controller = LossController.from_config(config)
    assert controller is not None
    assert (controller.capacity, controller.target, controller.validity) == (150.0, 0.8, 1.5)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("invites_per_second = -1", "guard.invites_per_second"),
        ("invites_burst = 0", "guard.invites_burst"),
        ("max_auth_failures = 0", "guard.max_auth_failures"),
        ("ban_time = 'long'", "guard.ban_time"),
        ('scanner_user_agents = ["(unclosed"]', "guard.scanner_user_agents[0]"),
        ('trusted_peers = ["10.0.0.300/8"]', "guard.trusted_peers[0]"),
        ("ipv6_prefix = 129", "guard.ipv6_prefix"),
        ("oc_target = 1.5", "guard.oc_target"),
        ("ban_tiem = 5", "guard.ban_tiem"),
    ],
)
def test_bad_fields_are_named(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        read("[guard]\n" + text)
    assert info.value.field == field


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ValueError, match="burst"):
        GuardConfig(invites=RateLimit(rate=1, burst=0.5))
    with pytest.raises(ValueError, match="oc_target"):
        GuardConfig(oc_target=0)
