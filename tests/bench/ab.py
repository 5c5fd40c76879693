"""A/B of the gateway benchmark: this checkout (HEAD) against another (BASE), alternately.

Issue 18's rule for a change: calls/s and CPU per call not worse than before it, as a
ratio measured in one run against the commit before. The machine is shared and noisy,
so BASE and HEAD are measured in turn, A,B,B,A,A,B,... for ``--rounds`` rounds (the
side that goes first alternates: on this machine the second measurement of a round
read 5-10 % more CPU per call whichever side it was), each in
its own checkout with its own ``.venv`` (its own compiled SIP core), each measurement
in a fresh loopback-only network namespace (``deploy/loopback-only.sh``); the ratios
are taken round by round and their median is the verdict, min-max the spread.

Set-up of the base, once::

    git worktree add /work/bench-base <commit before the change>
    make -C /work/bench-base setup-test

Then, from the checkout under test (any Python >= 3.11 runs the driver; each side's
measurement runs with that side's ``.venv/bin/python``)::

    python3 tests/bench/ab.py                    # BASE=/work/bench-base, HEAD=here, 3 rounds
    python3 tests/bench/ab.py --base DIR --head DIR --rounds 5
    # one checkout against itself, settings off (BASE) and on (HEAD):
    python3 tests/bench/ab.py --base . --head . \
        --base-set 'cdr.in_progress_records=false;sip.session_timers=false'

One measurement is one ``voipgw run`` process on the gateway bench's own config
(``tests.bench.bench_gateway.gateway_toml`` of that side: uvloop, embedded
PostgreSQL, CDR writer, guard off, log level warning) with a SIPp
``uas-answer`` behind it, driven by SIPp ``uac-basic-call`` over UDP on 127.0.0.1,
after a 200-call warm-up:

1. CPU per call at a fixed rate: ``--rate`` calls/s (default 200, well below
   capacity) for ``--seconds`` (default 15); every call must succeed. CPU is the
   gateway process's user+system time (all its threads) over the phase, divided by the
   calls completed; "+pg" adds the embedded PostgreSQL's processes (the CDR writes).
2. Calls/s at saturation: ``--sat-calls`` calls (default 30,000) offered as fast as
   the gateway completes them with at most ``--sat-limit`` (default 60) in flight
   (SIPp ``-r 5000 -l 60``): a closed loop, so the completed calls per second of wall
   time is the gateway's throughput on this machine, with SIPp on the same two cores.
   Failed calls are reported; a side with any is flagged.
   With load shedding on (``[overload] load_shedding``, the default since issue
   17) this closed loop at the edge of capacity is shed in part (503s count as
   failed calls): compare raw throughput with ``--base-set``/``--head-set
   'overload.load_shedding=false'``.

This is not the RFC 7502 search of ``bench_gateway`` (highest fixed rate with zero
failures, 30 s steps, bisected 100 calls/s apart): that takes far longer than one
A/B round and its resolution is too coarse for a ratio. The closed-loop throughput
is a continuous figure of the same capacity.

Each side must run its compiled core, up to date: ``make setup-test`` is run in each
checkout first (as ``make bench`` does; ``--no-setup`` skips it), and a measurement
refuses a side whose core is interpreted or has an extension older than its source.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
DEFAULT_HEAD = HERE.parents[2]
DEFAULT_BASE = Path("/work/bench-base")
MARK = "AB-RESULT "
#: One measurement, as the worker prints it in JSON.
Result = dict[str, Any]


# --- worker: runs inside one side's checkout, with its venv, in the namespace ---------


def _stat(pid: int) -> tuple[int, list[str]] | None:
    """(ppid, fields after the command name) of /proc/<pid>/stat, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2 :].split()
    return int(rest[1]), rest


def _ticks(fields: list[str], *, children: bool) -> int:
    # Fields 14-17 of stat(5) (utime stime cutime cstime) are 11-14 after the name.
    own = int(fields[11]) + int(fields[12])
    return own + (int(fields[13]) + int(fields[14]) if children else 0)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _tree_cpu(roots: list[int]) -> float:
    """CPU seconds of ``roots`` and their live descendants, plus what they reaped."""
    parent: dict[int, int] = {}
    fields: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            got = _stat(int(entry))
            if got is not None:
                parent[int(entry)], fields[int(entry)] = got
    total = 0
    seen: set[int] = set()
    todo = [r for r in roots if r in fields]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _ticks(fields[pid], children=True)
        todo.extend(p for p, pp in parent.items() if pp == pid)
    return total / os.sysconf("SC_CLK_TCK")


