"""The package's import graph, read from the source (function-level imports included): a lazy
import hides a cycle from Python but not from the next person who changes either module."""

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1] / "nasctl"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            for t in targets:
                if t in modules and t != name and not name.startswith(t + "."):  # a package's own __init__ is no cycle
                    g.add_edge(name, t)
    return g


def test_no_import_cycles_between_modules():
    assert list(nx.simple_cycles(import_graph())) == []


def test_no_import_cycles_between_packages():
    g = import_graph()
    pkgs = nx.DiGraph()
    for a, b in g.edges:
        pa, pb = a.split(".")[:2], b.split(".")[:2]
        if pa != pb:
            pkgs.add_edge(".".join(pa), ".".join(pb))
    assert list(nx.simple_cycles(pkgs)) == []
    # The layers as the brief draws them: a space knows nothing of nets, nets nothing of devices.
    assert not nx.has_path(pkgs, "nasctl.space", "nasctl.models")
    assert not nx.has_path(pkgs, "nasctl.models", "nasctl.profile")


def test_profiling_does_not_load_torch():
    """`nasctl devices` and the agents' host side must not pay torch's import time."""
    code = "import sys, nasctl.profile, nasctl.device.transports; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
