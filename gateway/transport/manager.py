"""asyncio transports for SIP: UDP, TCP and TLS listeners and connections, IPv4/IPv6.

Thin adapters (STYLE 6): they move bytes between sockets and the sans-IO core and do
nothing else. Received messages are queued in a bounded ingress queue and handed to
the core in batches on the event loop (``on_messages``); when the queue is full, UDP
datagrams are dropped and counted (hypercorn's udp_server does the same), so a flood
cannot grow memory without bound. Stream transports are framed by the core's
``StreamFramer`` and keep one connection per peer address, reused in both
directions (RFC 3261 18: responses on the connection the request came in on, and
requests to a peer we already have a connection with reuse it).

A TCP connection is not opened to a next hop known to speak only UDP, and one to an
emergency centre has a short connect timeout (:mod:`gateway.transport.hints` says
why: RFC 3261 18.1.1 and a firewall that drops TCP silently).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import struct
import sys
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from gateway.sip.errors import ParseError
from gateway.sip.events import Endpoint
from gateway.sip.framing import PONG, StreamFramer
from gateway.transport.hints import PEER_HINTS, PeerHints

log = logging.getLogger("voipgw.transport")

#: Most messages waiting for the core; beyond it UDP datagrams are dropped.
INGRESS_QUEUE_LIMIT = 10_000
#: Seconds an outbound TCP/TLS connection attempt may take.
CONNECT_TIMEOUT = 5.0
#: Seconds an idle stream connection is kept (RFC 5626 keep-alives refresh it).
IDLE_TIMEOUT = 600.0
#: Largest UDP datagram read (an IPv4 UDP payload is at most 65,507 bytes).
MAX_DATAGRAM = 65_535
#: Receive buffer asked of the kernel for UDP sockets, in bytes.
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024

OnMessages = Callable[[list[tuple[bytes, Endpoint]]], None]
OnTransportError = Callable[[Endpoint], None]


#: Sources remembered for replies from a shared socket; beyond it the oldest is
#: forgotten (its reply then leaves from the worker's own port, still reaching it).
REPLY_FLOWS_LIMIT = 65_536


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """One listening socket: transport, address and port (port 0 picks a free one).

    ``shared``: bound with SO_REUSEPORT, the public port every worker process binds
    (gateway.workers); the kernel spreads UDP sources and TCP connections over them.
    """

    transport: str
    host: str
    port: int
    shared: bool = False


def _listening_port(server: asyncio.Server) -> int:
    """The port a stream listener is bound to (the real one for port 0)."""
    # uvloop's Server.sockets is a list where asyncio's (and typeshed's) is a tuple,
    # and this module is compiled (setup.py): read as a tuple, the list would fail
    # mypyc's run-time type check. Read untyped instead.
    sockets: Any = cast(Any, server).sockets
    return int(sockets[0].getsockname()[1])


def _peer(address: tuple[object, ...], transport: str) -> Endpoint:
    host, port = address[0], address[1]
    return Endpoint(transport, str(host), int(port))  # type: ignore[call-overload]


# Linux: with IP_RECVERR (IPV6_RECVERR) set, every ICMP error for a datagram we sent
# is queued on the socket together with that datagram's destination (msg_name), so a
# "port unreachable" names the next hop that is down. RFC 3261 8.1.3.1 / 17.1.4 make
# that a transport error: an emergency call fails over at once instead of after its
# no-answer timer, an ordinary one gets its 503 at once instead of after Timer B.
# The constants are Linux's (Python's socket module does not export them).
_IP_RECVERR = 11
_IPV6_RECVERR = 25
_SOL_IP = 0
_SOL_IPV6 = 41
_SOCK_EXTENDED_ERR = struct.Struct("=IBBBBII")
"""struct sock_extended_err: ee_errno, ee_origin, ee_type, ee_code, pad, info, data."""
#: Errors that mean the destination cannot be reached (not e.g. EMSGSIZE from a
#: "fragmentation needed", which says nothing about the next hop being down).
_UNREACHABLE = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})
_MAX_ERRORS_PER_WAKEUP = 64
# Linux getsockopt(SOL_SOCKET, SO_MEMINFO): nine u32 counters of the socket's memory;
# the first, SK_MEMINFO_RMEM_ALLOC, is the bytes of the datagrams waiting to be read
# (what ``ss -m`` shows as r). Python's socket module does not export the constant.
_SO_MEMINFO = 55
_SK_MEMINFO = struct.Struct("=9I")


def receive_queue_bytes(sock: socket.socket) -> int:
    """Bytes waiting in a socket's kernel receive queue (0 where unknown)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, _SK_MEMINFO.size)
    except OSError:
        return 0
    return int(_SK_MEMINFO.unpack(raw)[0]) if len(raw) == _SK_MEMINFO.size else 0


