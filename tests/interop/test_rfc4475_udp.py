"""RFC 4475 over the wire: every torture message in ../shared/conformance/rfc4475/
sent over UDP to a running gateway gets the outcome MANIFEST.tsv names, and the
gateway keeps answering.

The probe (tests/interop/rfc4475_probe.py) runs inside a loopback-only network
namespace (deploy/loopback-only.sh): the messages name hosts in 192.0.2.0/24, which is
this machine's own LAN, so nothing they provoke may leave the machine.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TORTURE = ROOT.parent / "shared" / "conformance" / "rfc4475"

pytestmark = [pytest.mark.interop, pytest.mark.tool]

#: The statuses each message may get, read from the manifest's expected outcome:
#: a set of acceptable final statuses, or "dropped" (no response at all), or
#: "normal" (any answer but 400/505/513: the message is handled like any other).
#: Provisional 100 Trying is ignored in the comparison.
EXPECTED: dict[str, set[int] | str] = {
    "wsinv.dat": "normal",  # an INVITE with a To tag for no dialog: 481 is "handled"
    "intmeth.dat": {501},
    "esc01.dat": "normal",
    "escnull.dat": "normal",  # a REGISTER; no registrar attached here: 405
    "esc02.dat": {501},  # RE%47IST%45R is a method name we do not implement
    "lwsdisp.dat": "normal",
    "longreq.dat": "normal",
    "dblreq.dat": "normal",
    "semiuri.dat": "normal",
    "transports.dat": "normal",
    "mpart01.dat": "normal",
    "unreason.dat": "dropped",
    "noreason.dat": "dropped",
    "badinv01.dat": {400},
    "clerr.dat": {400},
    "ncl.dat": {400},
    "scalar02.dat": {400},
    "scalarlg.dat": "dropped",
    "quotbal.dat": {400},
    "ltgtruri.dat": {400},
    "lwsruri.dat": {400},
    "lwsstart.dat": {400},
    "trws.dat": {400},
    "escruri.dat": {400},
    "baddate.dat": "normal_or_400",
    "regbadct.dat": {400},
    "badaspec.dat": {400},
    "baddn.dat": {400},
    "badvers.dat": {505},
    "mismatch01.dat": {400},
    "mismatch02.dat": {501, 400},
    "bigcode.dat": "dropped",
    "badbranch.dat": "normal_or_400",
    "insuf.dat": {400},
    "unkscm.dat": {416},
    "novelsc.dat": {416},
    "unksm2.dat": "normal_or_400",
    "bext01.dat": {420},
    "invut.dat": {415},
    "regaut01.dat": {405, 401},
    "multi01.dat": {400},
    "mcl01.dat": {400},
    "bcast.dat": "dropped",
    "zeromf.dat": {200, 483},  # an OPTIONS the gateway answers itself: processed
    "cparam01.dat": "normal",
    "cparam02.dat": "normal",
    "regescrt.dat": "normal",
    "sdp01.dat": {406, 400},
    "inv2543.dat": "normal_or_400",
}


def manifest() -> list[dict[str, str]]:
    with (TORTURE / "MANIFEST.tsv").open(newline="") as file:
        return list(csv.DictReader(file, delimiter="\t"))


@pytest.fixture(scope="module")
def probe() -> dict[str, object]:
    assert TORTURE.is_dir(), f"torture messages missing: {TORTURE}"
    proc = subprocess.run(
        [
            str(ROOT / "deploy" / "loopback-only.sh"),
            sys.executable,
            "-m",
            "tests.interop.rfc4475_probe",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def test_every_manifest_row_has_an_expectation() -> None:
    names = {row["file"] for row in manifest()}
    assert names == set(EXPECTED), names ^ set(EXPECTED)


@pytest.mark.parametrize("row", manifest(), ids=lambda row: row["file"])
def test_torture_message_outcome(probe: dict[str, object], row: dict[str, str]) -> None:
    results = probe["results"]
    assert isinstance(results, dict)
    statuses = [s for s in results[row["file"]] if s != 100]
    expected = EXPECTED[row["file"]]
    outcome = f"{row['file']} ({row['title']}): got {statuses}, RFC asks: {row['expected_outcome']}"
    if expected == "dropped":
        assert statuses == [], outcome
    elif expected == "normal":
        assert statuses, outcome
        assert not set(statuses) & {400, 505, 513}, outcome
    elif expected == "normal_or_400":
        assert statuses, outcome
        assert not set(statuses) & {505, 513}, outcome
    else:
        assert statuses, outcome
        assert set(statuses) <= expected, outcome


def test_gateway_stays_up(probe: dict[str, object]) -> None:
    assert probe["alive"] is True
