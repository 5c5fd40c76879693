"""Drive SIPp (Debian ``sip-tester``) from asyncio tests and benchmarks.

Two roles, so that a gateway can sit between them::

    run_uac(scenario, target=gateway) ──▶ voipgw ──▶ SippUas(scenario) on uas.port
                                                      (the gateway's next hop)

* :class:`SippUas` is an async context manager that starts ``sipp -sf <uas scenario>``
  in server mode on a loopback port picked before it starts (``uas.port`` and
  ``uas.uri`` are known before ``async with``, so a gateway's next hop can be
  configured first), waits until the port is bound, and on exit stops SIPp and keeps
  its statistics in ``uas.result``.
* :func:`run_uac` runs a client scenario against ``target`` for a bounded number of
  calls (``-m``) at a rate (``-r``) under a global ``-timeout``, kills SIPp if it
  overruns anyway, and returns a :class:`SippResult` read from SIPp's own files:
  ``-trace_stat`` (counters), ``-trace_rtt`` (each response time), ``-trace_screen``
  (the per-message screen) and ``-trace_err`` (unexpected messages).

SIPp is never started with ``-bg`` (we need its pid and exit status) and always with
``-nostdin``, ``-bind_local`` and loopback addresses: every address given to this
module is checked with :meth:`ipaddress.IPv4Address.is_loopback`, because this
machine's LAN must never see test traffic.

Missing SIPp is an error, not a skip: :func:`find_sipp` raises :class:`SippNotFound`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import csv
import ipaddress
import math
import os
import shutil
import signal
import socket
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal

#: Where the scenarios live; a bare scenario name is looked up here.
SCENARIO_DIR = Path(__file__).resolve().parents[2] / "sip-fixtures" / "sipp"

#: SIPp ``-t`` modes this harness supports: one socket for all calls over UDP or TCP.
Transport = Literal["u1", "t1", "un", "tn"]

#: Seconds given to SIPp past its own ``-timeout`` before it is killed.
KILL_GRACE = 5.0

#: Seconds :class:`SippUas` waits for SIPp to bind its port.
STARTUP_TIMEOUT = 10.0

_TRANSPORT_ALIASES: dict[str, Transport] = {
    "udp": "u1",
    "tcp": "t1",
    "u1": "u1",
    "t1": "t1",
    "un": "un",
    "tn": "tn",
}


class SippError(RuntimeError):
    """SIPp could not be started or did not behave as a process should."""


class SippNotFound(SippError):
    """The ``sipp`` binary is not installed: the tests that need it must fail."""


def find_sipp() -> str:
    """Return the path of the ``sipp`` binary.

    ``VOIPGW_SIPP`` overrides the lookup on ``PATH``.

    Returns:
        An absolute path to an executable ``sipp``.

    Raises:
        SippNotFound: SIPp is not installed. Tests marked ``sipp`` must fail then, so
            nobody mistakes an unrun interop suite for a passing one.
    """
    override = os.environ.get("VOIPGW_SIPP")
    if override:
        if os.access(override, os.X_OK):
            return override
        raise SippNotFound(f"VOIPGW_SIPP={override!r} is not an executable file")
    path = shutil.which("sipp")
    if path is None:
        raise SippNotFound(
            "sipp not found on PATH: install SIPp 3.6 (Debian/Ubuntu: apt-get install "
            "sip-tester, or `make tools`) or point VOIPGW_SIPP at the binary"
        )
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port that is free for both UDP and TCP on ``host``.

    SIP uses the same port number for both (RFC 3261 section 18), and a SIPp UAS
    listens on one transport while a test may switch it to the other, so the port
    must be free in both tables. The sockets are closed before returning, so the
    kernel could hand the same number out again before SIPp binds it: ports returned
    recently by this process are never returned twice (another process could still
    take one in between, which tests accept).

    Args:
        host: loopback address the port will be bound on.

    Returns:
        A port number.

    Raises:
        SippError: no port was free for both protocols after many tries.
    """
    family = _family(host)
    for _ in range(200):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port: int = tcp.getsockname()[1]
            if port in _recent_ports:
                continue
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
        _recent_ports.append(port)
        return port
    raise SippError(f"no port free for both UDP and TCP on {host}")


