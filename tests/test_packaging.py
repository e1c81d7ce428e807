"""What a built wheel holds is decided by pyproject.toml's package list and package data; a
module or data file left out of them only fails once a user installs the wheel (nasctl.ofa was).
These checks read the tree, so a new folder or file that is not shipped fails here first.
`.ci/wheel-smoke` then installs the real wheel and imports every module from it."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
# Folders whose Python files are not part of the package: the tests' own, caches.
NOT_SHIPPED = {"__pycache__"}


def source_dir(package: str) -> Path:
    top, *rest = package.split(".")
    return ROOT.joinpath(PYPROJECT.get("package-dir", {}).get(top, top), *rest)


def tree_packages() -> set[str]:
    """Every folder under a shipped top-level package that holds Python files."""
    found = set()
    for top in {p.split(".")[0] for p in PYPROJECT["packages"]}:
        base = source_dir(top)
        for py in base.rglob("*.py"):
            rel = py.parent.relative_to(base).parts
            if not NOT_SHIPPED.intersection(rel):
                found.add(".".join((top, *rel)))
    return found


def test_every_package_in_the_tree_is_listed():
    assert sorted(tree_packages()) == sorted(PYPROJECT["packages"])


def test_every_data_file_in_the_tree_is_package_data():
    """Every non-Python file under a shipped package (its own folder or a data folder below it)
    matches a package-data pattern of the nearest package above it."""
    dirs = {source_dir(p): p for p in PYPROJECT["packages"]}
    missing = []
    for top in {p.split(".")[0] for p in PYPROJECT["packages"]}:
        for f in source_dir(top).rglob("*"):
            if not f.is_file() or f.suffix in (".py", ".pyc") or NOT_SHIPPED.intersection(f.parts):
                continue
            owner = next(d for d in f.parents if d in dirs)
            if not any(f in owner.glob(pattern) for pattern in PYPROJECT.get("package-data", {}).get(dirs[owner], [])):
                missing.append(str(f.relative_to(ROOT)))
    assert missing == []


def test_agent_runs_on_python_38():
    """The agent runs under the board's own Python: a Jetson's newest JetPack (5.1.x) ships 3.8.
    A static check (vermin) of everything the zipapp holds; annotations stay unevaluated there
    (`from __future__ import annotations`), so `list[int]` in one is no violation."""
    import subprocess
    import sys

    for name in ("agent.py", "protocol.py"):  # the zipapp's two modules
        assert "from __future__ import annotations" in (ROOT / "agents" / name).read_text(), name
    vermin = Path(sys.executable).with_name("vermin")  # its console script: vermin has no __main__
    p = subprocess.run([str(vermin), "--no-tips", "--violations", "-t=3.8-", str(ROOT / "agents")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
