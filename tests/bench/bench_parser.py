"""Parser and serializer throughput on typical messages.

``main()`` prints messages per second for a typical INVITE with SDP, a 200 OK and a
short BYE (the best of several runs of about one second each), then serializations
per second. The messages are the fixture files in ``sip-fixtures/messages/valid``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from gateway.ops.native import core_build
from gateway.sip.parser import parse_message

VALID = Path(__file__).parents[2] / "sip-fixtures" / "messages" / "valid"
CASES = {
    "INVITE with SDP": "invite-typical.sip",
    "200 OK with SDP": "response-200-invite.sip",
    "short BYE": "bye-short.sip",
}
RUNS = 5
RUN_SECONDS = 1.0
BATCH = 500


def best_rate(work: Callable[[], object]) -> float:
    """Returns the best calls-per-second of ``work`` over RUNS runs of ~RUN_SECONDS."""
    best = 0.0
    for _ in range(RUNS):
        count = 0
        start = time.perf_counter()
        while True:
            for _ in range(BATCH):
                work()
            count += BATCH
            elapsed = time.perf_counter() - start
            if elapsed >= RUN_SECONDS:
                break
        best = max(best, count / elapsed)
    return best


def main() -> None:
    """Prints parse and serialize rates for each message."""
    print(f"SIP parser ({core_build()}, one core)")
    for label, name in CASES.items():
        data = (VALID / name).read_bytes()
        message = parse_message(data)
        parse_rate = best_rate(lambda data=data: parse_message(data))  # type: ignore[misc]
        serialize_rate = best_rate(message.serialize)
        print(
            f"  {label:16} {len(data):5d} bytes  parse {parse_rate:10,.0f} msg/s  "
            f"({1e6 / parse_rate:5.1f} us)  serialize {serialize_rate:10,.0f} msg/s"
        )


if __name__ == "__main__":
    main()