#: Ports :func:`free_port` handed out lately (a SIPp run uses three or four).
_recent_ports: collections.deque[int] = collections.deque(maxlen=1024)


def scenario_path(scenario: str | os.PathLike[str]) -> Path:
    """Resolve a scenario name (``"uac-basic-call"``, ``"uas-answer.xml"``) or path.

    Args:
        scenario: a file name in :data:`SCENARIO_DIR`, with or without ``.xml``, or a
            path to any scenario file.

    Returns:
        The absolute path of an existing scenario file.

    Raises:
        FileNotFoundError: there is no such scenario.
    """
    path = Path(scenario)
    if not path.is_absolute() and path.parent == Path("."):
        path = SCENARIO_DIR / path
        if path.suffix != ".xml":
            path = path.with_suffix(".xml")
    if not path.is_file():
        raise FileNotFoundError(f"no SIPp scenario {path}")
    return path.resolve()


def hostport(host: str, port: int) -> str:
    """Format ``host:port`` the way SIPp and SIP URIs want it (``[::1]:5060`` for IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SippResult:
    """What one SIPp run did, read from its statistics files after it exited."""

    scenario: str
    """Scenario file name."""
    argv: tuple[str, ...]
    """The command line that ran."""
    returncode: int | None
    """SIPp's exit status: 0 all calls succeeded, 1 some failed, 97 stopped by a
    command, 99 ended with no call processed, 255 fatal; None if it was killed."""
    timed_out: bool
    """True if SIPp overran ``-timeout`` plus :data:`KILL_GRACE` and was killed."""
    elapsed: float
    """Wall-clock run time, in seconds."""
    expected_calls: int | None
    """Calls asked for with ``-m`` (None for a UAS without a limit)."""
    successful_calls: int
    failed_calls: int
    outgoing_calls: int
    incoming_calls: int
    retransmissions: int
    """Messages SIPp itself retransmitted (UDP), cumulative."""
    unexpected_messages: int
    """Calls failed by an unexpected message (``FailedUnexpectedMessage``)."""
    timeouts: int
    """Calls failed on a recv timeout or the UDP retransmission limit."""
    call_rate: float
    """Achieved call rate over the whole run, in calls per second."""
    response_times: dict[int, tuple[float, ...]] = field(default_factory=dict)
    """Each measured response time, in seconds, by SIPp rtd number (1 = INVITE->200
    in the uac-* scenarios). SIPp records them with millisecond resolution."""
    stats: dict[str, str] = field(default_factory=dict)
    """The last ``-trace_stat`` row, keyed by SIPp's column names."""
    screen: str = ""
    """The last scenario/statistics screens SIPp dumped (``-trace_screen``)."""
    errors: str = ""
    """The tail of SIPp's error log (unexpected messages, fatal errors)."""
    stderr: str = ""
    stdout: str = ""
    """The tail of SIPp's standard output (its screens, and why it stopped)."""

    @property
    def ok(self) -> bool:
        """True if SIPp exited 0 on its own with every expected call successful."""
        return (
            not self.timed_out
            and self.returncode == 0
            and self.failed_calls == 0
            and (self.expected_calls is None or self.successful_calls == self.expected_calls)
        )

    @property
    def stopped_early(self) -> bool:
        """True if SIPp exited 0 before placing every call, with none failed.

        That is SIPp's "smooth quit" (SIGUSR1 or a quit command): something outside
        the scenario stopped it, such as another SIPp of the same process group
        exiting (the harness gives each SIPp its own session for that reason) or a
        broad ``pkill``/``killall`` of ``sipp`` on the machine.
        """
        return (
            self.returncode == 0
            and self.expected_calls is not None
            and self.failed_calls == 0
            and self.successful_calls < self.expected_calls
        )

    @property
    def setup_times(self) -> tuple[float, ...]:
        """Response time 1 samples (INVITE -> 200 in the uac-* scenarios), in seconds."""
        return self.response_times.get(1, ())

    def percentile(self, q: float, *, rtd: int = 1) -> float | None:
        """Return the ``q`` quantile (0 < q < 1) of response time ``rtd``, in seconds.

        Args:
            q: quantile, e.g. 0.99.
            rtd: SIPp response-time number.

        Returns:
            The nearest-rank quantile, or None when there is no sample.
        """
        samples = sorted(self.response_times.get(rtd, ()))
        if not samples:
            return None
        rank = max(1, math.ceil(q * len(samples)))
        return samples[rank - 1]

    def mean_response_time(self, *, rtd: int = 1) -> float | None:
        """Mean of response time ``rtd`` in seconds, or None without samples."""
        samples = self.response_times.get(rtd, ())
        return statistics.fmean(samples) if samples else None

    def describe(self) -> str:
        """A multi-line summary with SIPp's own screen, for assertion messages."""
        head = (
            f"sipp {self.scenario}: rc={self.returncode} timed_out={self.timed_out} "
            f"successful={self.successful_calls}/{self.expected_calls} "
            f"failed={self.failed_calls} unexpected={self.unexpected_messages} "
            f"timeouts={self.timeouts} retrans={self.retransmissions} "
            f"elapsed={self.elapsed:.2f}s"
            f"{' STOPPED EARLY (smooth quit: signalled from outside?)' if self.stopped_early else ''}"
            f"\n$ {' '.join(self.argv)}"
        )
        parts = [
            head,
            self.screen[-8000:] or self.stdout[-3000:],
            self.errors[-3000:],
            self.stderr[-2000:],
        ]
        return "\n".join(p for p in parts if p)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _require_loopback(host: str) -> None:
    # This machine's LAN (192.0.2.0/24) must never see test traffic: refuse any
    # non-loopback address outright instead of trusting every caller.
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"SIPp peers must be numeric loopback addresses, not {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"refusing non-loopback address {host} for SIPp traffic")


