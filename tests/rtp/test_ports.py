"""PortAllocator: even pairs, round robin, exhaustion, foreign holders skipped."""

from __future__ import annotations

import socket

import pytest

from gateway.rtp.ports import PortAllocator, PortsExhaustedError


def test_even_pairs_round_robin_and_release() -> None:
    allocator = PortAllocator(41301, 41306)  # pairs 41302/3, 41304/5
    assert allocator.capacity == 2
    rtp1, rtcp1 = allocator.bind_pair("127.0.0.1", "call-1")
    rtp2, rtcp2 = allocator.bind_pair("127.0.0.1", "call-2")
    try:
        assert (rtp1.getsockname()[1], rtcp1.getsockname()[1]) == (41302, 41303)
        assert (rtp2.getsockname()[1], rtcp2.getsockname()[1]) == (41304, 41305)
        assert allocator.in_use == {41302, 41304}
        assert allocator.leaked() == {41302: "call-1", 41304: "call-2"}
        with pytest.raises(PortsExhaustedError):
            allocator.bind_pair("127.0.0.1")
    finally:
        for s in (rtp1, rtcp1, rtp2, rtcp2):
            s.close()
    allocator.release(41302)
    allocator.release(41302)  # idempotent
    rtp3, rtcp3 = allocator.bind_pair("127.0.0.1")
    assert rtp3.getsockname()[1] == 41302  # the only free pair
    rtp3.close()
    rtcp3.close()
    allocator.release(41302)
    allocator.release(41304)
    assert allocator.leaked() == {}


def test_port_held_by_another_process_is_skipped() -> None:
    allocator = PortAllocator(41320, 41323)
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 41321))  # the RTCP port of the first pair
    try:
        rtp, rtcp = allocator.bind_pair("127.0.0.1")
        assert rtp.getsockname()[1] == 41322
        rtp.close()
        rtcp.close()
    finally:
        holder.close()
    assert allocator.in_use == {41322}


def test_ipv6() -> None:
    allocator = PortAllocator(41340, 41341)
    rtp, rtcp = allocator.bind_pair("::1")
    assert rtp.family == socket.AF_INET6
    assert rtcp.getsockname()[1] == 41341
    rtp.close()
    rtcp.close()


@pytest.mark.parametrize(("lo", "hi"), [(41001, 41002), (80, 90), (41000, 40000), (65535, 65535)])
def test_bad_ranges(lo: int, hi: int) -> None:
    with pytest.raises(ValueError, match="holds no even/odd pair"):
        PortAllocator(lo, hi)
