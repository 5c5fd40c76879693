"""The config file: the demo validates; a bad field is named and the CLI exits 2."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cdr.db import state_dir_of
from gateway.config import load_config, parse_config
from routing.configfields import ConfigError
from tests.ops.harness import voipgw_command

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "deploy" / "demo" / "voipgw.toml"


def minimal(**overrides: object) -> dict:
    doc: dict = {
        "sip": {"listen": [{"transport": "UDP", "host": "127.0.0.1", "port": 5060}]},
        "upstream": {"uri": "sip:127.0.0.1:5080"},
    }
    doc.update(overrides)
    return doc


def test_demo_config_is_valid() -> None:
    config = load_config(DEMO)
    assert {item.transport for item in config.sip.listen} == {"UDP", "TCP"}
    assert {"routing", "registrar", "media", "guard", "cdr", "database"} <= set(config.sections)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (
            minimal(sip={"listen": [{"transport": "UDP", "host": "127.0.0.1", "port": 70000}]}),
            "sip.listen[0].port",
        ),
        (
            minimal(sip={"listen": [{"transport": "SCTP", "host": "127.0.0.1"}]}),
            "sip.listen[0].transport",
        ),
        (
            minimal(sip={"listen": [{"transport": "UDP", "host": "pbx.example"}]}),
            "sip.listen[0].host",
        ),
        (minimal(sip={"listen": []}), "sip.listen"),
        (minimal(upstream={"uri": "mailto:x@y"}), "upstream.uri"),
        (minimal(upstream={}), "upstream.uri"),
        (
            minimal(sip={"listen": [{"transport": "UDP", "host": "127.0.0.1"}], "t1": "fast"}),
            "sip.t1",
        ),
        (minimal(overload={"max_calls": 0}), "overload.max_calls"),
        (minimal(cdr={"retention_months": "15"}), "cdr.retention_months"),
        (minimal(bogus={"x": 1}), "bogus"),
        (
            minimal(sip={"listen": [{"transport": "UDP", "host": "127.0.0.1", "prot": 5}]}),
            "sip.listen[0].prot",
        ),
        (minimal(registrar={"realm": "r"}), "registrar.secret"),
        (
            minimal(
                registrar={
                    "realm": "r",
                    "secret": "0123456789abcdef",
                    "register_from_trusted_peers": "yes",
                }
            ),
            "registrar.register_from_trusted_peers",
        ),
        (minimal(overload={"emergency_reserve": -1}), "overload.emergency_reserve"),
        (minimal(overload={"emergency_reserve": "many"}), "overload.emergency_reserve"),
        (minimal(overload={"load_shedding": "yes"}), "overload.load_shedding"),
        (minimal(overload={"shed_lag": "fast"}), "overload.shed_lag"),
        (minimal(overload={"shed_lag": 0.0}), "overload.shed_lag"),
        # At or below the sample interval: a busy loop would shed at moderate load.
        (minimal(overload={"shed_lag": 0.01, "sample_interval": 0.01}), "overload.shed_lag"),
        (minimal(overload={"shed_receive_queue": 100}), "overload.shed_receive_queue"),
        (minimal(overload={"sample_interval": 2.0}), "overload.sample_interval"),
        (minimal(overload={"calm_sample_interval": 0.0}), "overload.calm_sample_interval"),
        # Calm sampling faster than the busy one would be no calm at all.
        (
            minimal(overload={"sample_interval": 0.02, "calm_sample_interval": 0.01}),
            "overload.calm_sample_interval",
        ),
        (minimal(overload={"shed_after": -1}), "overload.shed_after"),
        (
            minimal(sip={"listen": [{"transport": "UDP", "host": "127.0.0.1"}], "min_se": 0}),
            "sip.min_se",
        ),
        (
            minimal(
                sip={
                    "listen": [{"transport": "UDP", "host": "127.0.0.1"}],
                    "session_expires": 60,
                }
            ),
            "sip.session_expires",
        ),
        (minimal(media={"media_timeout": 1}), "media.media_timeout"),
    ],
)
def test_bad_field_is_named(doc: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert info.value.field.startswith(field), str(info.value)


def test_check_config_cli_names_the_field_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(DEMO.read_text().replace("port = 5060", "port = -1", 1))
    result = subprocess.run(
        [voipgw_command(), "check-config", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    assert "sip.listen[0].port" in result.stderr
    ok = subprocess.run(
        [voipgw_command(), "check-config", "--config", str(DEMO)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr


def test_not_toml_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[sip\nlisten = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_emergency_reserve_is_read() -> None:
    # Issue 19: it was accepted with a warning and ignored; now it is the headroom
    # above max_calls that emergency calls draw on.
    config = parse_config(minimal(overload={"max_calls": 10, "emergency_reserve": 5}))
    assert (config.overload.max_calls, config.overload.emergency_reserve) == (10, 5)
    assert parse_config(minimal()).overload.emergency_reserve == 100


def test_load_shedding_defaults_and_settings() -> None:
    default = parse_config(minimal()).overload
    assert default.load_shedding
    assert (
        default.shed_lag,
        default.shed_receive_queue,
        default.sample_interval,
        default.calm_sample_interval,
    ) == (0.05, 131072, 0.01, 0.05)
    set_ = parse_config(
        minimal(overload={"load_shedding": False, "shed_lag": 0.1, "shed_receive_queue": 65536})
    ).overload
    assert (set_.load_shedding, set_.shed_lag, set_.shed_receive_queue) == (False, 0.1, 65536)


def test_sections_are_typed_fields() -> None:
    config = load_config(DEMO)
    assert config.routing is not None and config.routing.default_next_hop
    assert config.notify is not None  # read whenever [routing] is
    bare = parse_config(minimal())
    assert bare.routing is None and bare.registrar is None and bare.media is None
    assert bare.notify is None
    assert bare.guard == config.guard.__class__()  # defaults when absent


def test_session_timer_defaults_and_switch() -> None:
    policy = parse_config(minimal()).sip.session_timer_policy
    assert policy is not None and (policy.interval, policy.min_se) == (1800, 90)
    off = minimal(
        sip={"listen": [{"transport": "UDP", "host": "127.0.0.1"}], "session_timers": False}
    )
    assert parse_config(off).sip.session_timer_policy is None


def test_edge_proxies_are_read_and_may_not_be_trusted_peers() -> None:
    listen = [{"transport": "UDP", "host": "127.0.0.1", "port": 5060}]
    config = parse_config(minimal(sip={"listen": listen, "edge_proxies": ["127.0.0.2"]}))
    assert [str(n) for n in config.sip.edge_proxies] == ["127.0.0.2/32"]
    assert parse_config(minimal()).sip.edge_proxies == ()
    with pytest.raises(ConfigError, match=r"sip\.edge_proxies\[0\].*overlaps upstream"):
        parse_config(
            minimal(
                sip={"listen": listen, "edge_proxies": ["127.0.0.0/24"]},
                upstream={"uri": "sip:127.0.0.1:5080", "trusted_peers": ["127.0.0.1/32"]},
            )
        )
    with pytest.raises(ConfigError, match=r"sip\.edge_proxies\[0\]"):
        parse_config(minimal(sip={"listen": listen, "edge_proxies": ["kamailio"]}))


def test_database_and_spool_follow_the_gateways_state_dir_unless_set() -> None:
    # Before, they stayed in ./state whatever [gateway] state_dir said: two gateways
    # with their own state_dir shared one (locked) spool and one pgdata.
    moved = parse_config(minimal(gateway={"state_dir": "/var/lib/gw-a"}))
    assert moved.database.state_dir == "/var/lib/gw-a"
    assert moved.cdr.spool_dir == "/var/lib/gw-a/cdr-spool"
    default = parse_config(minimal())
    assert (default.database.state_dir, default.cdr.spool_dir) == ("state", "state/cdr-spool")
    own = parse_config(
        minimal(
            gateway={"state_dir": "/var/lib/gw-a"},
            database={"state_dir": "/srv/pg"},
            cdr={"spool_dir": "/srv/spool"},
        )
    )
    assert (own.database.state_dir, own.cdr.spool_dir) == ("/srv/pg", "/srv/spool")
    # The commands that read only [database] / [cdr] of the same file agree.
    assert state_dir_of({"gateway": {"state_dir": "/var/lib/gw-a"}}) == "/var/lib/gw-a"
    assert state_dir_of({}) == "state"