def _split_target(target: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(target, tuple):
        return target
    if target.startswith("["):
        host, _, port = target[1:].partition("]:")
    else:
        host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"target must be host:port or [v6]:port, not {target!r}")
    return host, int(port)


def _transport(transport: str) -> Transport:
    try:
        return _TRANSPORT_ALIASES[transport.lower()]
    except KeyError:
        raise ValueError(f"unsupported SIPp transport {transport!r}") from None


def _int(row: dict[str, str], name: str) -> int:
    try:
        return int(row.get(name, "0") or 0)
    except ValueError:
        return 0


def _read_stats(path: Path) -> dict[str, str]:
    """Return the last data row of a ``-trace_stat`` file (';'-separated, with header)."""
    if not path.is_file():
        return {}
    with path.open(newline="", errors="replace") as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) < 2:
        return {}
    header = [h.strip() for h in rows[0]]
    return {k: v.strip() for k, v in zip(header, rows[-1]) if k}


def _read_rtt(directory: Path) -> dict[int, tuple[float, ...]]:
    """Read ``<scenario>_<pid>_rtt.csv`` (``Date_ms;response_time_ms;rtd_no``)."""
    samples: dict[int, list[float]] = {}
    for path in directory.glob("*_rtt.csv"):
        with path.open(newline="", errors="replace") as f:
            for row in csv.reader(f, delimiter=";"):
                if len(row) < 3 or not row[2].strip().isdigit():
                    continue
                try:
                    millis = float(row[1])
                except ValueError:
                    continue
                samples.setdefault(int(row[2]), []).append(millis / 1000.0)
    return {rtd: tuple(v) for rtd, v in samples.items()}


def _tail(path: Path, limit: int = 8000) -> str:
    if not path.is_file():
        return ""
    data = path.read_bytes()
    return data[-limit:].decode("utf-8", "backslashreplace")


def _last_screens(path: Path) -> str:
    # -trace_screen appends every screen SIPp draws; the last scenario screen and
    # statistics screen are the useful part.
    text = _tail(path, 200_000)
    start = text.rfind("------------------------------ Scenario Screen")
    return text[start:] if start >= 0 else text[-6000:]


