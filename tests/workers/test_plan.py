"""``[server]`` and what each worker runs with (gateway.config, gateway.workers.plan)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config, parse_config
from gateway.workers.plan import orphaned_spools, worker_config, worker_share
from routing.configfields import ConfigError


def doc(server: dict[str, object] | None = None, **sections: object) -> dict[str, object]:
    document: dict[str, object] = {
        "gateway": {"instance": "gw-a"},
        "sip": {
            "listen": [
                {"transport": "UDP", "host": "192.0.2.10", "port": 5060},
                {"transport": "TCP", "host": "192.0.2.10", "port": 5060},
            ]
        },
        "upstream": {"uri": "sip:192.0.2.20"},
        "metrics": {"port": 9464},
        "cdr": {"spool_dir": "/var/lib/voipgw/spool"},
    }
    if server is not None:
        document["server"] = server
    document.update(sections)
    return document


def test_one_worker_by_default_with_ports_next_to_the_listener_and_metrics() -> None:
    server = parse_config(doc()).server
    assert server.workers == 1
    assert server.worker_sip_port == 5061
    assert server.worker_metrics_port == 9465
    assert server.worker_index == 0


def test_each_worker_is_an_instance_with_its_own_port_first_and_the_shared_after() -> None:
    config = parse_config(doc({"workers": 3, "worker_sip_port": 5100}))
    second = worker_config(config, 2)
    assert second.instance == "gw-a-w2"
    assert second.server.worker_index == 2
    listen = [(i.transport, i.host, i.port, i.shared) for i in second.sip.listen]
    # Own first: the SIP core advertises the first listener of a transport in Via
    # and Contact, and that must be the port only this worker binds.
    assert listen == [
        ("UDP", "192.0.2.10", 5101, False),
        ("TCP", "192.0.2.10", 5101, False),
        ("UDP", "192.0.2.10", 5060, True),
        ("TCP", "192.0.2.10", 5060, True),
    ]
    assert second.metrics.port == 9465 + 1
    assert second.cdr.spool_dir == "/var/lib/voipgw/spool/w2"
    assert worker_config(config, 3).metrics.port == 9467
    with pytest.raises(ValueError, match="worker 4 of 3"):
        worker_config(config, 4)


@pytest.mark.parametrize(
    ("server", "listen_port", "field", "text"),
    [
        ({"workers": 0}, 5060, "server.workers", ">= 1"),
        ({"workers": 65}, 5060, "server.workers", "<= 64"),
        ({"workers": 2, "worker_sip_port": 5059}, 5060, "server.worker_sip_port", "5059-5060"),
        ({"workers": 2}, 0, "sip.listen[0].port", "0 is not allowed"),
        ({"workers": 2, "worker_metrics_port": 9463}, 5060, "server.worker_metrics_port", "9464"),
        ({"workers": 2, "worker_sip_port": 65535}, 5060, "server.worker_sip_port", "65535"),
        ({"worker": 2}, 5060, "server.worker", "unknown"),
    ],
)
def test_bad_server_fields_are_named(
    server: dict[str, object], listen_port: int, field: str, text: str
) -> None:
    document = doc(server)
    document["sip"] = {"listen": [{"transport": "UDP", "host": "192.0.2.10", "port": listen_port}]}
    with pytest.raises(ConfigError) as info:
        parse_config(document)
    assert info.value.field == field, str(info.value)
    assert text in str(info.value)


def test_the_command_line_override_is_validated_like_the_file(tmp_path: Path) -> None:
    path = tmp_path / "voipgw.toml"
    path.write_text(
        '[sip]\nlisten = [{ transport = "UDP", host = "127.0.0.1", port = 0 }]\n'
        '[upstream]\nuri = "sip:127.0.0.1:5080"\n'
    )
    assert load_config(path).server.workers == 1
    with pytest.raises(ConfigError) as info:
        load_config(path, server={"workers": 2})
    assert info.value.field == "sip.listen[0].port"


def test_workers_beat_their_instance_and_hold_flows_at_their_own_port() -> None:
    config = parse_config(doc({"workers": 2, "worker_sip_port": 5100}, cluster={}))
    assert config.cluster is not None
    worker = worker_config(config, 2)
    assert worker.cluster is not None
    # The cluster's instance is the machine; the worker names its CDRs.
    assert worker.instance == "gw-a-w2"
    assert worker.cluster.instance == config.cluster.instance == "gw-a"
    assert worker.cluster.sip_uri == config.cluster.sip_uri == "sip:192.0.2.10:5060"
    assert worker.cluster.worker_uri == worker.cluster.flow_uri == "sip:192.0.2.10:5101"
    assert worker.cluster.dead_after == config.cluster.dead_after
    assert config.cluster.worker_uri is None
    assert config.cluster.flow_uri == config.cluster.sip_uri


def test_a_worker_is_reached_at_the_configured_sip_uri_host_on_its_own_port() -> None:
    config = parse_config(
        doc(
            {"workers": 2, "worker_sip_port": 5100},
            cluster={"sip_uri": "sips:gw-a.example.net:5061;transport=tls"},
        )
    )
    worker = worker_config(config, 1)
    assert worker.cluster is not None
    assert worker.cluster.worker_uri == "sips:gw-a.example.net:5100;transport=tls"


def test_whole_gateway_limits_are_shared_so_n_workers_admit_what_one_would() -> None:
    config = parse_config(
        doc(
            {"workers": 3},
            overload={"max_calls": 100, "emergency_reserve": 10},
            guard={"oc_capacity": 600.0},
            sip={
                "listen": [{"transport": "UDP", "host": "192.0.2.10", "port": 5060}],
                "max_transactions": 1000,
            },
        )
    )
    workers = [worker_config(config, index) for index in (1, 2, 3)]
    # Calls are counted over the machine (gateway.workers.calls): the limit is whole.
    assert [w.overload.max_calls for w in workers] == [100, 100, 100]
    assert [w.overload.emergency_reserve for w in workers] == [10, 10, 10]
    assert [w.sip.max_transactions for w in workers] == [334, 333, 333]
    assert [w.guard.oc_capacity for w in workers] == [200.0, 200.0, 200.0]
    # Per-source limits stay whole: the kernel sends one source to one worker.
    assert all(w.guard.invites == config.guard.invites for w in workers)
    # The time-based signals of load shedding are each worker's own.
    assert all(w.overload.shed_lag == config.overload.shed_lag for w in workers)


def test_a_worker_share_is_never_zero() -> None:
    assert [worker_share(2, index, 4) for index in (1, 2, 3, 4)] == [1, 1, 1, 1]
    assert [worker_share(10, index, 4) for index in (1, 2, 3, 4)] == [3, 3, 2, 2]


def _spool_segment(directory: Path) -> None:
    """A spool directory holding one (empty) segment, as a writer leaves it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "seg-00000000000000000001.cdr").write_bytes(b"VGWCDR1\n")