def enable_icmp_errors(sock: socket.socket) -> bool:
    """Asks Linux to queue ICMP errors with their destination; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    if sock.family == socket.AF_INET6:
        sock.setsockopt(_SOL_IPV6, _IPV6_RECVERR, 1)
    else:
        sock.setsockopt(_SOL_IP, _IP_RECVERR, 1)
    return True


def unreachable_destinations(sock: socket.socket) -> list[Endpoint]:
    """Drains the socket's error queue; returns the destinations found unreachable.

    Must run whenever the socket reports an error: a queue left non-empty keeps the
    socket signalling an error to the event loop.
    """
    found: list[Endpoint] = []
    for _ in range(_MAX_ERRORS_PER_WAKEUP):
        try:
            _, ancdata, _, address = sock.recvmsg(1, 512, socket.MSG_ERRQUEUE)
        except OSError:  # BlockingIOError: the queue is empty
            break
        for level, kind, data in ancdata:
            if (level, kind) not in ((_SOL_IP, _IP_RECVERR), (_SOL_IPV6, _IPV6_RECVERR)):
                continue
            if len(data) < _SOCK_EXTENDED_ERR.size or not address:
                continue
            error = _SOCK_EXTENDED_ERR.unpack_from(data)[0]
            if error in _UNREACHABLE:
                found.append(_peer(address, "UDP"))
    return found


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, manager: TransportManager, sock: socket.socket | None = None) -> None:
        self.manager = manager
        self.sock = sock
        """The bound socket, kept for its error queue (the transport owns its I/O)."""
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.manager._ingress(data, _peer(addr, "UDP"))

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier sendto; the error queue says whose.
        self.manager.stats["udp_error"] += 1
        if self.sock is None:
            return
        for destination in unreachable_destinations(self.sock):
            self.manager.stats["udp_unreachable"] += 1
            self.manager.on_transport_error(destination)


class _SharedUdpProtocol(_UdpProtocol):
    """A UDP socket on the port the worker processes share (SO_REUSEPORT).

    What goes to a peer that sent to this socket leaves from it: a NATed phone's
    pinhole and a symmetric peer accept datagrams only from the address and port
    they sent to (RFC 3581 4), responses and requests alike (a call to a phone
    registered through this worker: gateway/workers/plan.py). The kernel hashes
    the peer's datagrams to this worker by their 4-tuple, so the responses to such
    a request, sent to the source port when the peer honours ``rport`` (RFC 3581),
    come back here too. Requests to anyone else leave from the worker's own socket,
    the port its Via advertises, so that their responses come back to this worker
    and not to whichever worker the kernel picks for that peer. So this socket
    remembers who sent to it.
    """

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        source = _peer(addr, "UDP")
        self.manager._remember_flow(source, self)
        self.manager._ingress(data, source)


class _StreamProtocol(asyncio.Protocol):
    """One TCP or TLS connection, framed by the sans-IO StreamFramer."""

    def __init__(self, manager: TransportManager, transport_name: str) -> None:
        self.manager = manager
        self.name = transport_name
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Endpoint | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = _peer(transport.get_extra_info("peername"), self.name)
        self.manager._connections[self.peer] = self

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        assert self.transport is not None
        try:
            self.framer.feed(data)
            while (message := self.framer.next_message()) is not None:
                self.manager._ingress(message, self.peer, stream=True)
            # RFC 5626 3.5.1: each CRLFCRLF ping is answered with a CRLF pong.
            pings = self.framer.pop_pings()
            if pings:
                self.transport.write(PONG * pings)
        except ParseError as exc:
            # RFC 3261 18.3: once framing is lost the stream cannot be resynchronised.
            self.manager.stats["stream_framing_error"] += 1
            log.info("closing %s connection from %s: %s", self.name, self.peer, exc)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.manager._connections.get(self.peer) is self:
            del self.manager._connections[self.peer]
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class TransportManager:
    """Owns every SIP socket of the gateway.

    Args:
        on_messages: called on the loop with a batch of (raw message, source).
        on_transport_error: called when a destination cannot be reached.
        tls_server: SSL context for TLS listeners (None: no TLS listener allowed).
        tls_client: SSL context for outbound TLS connections.
        hints: what routing and DNS learnt of next hops (UDP only, emergency
            centre); the process-wide ones by default.
    """

    def __init__(
        self,
        on_messages: OnMessages,
        on_transport_error: OnTransportError,
        *,
        tls_server: ssl.SSLContext | None = None,
        tls_client: ssl.SSLContext | None = None,
        ingress_limit: int = INGRESS_QUEUE_LIMIT,
        hints: PeerHints | None = None,
    ) -> None:
        self.hints = hints if hints is not None else PEER_HINTS
        self.on_messages = on_messages
        self.on_transport_error = on_transport_error
        self.tls_server = tls_server
        self.tls_client = tls_client
        self.ingress_limit = ingress_limit
        self.local: list[Endpoint] = []
        self.stats: Counter[str] = Counter()
        self._udp: dict[bool, _UdpProtocol] = {}  # keyed by "is IPv6"
        #: every UDP listener, the shared ones included (close() closes them all)
        self._udp_listeners: list[_UdpProtocol] = []
        #: UDP sources seen on a shared socket -> that socket (its replies leave there)
        self._reply_flows: dict[Endpoint, _UdpProtocol] = {}
        #: the shared UDP socket of each family (keyed by "is IPv6"), if any
        self._shared_udp: dict[bool, _UdpProtocol] = {}
        self._udp_sockets: list[socket.socket] = []
        self._servers: list[asyncio.Server] = []
        self._connections: dict[Endpoint, _StreamProtocol] = {}
        self._pending: dict[Endpoint, list[bytes]] = {}
        self._queue: deque[tuple[bytes, Endpoint]] = deque()
        self._drain_scheduled = False
        #: datagrams read per loop turn beyond the event loop's own reads (0: none);
        #: load shedding sets it while it sheds (see _read_ahead)
        self.read_ahead = 0
        self._tasks: set[asyncio.Task[None]] = set()
        #: The loop the listeners run on, kept: in Python 3.11 every
        #: asyncio.get_running_loop() makes a getpid() system call (its fork check),
        #: and the ingress path would make one per datagram.
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ set-up

    async def listen(self, spec: ListenSpec) -> Endpoint:
        """Opens one listener; returns the bound endpoint (real port for port 0)."""
        loop = self._loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
        if spec.transport == "UDP":
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
            if spec.shared:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((spec.host, spec.port))
            errors = sock if enable_icmp_errors(sock) else None
            kind = _SharedUdpProtocol if spec.shared else _UdpProtocol
            _, protocol = await loop.create_datagram_endpoint(lambda: kind(self, errors), sock=sock)
            self._udp_listeners.append(protocol)
            if spec.shared:
                self._shared_udp.setdefault(family == socket.AF_INET6, protocol)
            # Requests leave from the worker's own socket (see _SharedUdpProtocol).
            if not spec.shared or (family == socket.AF_INET6) not in self._udp:
                self._udp[family == socket.AF_INET6] = protocol
            if sys.platform.startswith("linux"):
                self._udp_sockets.append(sock)
            port = sock.getsockname()[1]
        else:
            context = None
            if spec.transport == "TLS":
                if self.tls_server is None:
                    raise ValueError("TLS listener without a certificate")
                context = self.tls_server
            name = spec.transport
            server = await loop.create_server(
                lambda: _StreamProtocol(self, name),
                host=spec.host,
                port=spec.port,
                family=family,
                ssl=context,
                reuse_address=True,
                reuse_port=spec.shared,
            )
            self._servers.append(server)
            port = _listening_port(server)
        endpoint = Endpoint(spec.transport, spec.host, port)
        self.local.append(endpoint)
        return endpoint

    async def close(self) -> None:
        for protocol in self._udp_listeners:
            if protocol.transport is not None:
                protocol.transport.close()
        for server in self._servers:
            server.close()
        for connection in list(self._connections.values()):
            if connection.transport is not None:
                connection.transport.close()
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            await server.wait_closed()
        self._udp.clear()
        self._udp_listeners.clear()
        self._reply_flows.clear()
        self._shared_udp.clear()
        self._udp_sockets.clear()
        self._servers.clear()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # ------------------------------------------------------------------ ingress

    def _ingress(self, data: bytes, source: Endpoint, stream: bool = False) -> None:
        if len(self._queue) >= self.ingress_limit and not stream:
            self.stats["dropped_queue_full"] += 1
            return
        self._queue.append((data, source))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self._drain)

    def _drain(self) -> None:
        if self.read_ahead:
            self._read_ahead(self.read_ahead)
        self._drain_scheduled = False
        batch = list(self._queue)
        self._queue.clear()
        if batch:
            self.on_messages(batch)

    def _read_ahead(self, limit: int) -> None:
        """Reads up to ``limit`` more datagrams waiting in the kernel receive queues
        into this turn's batch. The event loop reads at most 32 per socket per turn
        (libuv); a loop that is behind would take an emergency INVITE or a shed
        INVITE only after every message queued before it was handled, where the
        batch lets the gateway take them first (gateway.edge.overload Rule 3)."""
        for protocol in self._udp_listeners:
            sock = protocol.sock
            if sock is None:
                continue
            while limit > 0:
                try:
                    data, addr = sock.recvfrom(MAX_DATAGRAM)
                except OSError:  # BlockingIOError: nothing more queued
                    break
                limit -= 1
                protocol.datagram_received(data, addr)

    @property
    def ingress_depth(self) -> int:
        return len(self._queue)

    def receive_queue_bytes(self) -> int:
        """Bytes received by the kernel on the UDP sockets and not read yet: the
        backlog the loop has not even seen (``gateway.edge.overload`` Rule 1)."""
        return sum(receive_queue_bytes(sock) for sock in self._udp_sockets)

    # ------------------------------------------------------------------ egress

    def send_from_shared(self, destination: Endpoint) -> None:
        """From now on, what goes to ``destination`` (UDP) leaves from the shared
        socket, as if it had sent to it: a phone whose flow this worker holds by its
        registration, called before it sent anything to this run of the worker (a
        worker started again). A no-op without a shared socket (one process)."""
        protocol = self._shared_udp.get(":" in destination.host)
        if protocol is None or destination.transport != "UDP":
            return
        self._remember_flow(destination, protocol)

    def _remember_flow(self, peer: Endpoint, protocol: _UdpProtocol) -> None:
        """What goes to ``peer`` leaves from ``protocol``'s shared socket from now on;
        beyond REPLY_FLOWS_LIMIT peers the oldest is forgotten."""
        flows = self._reply_flows
        if peer not in flows and len(flows) >= REPLY_FLOWS_LIMIT:
            del flows[next(iter(flows))]
        flows[peer] = protocol

    def send(self, data: bytes, destination: Endpoint) -> None:
        """Sends one message; stream connections are opened on demand."""
        if destination.transport == "UDP":
            protocol = self._udp.get(":" in destination.host)
            if self._reply_flows:
                protocol = self._reply_flows.get(destination, protocol)
            if protocol is None or protocol.transport is None:
                self.stats["no_udp_socket"] += 1
                self.on_transport_error(destination)
                return
            protocol.transport.sendto(data, (destination.host, destination.port))
            return
        connection = self._connections.get(destination)
        if connection is not None:
            connection.send(data)
            return
        pending = self._pending.get(destination)
        if pending is not None:
            pending.append(data)
            return
        if destination.transport == "TCP" and self.hints.udp_only(
            destination.host, destination.port
        ):
            # The next hop's URI or DNS says UDP only (RFC 3263 4.1), so this is the
            # RFC 3261 18.1.1 size switch: report the transport error now and the
            # transaction resends over UDP, as after a refused connection.
            self.stats["tcp_skipped_udp_only"] += 1
            log.debug("not connecting over TCP to UDP-only %s", destination)
            self.on_transport_error(destination)
            return
        self._pending[destination] = [data]
        task = asyncio.get_running_loop().create_task(self._connect(destination))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, destination: Endpoint) -> None:
        loop = asyncio.get_running_loop()
        name = destination.transport
        context = None
        if name == "TLS":
            context = self.tls_client or ssl.create_default_context()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _StreamProtocol(self, name),
                    host=destination.host,
                    port=destination.port,
                    ssl=context,
                    server_hostname=destination.host if context else None,
                ),
                self.hints.connect_timeout(destination.host, destination.port, CONNECT_TIMEOUT),
            )
        except asyncio.CancelledError:
            raise
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            # Connection refused, unreachable, handshake failure: a transport
            # error for every transaction sending there (RFC 3261 17.1.4).
            log.info("cannot connect to %s: %s", destination, exc)
            self.stats["connect_failed"] += 1
            self._pending.pop(destination, None)
            self.on_transport_error(destination)
            return
        # The protocol registered itself under the peer address it sees, which is
        # the destination for a direct connection.
        self._connections[destination] = protocol
        for data in self._pending.pop(destination, []):
            protocol.send(data)
