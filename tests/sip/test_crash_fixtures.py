"""Every input a fuzzer ever crashed the core with (sip-fixtures/messages/crashes/)
now goes through the parser, the transaction layer and the B2BUA without raising."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.__main__ import Core, run_one

CRASHES = sorted(
    (Path(__file__).parents[2] / "sip-fixtures" / "messages" / "crashes").glob("*.sip")
)


def test_there_are_crash_fixtures() -> None:
    assert CRASHES, "the fuzzer's saved crashes are regression fixtures"


@pytest.mark.parametrize("path", CRASHES, ids=lambda p: p.name)
def test_former_crash_is_handled(path: Path) -> None:
    import random

    data = path.read_bytes()
    run_one(data, random.Random(0))
    core = Core()
    core.feed(data)
    assert core.layer.stats["parse_error"] + len(core.layer.transactions) >= 1
