"""The architecture, checked: the layers' imports, the routing contract's shape, and the
static checks (ruff, mypy strict) that CI relies on.

- routing/ is the pure base layer, cdr/ builds on it, gateway/ on both: no module of
  routing/ or cdr/ imports gateway (at any level, function bodies included).
- A call's facts travel typed (routing.decision.CallFacts): no ``annotations``
  dictionary on a call, route or event.
- Emergency dial strings are recognised in one place (routing.emergency.DialPlan).
- The CDR mapping lives in cdr/ (cdr/call_record.py).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("gateway", "routing", "cdr")


def modules(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_routing_and_cdr_never_import_the_gateway() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            n for n in imported(path) if n.split(".")[0] == "gateway"
        )
        for path in modules("routing", "cdr")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_routing_never_imports_cdr() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in modules("routing")
        if any(n.split(".")[0] == "cdr" for n in imported(path))
    ]
    assert offenders == []


def nodes(*packages: str) -> Iterator[tuple[str, ast.AST]]:
    """(module path, node) for every node of every module of ``packages``."""
    for path in modules(*packages):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            yield str(path.relative_to(ROOT)), node


def name_of(node: ast.AST) -> str | None:
    """The identifier a node names, if it names one (attribute, variable, argument,
    keyword, function)."""
    match node:
        case ast.Attribute(attr=name) | ast.Name(id=name) | ast.arg(arg=name):
            return name
        case ast.keyword(arg=name) | ast.FunctionDef(name=name):
            return name
    return None


def test_no_annotations_dictionary_on_calls() -> None:
    found = [
        f"{path}:{getattr(node, 'lineno', '?')}"
        for path, node in nodes(*PRODUCT)
        if name_of(node) == "annotations"
    ]
    assert found == []


def test_emergency_dial_strings_are_recognised_in_one_place() -> None:
    callers = [
        path
        for path, node in nodes(*PRODUCT)
        if isinstance(node, ast.Call) and name_of(node.func) == "recognise_emergency"
    ]
    assert callers == ["routing/emergency.py"]  # DialPlan.match, which the rest asks


def test_record_of_lives_in_cdr() -> None:
    defined = [
        path
        for path, node in nodes(*PRODUCT)
        if isinstance(node, ast.FunctionDef) and node.name == "record_of"
    ]
    assert defined == ["cdr/call_record.py"]


def test_gateway_top_level_holds_packages_not_loose_modules() -> None:
    loose = sorted(p.name for p in (ROOT / "gateway").glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "config.py"]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    return subprocess.run(
        [str(bin_dir / command[0]), *command[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_ruff_is_clean() -> None:
    for command in (("ruff", "check", "."), ("ruff", "format", "--check", ".")):
        result = run(*command)
        assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    # pyproject.toml: strict = true over gateway, routing and cdr.
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