def _build_result(
    *,
    scenario: Path,
    argv: Sequence[str],
    workdir: Path,
    returncode: int | None,
    timed_out: bool,
    elapsed: float,
    expected_calls: int | None,
) -> SippResult:
    stats = _read_stats(workdir / "stat.csv")
    try:
        call_rate = float(stats.get("CallRate(C)", "0") or 0)
    except ValueError:
        call_rate = 0.0
    return SippResult(
        scenario=scenario.name,
        argv=tuple(argv),
        returncode=returncode,
        timed_out=timed_out,
        elapsed=elapsed,
        expected_calls=expected_calls,
        successful_calls=_int(stats, "SuccessfulCall(C)"),
        failed_calls=_int(stats, "FailedCall(C)"),
        outgoing_calls=_int(stats, "OutgoingCall(C)"),
        incoming_calls=_int(stats, "IncomingCall(C)"),
        retransmissions=_int(stats, "Retransmissions(C)"),
        unexpected_messages=_int(stats, "FailedUnexpectedMessage(C)"),
        timeouts=_int(stats, "FailedTimeoutOnRecv(C)") + _int(stats, "FailedMaxUDPRetrans(C)"),
        call_rate=call_rate,
        response_times=_read_rtt(workdir),
        stats=stats,
        screen=_last_screens(workdir / "screen.log"),
        errors=_tail(workdir / "errors.log"),
        stderr=_tail(workdir / "stderr.log", 4000),
        stdout=_tail(workdir / "stdout.log", 8000),
    )


def _common_args(workdir: Path, *, timeout: float) -> list[str]:
    flags = "-nostdin -bind_local -timeout_error -fd 1 -trace_stat -trace_screen -trace_err"
    options = {
        "-timeout": f"{max(1, math.ceil(timeout * 1000))}ms",
        "-stf": str(workdir / "stat.csv"),
        "-screen_file": str(workdir / "screen.log"),
        "-error_file": str(workdir / "errors.log"),
        # The control socket would otherwise bind 8888 on every interface.
        "-ci": "127.0.0.1",
        "-cp": str(free_port("127.0.0.1")),
    }
    return [*flags.split(), *(item for pair in options.items() for item in pair)]


async def _spawn(
    argv: Sequence[str], workdir: Path, out: BinaryIO, err: BinaryIO
) -> asyncio.subprocess.Process:
    # start_new_session: a SIPp that exits signals its whole process group, which
    # makes every other SIPp in the group quit early with status 0 (seen with SIPp
    # 3.6.1: a UAS ending at -m stopped the UAC beside it after a few calls). Each
    # SIPp gets a group of its own. cwd=workdir: SIPp writes its -trace_rtt file
    # next to itself under a name it chooses (<scenario>_<pid>_rtt.csv).
    return await asyncio.create_subprocess_exec(
        *argv,
        cwd=workdir,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=out,
        stderr=err,
        start_new_session=True,
    )


