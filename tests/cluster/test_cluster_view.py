"""Which flow owners the heartbeats say are gone (gateway/cluster/liveness.py
ClusterView): the pure decision the call path asks without awaiting anything."""

from __future__ import annotations

import dataclasses

from gateway.cluster.liveness import ClusterView, InstanceSeen

A = "sip:127.0.0.1:5070"
B = "sip:127.0.0.1:5071"
DEAD_AFTER = 3.0
READ_AT = 100.0


def view(*rows: tuple[str, float, bool]) -> ClusterView:
    return ClusterView(
        instances=tuple(
            InstanceSeen(sip_uri=uri, silent_for=silent, declared_dead=dead)
            for uri, silent, dead in rows
        ),
        read_at=READ_AT,
        dead_after=DEAD_AFTER,
    )


def test_silent_longer_than_dead_after_or_declared_dead_is_gone() -> None:
    seen = view((A, 0.4, False), (B, 3.2, False))
    assert not seen.gone(A, READ_AT)
    assert seen.gone(B, READ_AT)
    # Exactly dead_after is not yet more than it (the reaper's own condition).
    assert not view((B, DEAD_AFTER, False)).gone(B, READ_AT)
    # Declared dead by another survivor, whatever this read says of its silence.
    assert view((B, 0.1, True)).gone(B, READ_AT)


def test_addresses_compare_as_transport_addresses() -> None:
    seen = view(("sip:127.0.0.1:5071;transport=udp", 9.0, False))
    assert seen.gone(B, READ_AT)
    assert not seen.gone(A, READ_AT)
    assert view(("sip:[0:0::1]", 9.0, False)).gone("sip:[::1]:5060", READ_AT)
    assert not seen.gone("tel:+358401", READ_AT)


def test_restarted_under_another_name_on_the_same_address_is_alive() -> None:
    # The old row declared dead, the restarted instance's row fresh: not gone.
    assert not view((B, 40.0, True), (B, 0.2, False)).gone(B, READ_AT)


def test_an_owner_without_a_row_is_not_taken_for_gone() -> None:
    # Not heartbeating yet, or it stopped cleanly and removed its row.
    assert not view((A, 0.1, False)).gone(B, READ_AT)


def test_a_view_older_than_dead_after_judges_nobody() -> None:
    seen = view((B, 9.0, True))
    assert seen.gone(B, READ_AT + DEAD_AFTER)
    # This instance could not read the table for longer: B may be back meanwhile.
    assert not seen.gone(B, READ_AT + DEAD_AFTER + 0.01)


def test_a_worker_is_gone_with_its_machine_not_alone() -> None:
    worker = "sip:127.0.0.1:5081"
    machine = InstanceSeen(sip_uri=A, silent_for=0.4, declared_dead=False, worker_uris=(worker, B))
    live = ClusterView(instances=(machine,), read_at=READ_AT, dead_after=DEAD_AFTER)
    assert not live.gone(worker, READ_AT)
    dead = ClusterView(
        instances=(dataclasses.replace(machine, silent_for=9.0),),
        read_at=READ_AT,
        dead_after=DEAD_AFTER,
    )
    assert dead.gone(worker, READ_AT) and dead.gone(A, READ_AT)
    assert not dead.gone("sip:127.0.0.1:5082", READ_AT)  # nobody's: never judged
