"""The packages stay readable: no file over 400 lines, no function over 60 (issue: one-way layers)."""

import ast
import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_FILE, MAX_FUNCTION = 400, 60


def oversized(folder: str) -> list[str]:
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "*.py"))):
        with open(path) as fh:
            src = fh.read()
        name = os.path.relpath(path, ROOT)
        if len(src.splitlines()) > MAX_FILE:
            out.append(f"{name}: {len(src.splitlines())} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION:
                    out.append(f"{name}:{node.lineno} {node.name}: {n} lines")
    return out


@pytest.mark.parametrize("package", ["tuner", "trainables", "analysis"])
def test_files_and_functions_stay_small(package):
    assert oversized(os.path.join(ROOT, package)) == []


def test_the_size_check_sees_a_long_function(tmp_path):
    (tmp_path / "big.py").write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION)
    assert [p.split(" ", 1)[1] for p in oversized(str(tmp_path))] == [f"f: {MAX_FUNCTION + 1} lines"]