async def _terminate(proc: asyncio.subprocess.Process, *, grace: float) -> None:
    """Stop SIPp: SIGUSR1 (finish calls, write stats), then SIGTERM, then SIGKILL."""
    for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGKILL):
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), grace)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def run_uac(
    scenario: str | os.PathLike[str],
    target: str | tuple[str, int],
    *,
    transport: str = "u1",
    calls: int = 1,
    rate: float = 10.0,
    local_ip: str | None = None,
    # SIPp's own -timeout, handed to the subprocess: not an asyncio cancel scope.
    timeout: float = 30.0,  # noqa: ASYNC109
    service: str | None = None,
    call_duration: float | None = None,
    extra_args: Sequence[str] = (),
) -> SippResult:
    """Run a SIPp client scenario against ``target`` and return its statistics.

    Args:
        scenario: scenario name in :data:`SCENARIO_DIR` or a path.
        target: ``"127.0.0.1:5060"``, ``"[::1]:5060"`` or ``(host, port)``: the
            gateway under test, or a :class:`SippUas` (``uas.target``) directly.
        transport: ``"udp"``/``"u1"`` or ``"tcp"``/``"t1"`` (SIPp ``-t``).
        calls: calls to place before exiting (``-m``).
        rate: calls per second (``-r``; fractions allowed).
        local_ip: loopback address to send from; defaults to ``::1`` for an IPv6
            target and ``127.0.0.1`` otherwise.
        timeout: SIPp's global ``-timeout``, in seconds. SIPp is killed
            :data:`KILL_GRACE` seconds later if it is still running.
        service: user part of the Request-URI (``-s``, the dialled number).
        call_duration: length of each scenario ``<pause/>``, in seconds (``-d``).
        extra_args: more SIPp options, appended last.

    Returns:
        The run's :class:`SippResult`; check ``result.ok``.

    Raises:
        SippNotFound: SIPp is not installed.
        ValueError: an address is not loopback, or a bad transport.
        FileNotFoundError: unknown scenario.
    """
    path = scenario_path(scenario)
    host, port = _split_target(target)
    _require_loopback(host)
    if local_ip is None:
        local_ip = "::1" if ":" in host else "127.0.0.1"
    _require_loopback(local_ip)
    if calls < 1 or rate <= 0:
        raise ValueError("calls must be >= 1 and rate > 0")
    sipp = find_sipp()
    with tempfile.TemporaryDirectory(prefix="voipgw-sipp-uac-") as tmp:
        workdir = Path(tmp)
        # -l: let SIPp have as many calls in flight as the run needs (its default,
        # 3 x rate, would fail slow set-ups at a high rate for the wrong reason).
        argv = [sipp, hostport(host, port), "-sf", str(path), "-t", _transport(transport)]
        argv += f"-i {local_ip} -p {free_port(local_ip)} -m {calls} -r {rate:g}".split()
        argv += f"-l {max(10, calls)} -trace_rtt -rtt_freq 1".split()
        argv += _common_args(workdir, timeout=timeout)
        if service is not None:
            argv += ["-s", service]
        if call_duration is not None:
            argv += ["-d", str(max(0, round(call_duration * 1000)))]
        argv += list(extra_args)
        return await _run_to_end(
            argv, path, workdir, kill_after=timeout + KILL_GRACE, expected_calls=calls
        )


async def _run_to_end(
    argv: list[str],
    path: Path,
    workdir: Path,
    *,
    kill_after: float,
    expected_calls: int | None,
) -> SippResult:
    started = time.monotonic()
    timed_out = False
    with (workdir / "stdout.log").open("wb") as out, (workdir / "stderr.log").open("wb") as err:
        proc = await _spawn(argv, workdir, out, err)
        try:
            await asyncio.wait_for(proc.wait(), kill_after)
        except TimeoutError:
            timed_out = True
        finally:
            # Also runs on CancelledError, which then propagates: SIPp never outlives
            # the coroutine that started it.
            await _kill(proc)
    return _build_result(
        scenario=path,
        argv=argv,
        workdir=workdir,
        returncode=None if timed_out else proc.returncode,
        timed_out=timed_out,
        elapsed=time.monotonic() - started,
        expected_calls=expected_calls,
    )


def _port_bound(port: int, transport: Transport) -> bool:
    # Linux lists every socket in /proc/net/*: a listening TCP socket has state 0A, a
    # bound UDP socket shows up at all. Probing with connect() would open a TCP call
    # leg SIPp then counts as an error; probing with bind() is fooled by TIME_WAIT.
    tables = ("tcp", "tcp6") if transport.startswith("t") else ("udp", "udp6")
    wanted = f"{port:04X}"
    for table in tables:
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[1].rsplit(":", 1)[-1] != wanted:
                continue
            if transport.startswith("u") or fields[3] == "0A":
                return True
    return False


