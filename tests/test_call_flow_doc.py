"""README's "How a call flows" matches the code: every file it names exists, and every
function or class it names on a hop is defined in a file named on that hop."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def hops() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## How a call flows", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if re.match(r"\d+\. ", line)]


def test_every_hop_names_files_that_exist_and_symbols_they_define() -> None:
    lines = hops()
    assert len(lines) >= 10  # datagram to CDR
    for line in lines:
        quoted = re.findall(r"`([^`]+)`", line)
        files = [ROOT / q for q in quoted if q.endswith(".py")]
        assert files, f"a hop names no file: {line}"
        for path in files:
            assert path.is_file(), f"{path.relative_to(ROOT)} named in README does not exist"
        sources = "\n".join(path.read_text(encoding="utf-8") for path in files)
        for name in (q for q in quoted if not q.endswith(".py")):
            symbol = name.rsplit(".", 1)[-1]
            defined = re.search(
                rf"^\s*(?:async\s+)?(?:def|class)\s+{re.escape(symbol)}\b|^\s*{symbol}\s*[:=]",
                sources,
                re.M,
            )
            assert defined, f"{name} is not defined in the files of hop: {line[:60]}"


def test_the_flow_starts_at_the_transport_and_ends_in_the_cdr() -> None:
    lines = hops()
    assert "gateway/transport/manager.py" in lines[0]
    assert "cdr/writer.py" in lines[-1]
