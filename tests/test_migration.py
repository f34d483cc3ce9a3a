"""The migration guides (``docs/migration/``) against the libraries they migrate from.

Each guide runs the same problem through the other library and through optnet and checks
that the solutions and gradients agree. Its blocks that need the other library are marked
``<!-- requires: module -->``; ``tests/test_docs.py`` runs the rest. Here every block of
a guide runs, in order, in an interpreter that has the other library: the competitors'
environment of the benchmarks (``benchmarks/setup_env.sh``; found at ``$OPTNET_BENCH_PYTHON``,
``benchenv/`` in the repository, or ``benchenv/`` beside it), or this interpreter if it has
them. A guide whose library is not installed anywhere is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_docs import DOCS, ROOT, python_blocks, rel, run_blocks

GUIDES = sorted(p for p in (DOCS / "migration").glob("*.md") if p.name != "index.md")


def candidates():
    found = [os.environ.get("OPTNET_BENCH_PYTHON"), ROOT / "benchenv" / "bin" / "python",
             ROOT.parent / "benchenv" / "bin" / "python", sys.executable]
    return [Path(p) for p in found if p and Path(p).exists()]


def interpreter_with(modules):
    """The first candidate interpreter that imports ``modules`` and optnet's dependencies."""
    code = "import " + ", ".join(["numpy", "scipy", "array_api_compat", *modules])
    for python in candidates():
        proc = subprocess.run([str(python), "-c", code], capture_output=True, timeout=300)
        if proc.returncode == 0:
            return python
    return None


def test_every_guide_is_in_the_index():
    index = (DOCS / "migration" / "index.md").read_text(encoding="utf-8")
    assert GUIDES and all(f"({p.name})" in index for p in GUIDES)


@pytest.mark.parametrize("path", GUIDES, ids=rel)
def test_guide_agrees_with_the_other_library(path, tmp_path):
    blocks = [dict(b, where=f"{rel(path)}:{b['line']}") for b in python_blocks(path)
              if b["skip"] is None]
    modules = sorted({m for b in blocks for m in b["requires"]})
    assert modules, f"{rel(path)} marks no block as needing the other library"
    python = interpreter_with(modules)
    if python is None:
        pytest.skip(f"{', '.join(modules)} not installed (bash benchmarks/setup_env.sh)")
    cache = tmp_path / "jax-cache"
    cache.mkdir()
    proc = run_blocks(python, blocks, tmp_path, cache)
    assert proc.returncode == 0, (
        f"{rel(path)} with {python}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