def _postgres_roots(state_dir: str) -> list[int]:
    """The embedded PostgreSQL postmaster(s) whose data directory is under state_dir."""
    roots = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            line = _cmdline(int(entry))
            if " -D " in line and state_dir in line and "postgres" in line:
                roots.append(int(entry))
    return roots


def _gateway_cpu(pid: int) -> float:
    got = _stat(pid)
    assert got is not None, "gateway process gone"
    return _ticks(got[1], children=False) / os.sysconf("SC_CLK_TCK")


def _ready(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@contextlib.asynccontextmanager
async def _gateway(upstream: str) -> AsyncIterator[tuple[str, int]]:
    """``voipgw run`` on the side's own bench config (``bench_gateway.gateway_toml``);
    yields (host:port, pid) once its /readyz answers 200.

    Its own copy of ``bench_gateway.gateway_process``, not an import: this file runs
    each side's measurement in that side's checkout, and the BASE side's
    ``gateway_process`` may be one that waits for a "voipgw ready" line the bench's
    ``level = "warning"`` never logs (so at c5e168a). One harness for both sides keeps
    the comparison fair.
    """
    import asyncio

    from tests.bench.bench_gateway import HOST, gateway_toml
    from tests.interop.sipp import free_port

    with tempfile.TemporaryDirectory(prefix="voipgw-bench-ab-") as tmp:
        state = Path(tmp)
        port, metrics = free_port(HOST), free_port(HOST)
        config = state / "voipgw.toml"
        # --base-set / --head-set: one checkout against itself with settings changed.
        text = gateway_toml(state, port, upstream, metrics)
        for setting in filter(None, os.environ.get(SETTINGS_ENV, "").split(";")):
            text = with_setting(text, setting)
        if os.environ.get(ROUTED_ENV):
            # --routed: the demo routing data (this side's), calls routed to the UAS.
            sites = Path.cwd() / "deploy" / "demo" / "sites.toml"
            text = with_setting(text, f'gateway.seed_sites = "{sites}"')
            text = with_setting(text, f'routing.default_next_hop = "{upstream}"')
        config.write_text(text)
        with (state / "gateway.log").open("wb") as log:
            proc = subprocess.Popen(  # noqa: ASYNC220 (as bench_gateway does)
                [sys.executable, "-m", "gateway", "run", "--config", str(config)],
                cwd=Path.cwd(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 90
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        "gateway exited during start-up:\n"
                        + (state / "gateway.log").read_text(errors="replace")[-3000:]
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError("gateway not ready after 90 s")
                if await asyncio.to_thread(_ready, f"http://{HOST}:{metrics}/readyz"):
                    break
                await asyncio.sleep(0.2)
            yield f"{HOST}:{port}", proc.pid
        finally:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _measure(opts: dict[str, float]) -> dict[str, object]:
    import asyncio

    from tests.bench.bench_gateway import HOST
    from tests.interop.sipp import SippUas, run_uac

    rate, seconds = opts["rate"], opts["seconds"]
    sat_calls, sat_limit = int(opts["sat_calls"]), int(opts["sat_limit"])
    fixed_calls = round(rate * seconds)
    result: dict[str, object] = {}
    async with (
        SippUas("uas-answer", host=HOST, timeout=300) as uas,
        _gateway(uas.uri) as (address, pid),
    ):
        config = _cmdline(pid).split("--config ", 1)[1].split()[0]
        state_dir = str(Path(config).parent)
        pg = _postgres_roots(state_dir)
        result["postgres_processes"] = len(pg)

        scenario, caller = "uac-basic-call", {}
        if os.environ.get(ROUTED_ENV):
            # bob (Setera) from the Espoo office LAN of the demo data: an ordinary call
            # that routing classifies, decides (caller ID included) and routes.
            scenario = "uac-emergency"
            caller = {
                "local_ip": "127.0.10.5",
                "extra_args": ["-key", "caller", "bob", "-key", "ruri",
                               f"sip:0401234567@{address}"],
            }  # fmt: skip

        def call_args(*more: str) -> dict[str, Any]:
            args = dict(caller)
            args["extra_args"] = [*args.get("extra_args", []), *more]
            return args

        warm = await run_uac(scenario, address, calls=200, rate=200, timeout=30, **call_args())
        assert warm.failed_calls == 0, warm.describe()
        await asyncio.sleep(1)
        # What the gateway burns with no call at all (timers, metrics, CDR flushes).
        gw0, started = _gateway_cpu(pid), time.monotonic()
        await asyncio.sleep(3)
        result["idle_cpu_share"] = (_gateway_cpu(pid) - gw0) / (time.monotonic() - started)

        gw0, pg0 = _gateway_cpu(pid), _tree_cpu(pg)
        fixed = await run_uac(
            scenario,
            address,
            calls=fixed_calls,
            rate=rate,
            timeout=seconds + 30,
            **call_args("-recv_timeout", "5000ms"),
        )
        gw1, pg1 = _gateway_cpu(pid), _tree_cpu(pg)
        done = max(1, fixed.successful_calls)
        result["fixed"] = {
            "rate": rate,
            "calls": fixed_calls,
            "ok": fixed.successful_calls,
            "failed": fixed.failed_calls,
            "retrans": fixed.retransmissions,
            "achieved_rate": fixed.call_rate,
            "cpu_ms_per_call": 1000 * (gw1 - gw0) / done,
            "cpu_ms_per_call_pg": 1000 * (gw1 - gw0 + pg1 - pg0) / done,
            "cpu_share": (gw1 - gw0) / fixed.elapsed,
            "setup_p50_ms": 1000 * (fixed.percentile(0.5) or 0),
            "setup_p99_ms": 1000 * (fixed.percentile(0.99) or 0),
        }
        await asyncio.sleep(1)

        gw0, pg0 = _gateway_cpu(pid), _tree_cpu(pg)
        sat = await run_uac(
            scenario,
            address,
            calls=sat_calls,
            rate=5000,
            timeout=120,
            # Appended after run_uac's own -l (SIPp keeps the last): a closed loop.
            **call_args("-l", str(sat_limit), "-recv_timeout", "5000ms"),
        )
        gw1, pg1 = _gateway_cpu(pid), _tree_cpu(pg)
        done = max(1, sat.successful_calls)
        result["saturation"] = {
            "calls": sat_calls,
            "limit": sat_limit,
            "ok": sat.successful_calls,
            "failed": sat.failed_calls,
            "retrans": sat.retransmissions,
            "elapsed": sat.elapsed,
            "calls_per_s": sat.successful_calls / sat.elapsed,
            "sipp_call_rate": sat.call_rate,
            "cpu_ms_per_call": 1000 * (gw1 - gw0) / done,
            "cpu_ms_per_call_pg": 1000 * (gw1 - gw0 + pg1 - pg0) / done,
            "cpu_share": (gw1 - gw0) / sat.elapsed,
            "setup_p50_ms": 1000 * (sat.percentile(0.5) or 0),
        }
    return result


def worker(raw: str) -> int:
    import asyncio

    # Run the side's own code: its root first, not this file's folder.
    root = Path.cwd()
    sys.path[0] = str(root)
    import importlib

    import gateway

    try:  # gateway/ops/native.py since the layout of 0f178c7, gateway/native.py before
        native = importlib.import_module("gateway.ops.native")
    except ModuleNotFoundError:
        native = importlib.import_module("gateway.native")
    core_build, stale_extensions = native.core_build, native.stale_extensions
    if not Path(gateway.__file__).resolve().is_relative_to(root):
        raise SystemExit(f"gateway imported from {gateway.__file__}, not from {root}")
    stale = stale_extensions(root)
    build = core_build()
    if build != "compiled" or stale:
        raise SystemExit(f"{root}: SIP core {build}, stale extensions {stale}: run make setup-test")
    opts = json.loads(raw)
    result = asyncio.run(_measure(opts))
    print(MARK + json.dumps(result), flush=True)
    return 0


# --- driver ----------------------------------------------------------------------


def _describe(root: Path, *, subject: bool = False) -> str:
    """The checkout's commit (and subject), and how many tracked files it has edited."""
    commit = subprocess.run(
        ["git", "-C", str(root), "log", "-1", f"--format=%h{' %s' if subject else ''}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    edits = f" +{len(dirty.splitlines())} edited" if dirty else ""
    return f"{commit[:90]}{edits}"


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


ROUTED_ENV = "VOIPGW_AB_ROUTED"
"""Set (by ``--routed``): calls go through routing/ on the demo data."""

SETTINGS_ENV = "VOIPGW_AB_SETTINGS"
"""``table.key=value`` settings for one side's gateway config, ';'-separated (set by
the driver per side)."""


def with_setting(toml_text: str, setting: str) -> str:
    """``toml_text`` with ``table.key = value`` set: the key's line replaced in its
    table, or added under the table's header, or the table appended.

    Text edits rather than parse-and-dump: tomllib only reads, and the bench configs
    are flat tables written by :func:`tests.bench.bench_gateway.gateway_toml`.
    """
    name, _, value = setting.partition("=")
    table, _, key = name.strip().rpartition(".")
    if not table or not key or not value:
        raise ValueError(f"setting {setting!r} is not table.key=value")
    line = f"{key} = {value.strip()}"
    lines = toml_text.split("\n")
    header = f"[{table}]"
    if header not in (entry.strip() for entry in lines):
        return toml_text.rstrip("\n") + f"\n\n{header}\n{line}\n"
    start = next(i for i, entry in enumerate(lines) if entry.strip() == header)
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")),
        len(lines),
    )
    for i in range(start + 1, end):
        if lines[i].split("=", 1)[0].strip() == key:
            lines[i] = line
            return "\n".join(lines)
    lines.insert(start + 1, line)
    return "\n".join(lines)


def _run_side(
    name: str,
    root: Path,
    opts: dict[str, float],
    log: Path,
    settings: str = "",
    *,
    routed: bool = False,
) -> Result | None:
    argv = [
        str(root / "deploy" / "loopback-only.sh"),
        str(root / ".venv" / "bin" / "python"),
        str(HERE),
        "--worker",
        json.dumps(opts),
    ]
    started = time.monotonic()
    with log.open("ab") as out:
        out.write(f"\n=== {name} {root} {time.ctime()}\n".encode())
        out.flush()
        # A session of its own: on a timeout the whole group goes (worker, gateway).
        proc = subprocess.Popen(
            argv,
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=out,
            start_new_session=True,
            env={**os.environ, SETTINGS_ENV: settings, ROUTED_ENV: "1" if routed else ""},
        )
        try:
            stdout, _ = proc.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            stdout, _ = proc.communicate()
            print(f"  {name}: timed out after 400 s (see {log})", flush=True)
            return None
        out.write(stdout)
    for line in stdout.decode(errors="replace").splitlines():
        if line.startswith(MARK):
            result: Result = json.loads(line[len(MARK) :])
            result["wall"] = time.monotonic() - started
            return result
    print(f"  {name}: failed, exit {proc.returncode} (see {log})", flush=True)
    return None


def _row(name: str, r: Result) -> str:
    f, s = r["fixed"], r["saturation"]
    flag = ""
    if f["failed"] or s["failed"] or f["ok"] < f["calls"] or s["ok"] < s["calls"]:
        flag = f"  FAILED CALLS: fixed {f['failed']}, saturation {s['failed']}"
    return (
        f"  {name:4} {s['calls_per_s']:7.0f} calls/s  "
        f"{f['cpu_ms_per_call']:6.3f} ms CPU/call ({f['cpu_ms_per_call_pg']:6.3f} +pg)  "
        f"sat {s['cpu_ms_per_call']:6.3f} ms/call, gw {100 * s['cpu_share']:3.0f}% of a core  "
        f"idle {100 * r['idle_cpu_share']:.0f}%  p50 {f['setup_p50_ms']:.0f} ms  "
        f"[{r['wall']:.0f} s, load {r['load']}, {r['version']}]{flag}"
    )


METRICS: tuple[tuple[str, Callable[[Result], float], str], ...] = (
    ("calls/s at saturation", lambda r: r["saturation"]["calls_per_s"], "higher"),
    ("CPU ms/call, fixed rate", lambda r: r["fixed"]["cpu_ms_per_call"], "lower"),
    ("CPU ms/call, fixed, +pg", lambda r: r["fixed"]["cpu_ms_per_call_pg"], "lower"),
    ("CPU ms/call, saturation", lambda r: r["saturation"]["cpu_ms_per_call"], "lower"),
)


def driver(args: argparse.Namespace) -> int:
    base, head = args.base.resolve(), args.head.resolve()
    sides = (("BASE", base), ("HEAD", head))
    settings = {"BASE": args.base_set, "HEAD": args.head_set}
    for name, root in sides:
        if not (root / ".venv" / "bin" / "python").exists() and args.no_setup:
            print(f"{name} {root}: no .venv (run make setup-test there)", file=sys.stderr)
            return 2
    if not args.no_setup:
        for name, root in sides:
            print(f"{name}: make setup-test in {root}", flush=True)
            subprocess.run(
                ["make", "--no-print-directory", "-C", str(root), "setup-test"], check=True
            )
    for name, root in sides:
        print(f"{name} {root}: {_describe(root, subject=True)}")
    opts = {
        "rate": args.rate,
        "seconds": args.seconds,
        "sat_calls": args.sat_calls,
        "sat_limit": args.sat_limit,
    }
    print(
        f"{args.rounds} rounds; fixed {args.rate:g} calls/s x {args.seconds:g} s; "
        f"saturation {args.sat_calls} calls, <= {args.sat_limit} in flight; log {args.log}",
        flush=True,
    )
    args.log.write_bytes(b"")
    started = time.monotonic()
    results: dict[str, list[Result | None]] = {"BASE": [], "HEAD": []}
    for i in range(args.rounds):
        print(f"round {i + 1}", flush=True)
        for name, root in sides if i % 2 == 0 else sides[::-1]:
            load, version = _loadavg(), _describe(root)
            r = _run_side(name, root, opts, args.log, settings[name], routed=args.routed)
            if r is not None:
                r["load"], r["version"] = load, version
                print(_row(name, r), flush=True)
            results[name].append(r)
    pairs = [(b, h) for b, h in zip(results["BASE"], results["HEAD"]) if b and h]
    print(
        f"\n==== HEAD / BASE over {len(pairs)} of {args.rounds} rounds "
        f"({time.monotonic() - started:.0f} s) ===="
    )
    if not pairs:
        return 1
    for label, get, better in METRICS:
        ratios = sorted(get(h) / get(b) for b, h in pairs)
        base_med = statistics.median(get(b) for b, _ in pairs)
        head_med = statistics.median(get(h) for _, h in pairs)
        print(
            f"{label:25} ratio {statistics.median(ratios):.3f} (min {ratios[0]:.3f}, "
            f"max {ratios[-1]:.3f})   medians BASE {base_med:.4g}, HEAD {head_med:.4g}  "
            f"({better} is better)"
        )
    failed = any(
        r is None or r["fixed"]["failed"] or r["saturation"]["failed"]
        for rs in results.values()
        for r in rs
    )
    for name in ("BASE", "HEAD"):
        versions = {r["version"] for r in results[name] if r}
        if len(versions) > 1:
            print(f"{name} changed during the run ({', '.join(sorted(versions))}): not one build")
    if failed:
        print("some measurements failed or had failed calls: see above and the log")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"]:
        return worker(argv[1])
    parser = argparse.ArgumentParser(prog="tests/bench/ab.py", description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, default=DEFAULT_BASE, help="checkout A (before)")
    parser.add_argument("--head", type=Path, default=DEFAULT_HEAD, help="checkout B (after)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200.0, help="fixed rate, calls/s")
    parser.add_argument("--seconds", type=float, default=15.0, help="fixed-rate phase length")
    parser.add_argument("--sat-calls", type=int, default=30000, help="calls at saturation")
    parser.add_argument("--sat-limit", type=int, default=60, help="calls in flight at saturation")
    parser.add_argument("--no-setup", action="store_true", help="skip make setup-test")
    parser.add_argument(
        "--base-set",
        default="",
        help="settings for BASE's config, table.key=value ';'-separated "
        "(e.g. 'cdr.in_progress_records=false;sip.session_timers=false')",
    )
    parser.add_argument("--head-set", default="", help="settings for HEAD's config")
    parser.add_argument(
        "--routed",
        action="store_true",
        help="calls through routing/ on the demo data (bob from the office LAN)",
    )
    parser.add_argument("--log", type=Path, default=Path("/tmp/voipgw-bench-ab.log"))
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.rate <= 0 or args.seconds <= 0 or args.sat_calls < 1:
        parser.error("rounds, rate, seconds and sat-calls must be positive")
    return driver(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