def test_orphaned_spools_after_going_back_to_one_process(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    _spool_segment(root)
    for index in (1, 2, 10):
        _spool_segment(root / f"w{index}")
    (root / "wx").mkdir()  # not a worker's
    (root / "w3").write_text("not a directory")
    config = parse_config(doc(cdr={"spool_dir": str(root)}))
    # The process writes the directory itself; every worker spool is left over, in
    # worker order, each with the name of the worker that wrote it.
    assert orphaned_spools(config) == (
        (root / "w1", "gw-a-w1"),
        (root / "w2", "gw-a-w2"),
        (root / "w10", "gw-a-w10"),
    )


def test_orphaned_spools_with_workers_are_the_extra_ones_and_the_directory_itself(
    tmp_path: Path,
) -> None:
    root = tmp_path / "spool"
    for index in (1, 2, 3, 4):
        _spool_segment(root / f"w{index}")
    config = parse_config(doc({"workers": 2}, cdr={"spool_dir": str(root)}))
    assert orphaned_spools(config) == ((root / "w3", "gw-a-w3"), (root / "w4", "gw-a-w4"))
    # A single process ran here before: the directory's own segments are its.
    _spool_segment(root)
    assert orphaned_spools(config)[0] == (root, "gw-a")
    # Nothing there at all (a first start): nothing to adopt.
    empty = parse_config(doc({"workers": 2}, cdr={"spool_dir": str(tmp_path / "new")}))
    assert orphaned_spools(empty) == ()
    assert orphaned_spools(parse_config(doc(cdr={"spool_dir": str(tmp_path / "new")}))) == ()


def test_worker_spools_are_the_ones_orphaned_spools_names(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    config = parse_config(doc({"workers": 3}, cdr={"spool_dir": str(root)}))
    for index in (1, 2, 3):
        spool = Path(worker_config(config, index).cdr.spool_dir)
        _spool_segment(spool)
        assert spool.parent == root
    # Three workers write them: none orphaned; one process would adopt all three.
    assert orphaned_spools(config) == ()
    single = parse_config(doc(cdr={"spool_dir": str(root)}))
    assert [name for _, name in orphaned_spools(single)] == [
        worker_config(config, index).instance for index in (1, 2, 3)
    ]
