"""``make bench``: runs every benchmark, each in its own process, and prints figures.

``python -m tests.bench`` runs them all; ``python -m tests.bench gateway parser`` runs
the named ones (module names without the ``bench_`` prefix). Speed goals live here,
not in timed tests: this machine is shared and noisy, so each benchmark measures
ratios within one run where it can (gateway vs. SIPp direct, for one).
"""

from __future__ import annotations

import subprocess
import sys
import time

ORDER = (
    "parser",
    "routing",
    "callbacks",
    "cdr",
    "media",
    "gateway",
    "workers",
    "capacity",
    "emergency",
    "overload",
    "shed",
    "vanish",
)


def main(argv: list[str]) -> int:
    names = argv or list(ORDER)
    failed = []
    for name in names:
        module = f"tests.bench.bench_{name}"
        print(f"\n=== {module} ===", flush=True)
        started = time.monotonic()
        try:
            __import__(module)
        except ImportError as exc:
            print(f"(not available: {exc})")
            failed.append(name)
            continue
        result = subprocess.run([sys.executable, "-m", module], check=False)
        print(f"--- {module}: exit {result.returncode}, {time.monotonic() - started:.0f} s")
        if result.returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed or are missing: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
