"""ICMP port unreachable read from the UDP socket's error queue (Linux IP_RECVERR)."""

from __future__ import annotations

import select
import socket

import pytest

from gateway.sip.events import Endpoint
from gateway.transport.manager import enable_icmp_errors, unreachable_destinations


def error_pending(sock: socket.socket, seconds: float) -> bool:
    """Whether the socket signals an error (POLLERR) within ``seconds``."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return any(events & select.POLLERR for _, events in poller.poll(seconds * 1000))


def closed_port(family: socket.AddressFamily, host: str) -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
)
def test_port_unreachable_names_the_destination(family: socket.AddressFamily, host: str) -> None:
    port = closed_port(family, host)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.setblocking(False)
        assert enable_icmp_errors(sock)
        assert unreachable_destinations(sock) == []  # nothing queued yet
        sock.sendto(b"OPTIONS sip:x SIP/2.0\r\n\r\n", (host, port))
        # The kernel's ICMP answer arrives as an error condition on the socket.
        assert error_pending(sock, 2.0), "no ICMP error reported"
        assert unreachable_destinations(sock) == [Endpoint("UDP", host, port)]
        # Drained: nothing is reported twice, and the socket no longer signals.
        assert unreachable_destinations(sock) == []
        assert not error_pending(sock, 0.1)


def test_without_the_option_nothing_is_queued() -> None:
    port = closed_port(socket.AF_INET, "127.0.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sock.sendto(b"x", ("127.0.0.1", port))
        # An unconnected socket hears nothing of it: the option is what makes a closed
        # next hop visible at all.
        assert not error_pending(sock, 0.5)
        assert unreachable_destinations(sock) == []