class SippUas:
    """A SIPp server scenario listening on a loopback port, as an async context manager.

    Example::

        async with SippUas("uas-answer", transport="udp") as uas:
            result = await run_uac("uac-basic-call", uas.target, calls=5)
        assert uas.result is not None and uas.result.successful_calls == 5

    The port is chosen in ``__init__`` so that ``uas.target``/``uas.uri`` can be put
    in a gateway's configuration before the context is entered.

    Args:
        scenario: scenario name in :data:`SCENARIO_DIR` or a path.
        host: loopback address to listen on (``"::1"`` for IPv6).
        port: port to listen on; a free one by default.
        transport: ``"udp"``/``"u1"`` or ``"tcp"``/``"t1"``.
        calls: stop after this many calls (``-m``); None to run until the context
            exits.
        timeout: SIPp's global ``-timeout``, in seconds: an upper bound on the
            whole life of the UAS.
        call_duration: length of each scenario ``<pause/>``, in seconds (``-d``).
        extra_args: more SIPp options, appended last.

    Raises:
        ValueError: ``host`` is not a loopback address, or a bad transport.
    """

    def __init__(
        self,
        scenario: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        transport: str = "u1",
        calls: int | None = None,
        timeout: float = 120.0,
        call_duration: float | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        _require_loopback(host)
        self.scenario = scenario_path(scenario)
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.transport = _transport(transport)
        self.calls = calls
        self.timeout = timeout
        self.call_duration = call_duration
        self.extra_args = tuple(extra_args)
        self.result: SippResult | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._argv: list[str] = []
        self._started = 0.0

    @property
    def target(self) -> str:
        """``host:port`` to hand to :func:`run_uac` (``[::1]:port`` for IPv6)."""
        return hostport(self.host, self.port)

    @property
    def uri(self) -> str:
        """A SIP URI of this UAS with its transport, for a gateway's next hop."""
        name = "tcp" if self.transport.startswith("t") else "udp"
        return f"sip:{self.target};transport={name}"

    async def __aenter__(self) -> SippUas:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start SIPp and wait until it has bound its port.

        Raises:
            SippNotFound: SIPp is not installed.
            SippError: SIPp exited or did not bind within :data:`STARTUP_TIMEOUT`.
        """
        sipp = find_sipp()
        self._tmp = tempfile.TemporaryDirectory(prefix="voipgw-sipp-uas-")
        workdir = Path(self._tmp.name)
        argv = [sipp, "-sf", str(self.scenario), "-t", self.transport, "-i", self.host]
        argv += ["-p", str(self.port), *_common_args(workdir, timeout=self.timeout)]
        if self.calls is not None:
            argv += ["-m", str(self.calls)]
        if self.call_duration is not None:
            argv += ["-d", str(max(0, round(self.call_duration * 1000)))]
        argv += self.extra_args
        self._argv = argv
        self._started = time.monotonic()
        with (workdir / "stdout.log").open("wb") as out, (workdir / "stderr.log").open("wb") as e:
            self._proc = await _spawn(argv, workdir, out, e)
        try:
            await self._wait_bound()
        except BaseException:
            await self.stop()
            raise

    async def _wait_bound(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _port_bound(self.port, self.transport):
            if self._proc.returncode is not None:
                raise SippError(f"SIPp UAS exited with {self._proc.returncode} before binding")
            if time.monotonic() > deadline:
                raise SippError(f"SIPp UAS did not bind {self.target} in {STARTUP_TIMEOUT}s")
            await asyncio.sleep(0.02)

    async def wait(self, limit: float) -> SippResult:
        """Wait for SIPp to exit by itself (``calls`` reached) and return its result.

        Args:
            limit: seconds to wait before stopping it anyway.

        Returns:
            The :class:`SippResult` (``timed_out`` is True if it had to be stopped).
        """
        timed_out = False
        if self._proc is not None and self._proc.returncode is None:
            try:
                await asyncio.wait_for(asyncio.shield(self._proc.wait()), limit)
            except TimeoutError:
                timed_out = True
        await self.stop(timed_out=timed_out)
        assert self.result is not None
        return self.result

    async def stop(self, *, timed_out: bool = False) -> None:
        """Stop SIPp if it still runs (gracefully first) and collect ``self.result``."""
        proc, tmp = self._proc, self._tmp
        if proc is None or tmp is None:
            return
        self._proc = None
        try:
            await _terminate(proc, grace=2.0)
        finally:
            await _kill(proc)
            self.result = _build_result(
                scenario=self.scenario,
                argv=self._argv,
                workdir=Path(tmp.name),
                returncode=proc.returncode,
                timed_out=timed_out,
                elapsed=time.monotonic() - self._started,
                expected_calls=self.calls,
            )
            tmp.cleanup()
            self._tmp = None
