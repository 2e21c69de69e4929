"""The layers point one way: tuner/ -> analysis/ -> trainables/, and only tuner/ imports Ray,
MLflow or Optuna. Imports are read from the source (ast), so a lazy import inside a function
counts as much as one at the top of a file."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("tuner", "trainables", "analysis")
SERVICES = ("ray", "mlflow", "optuna")
FORBIDDEN = {
    "trainables": SERVICES + ("tuner", "analysis"),
    "analysis": SERVICES + ("tuner",),
}


def modules() -> dict[str, pathlib.Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts): p
            for pkg in PACKAGES for p in sorted((ROOT / pkg).glob("*.py"))}


def imports_of(path: pathlib.Path) -> set[str]:
    """Every module name `path` imports; `from pkg import mod` counts as pkg.mod when that is a module."""
    known = modules()
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the package
                base = ".".join([path.parent.name] + ([base] if base else []))
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return out


def graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (a package's __init__ counts only when named itself)."""
    known = modules()
    g = {}
    for mod, path in known.items():
        deps = set()
        for name in imports_of(path):
            target = name if name in known else f"{name}.__init__" if f"{name}.__init__" in known else None
            if target and target != mod:
                deps.add(target)
        g[mod] = deps
    return g


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_import_nothing_above_them(package):
    bad = [f"{mod} imports {name}" for mod, path in modules().items() if mod.split(".")[0] == package
           for name in sorted(imports_of(path)) if name.split(".")[0] in FORBIDDEN[package]]
    assert not bad, "\n".join(bad)


def test_no_file_level_import_cycle():
    g = graph()
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(g[m]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [m, d]) if d in stack else f"{m} -> {d}")
            elif d not in state:
                visit(d, stack + [m])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_a_forbidden_import(tmp_path, monkeypatch):
    """The check itself can fail: a planted `import ray` in a trainables file is found."""
    planted = tmp_path / "x.py"
    planted.write_text("def f():\n    import ray.tune\n    from tuner import spec\n")
    assert {"ray.tune", "tuner"} <= imports_of(planted) | {n.split(".")[0] for n in imports_of(planted)}
