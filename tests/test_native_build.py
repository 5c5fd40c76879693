"""Which build of the SIP core runs (gateway/ops/native.py): compiled when its build is
current, the whole group from source after an edit or with ``VOIPGW_PURE_PYTHON=1``.

The edited cases run on a copy of ``gateway/`` (mtimes kept) with the root's shared
library and ``setup.py``, in a subprocess started in that copy, so that this tree,
which others may be building, is never touched. The subprocess runs a basic call
through the transaction layer and the B2BUA (tests.bench.bench_core), from the
repository, which it finds after the copy on ``sys.path``.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import time
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from gateway import CORE_LIBRARY
from gateway.ops import native

ROOT = Path(__file__).resolve().parents[1]

PROBE = f"""
import json, sys
sys.path.append({str(ROOT)!r})
import gateway, gateway.ops.native as native
from tests.bench import bench_core
bench_core.run(3)
print(json.dumps({{
    "gateway": gateway.__file__,
    "build": native.core_build(),
    "described": native.describe_core_build(),
    "core_library_loaded": {CORE_LIBRARY!r} in sys.modules,
    "files": sorted(
        module.__file__ for name, module in list(sys.modules.items())
        if name.startswith(("gateway.sip", "gateway.b2bua"))
    ),
}}))
"""


def tree_is_compiled_and_current() -> str | None:
    """None when this tree runs compiled, else why not."""
    if os.environ.get("VOIPGW_PURE_PYTHON") == "1":
        return "VOIPGW_PURE_PYTHON=1"
    if not list(ROOT.glob(f"{CORE_LIBRARY}*")):
        return "the core is not built"
    if stale := native.stale_extensions():
        return f"sources edited since the build: {stale}"
    return None


def probe(tree: Path, **env: str) -> dict[str, object]:
    """Runs PROBE with ``tree`` first on ``sys.path`` (its working directory)."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if key not in {"VOIPGW_PURE_PYTHON", "PYTHONPATH", "PYTHONSAFEPATH"}
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tree,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    found: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    assert str(found["gateway"]).startswith(str(tree)), found
    return found


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """``gateway/``, the shared library and ``setup.py`` copied with their mtimes."""
    if not list(ROOT.glob(f"{CORE_LIBRARY}*")):
        pytest.skip("the core is not built (make native)")
    shutil.copytree(
        ROOT / "gateway", tmp_path / "gateway", ignore=shutil.ignore_patterns("__pycache__")
    )
    for path in [*ROOT.glob(f"{CORE_LIBRARY}*"), ROOT / "setup.py"]:
        shutil.copy2(path, tmp_path / path.name)
    return tmp_path


def edit(source: Path) -> None:
    """What saving a file in an editor does to the build: a newer mtime."""
    later = time.time() + 10
    os.utime(source, (later, later))


def test_an_edited_source_brings_the_whole_group_in_from_source(tree_copy: Path) -> None:
    edit(tree_copy / "gateway" / "sip" / "uri.py")
    found = probe(tree_copy)
    assert found["build"] == "interpreted"
    assert found["described"] == (
        "interpreted (sources edited since the build: gateway.sip.uri; run `make native`)"
    )
    files = found["files"]
    assert isinstance(files, list)
    assert any(name.endswith("/gateway/sip/parser.py") for name in files), files
    assert any(name.endswith("/gateway/b2bua/core.py") for name in files), files
    assert all(name.endswith(".py") for name in files), files
    assert found["core_library_loaded"] is False


def test_voipgw_pure_python_brings_the_group_in_from_source(tree_copy: Path) -> None:
    found = probe(tree_copy, VOIPGW_PURE_PYTHON="1")
    assert found["described"] == "interpreted (VOIPGW_PURE_PYTHON=1)"
    files = found["files"]
    assert isinstance(files, list)
    assert files and all(name.endswith(".py") for name in files), files
    assert found["core_library_loaded"] is False


def test_an_installed_package_is_not_judged_by_mtimes(tree_copy: Path) -> None:
    """pip writes each ``.py`` after its extension: no setup.py, no staleness."""
    if reason := tree_is_compiled_and_current():
        pytest.skip(reason)
    (tree_copy / "setup.py").unlink()
    edit(tree_copy / "gateway" / "sip" / "uri.py")
    found = probe(tree_copy)
    assert found["build"] == "compiled", found


def test_a_current_build_runs_compiled(tree_copy: Path) -> None:
    if reason := tree_is_compiled_and_current():
        pytest.skip(reason)
    found = probe(tree_copy)
    assert found["described"] == "compiled"
    files = found["files"]
    assert isinstance(files, list)
    suffixes = tuple(EXTENSION_SUFFIXES)
    assert files and all(name.endswith(suffixes) for name in files), files
    assert found["core_library_loaded"] is True


def test_this_tree_runs_compiled_when_its_build_is_current() -> None:
    if reason := tree_is_compiled_and_current():
        pytest.skip(reason)
    assert native.describe_core_build() == "compiled"
    loaded = [
        module.__file__ or ""
        for name, module in list(sys.modules.items())
        if name.startswith(("gateway.sip", "gateway.b2bua"))
    ]
    assert loaded and not [name for name in loaded if name.endswith(".py")], loaded


def test_ci_measures_the_compiled_build() -> None:
    """conftest.py stops the session before this could fail; it is here so that a CI
    log names the build it measured as a passed test, not only in the header."""
    if not native.compiled_build_required():
        pytest.skip("not CI (CI=true or VOIPGW_REQUIRE_COMPILED=1)")
    assert native.core_build() == "compiled"
    assert native.stale_extensions() == []


def test_ci_and_an_explicit_requirement_require_the_compiled_build() -> None:
    assert native.compiled_build_required({"CI": "true"})
    assert native.compiled_build_required({"VOIPGW_REQUIRE_COMPILED": "1"})
    assert native.compiled_build_required(
        {"VOIPGW_REQUIRE_COMPILED": "1", "VOIPGW_PURE_PYTHON": "1"}
    )
    assert not native.compiled_build_required({"CI": "true", "VOIPGW_PURE_PYTHON": "1"})
    assert not native.compiled_build_required({})


def _setup_py_constant(name: str) -> tuple[str, ...]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    (value,) = (
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
    )
    assert isinstance(value, tuple)
    return value


def test_the_compiled_packages_are_the_ones_setup_py_compiles() -> None:
    """The finder takes the directories that hold extensions; setup.py names them:
    its packages, wholly compiled, and the directories of its single modules, where
    only those modules are."""
    packages = _setup_py_constant("NATIVE_PACKAGES")
    modules = _setup_py_constant("NATIVE_MODULES")
    found = native._compiled_beside_sources(ROOT)
    if not found:
        pytest.skip("the core is not built (make native)")
    directories = {*packages, *(str(Path(module).parent) for module in modules)}
    assert sorted(str(path.relative_to(ROOT)) for path in found) == sorted(directories)
    single = sorted(
        str(source.relative_to(ROOT))
        for path, pairs in found.items()
        if str(path.relative_to(ROOT)) not in packages
        for source, _ in pairs
    )
    assert single == sorted(modules)
