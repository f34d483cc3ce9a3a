"""Import hygiene: ``import optnet`` pulls in no framework; adapters load theirs on access.

Each check runs in a fresh interpreter (``sys.executable -c``), since the test
process itself has long imported torch and jax.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("torch", "jax", "cupy")


def run_python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter with the repository importable; parse its JSON."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


PRELUDE = """
import json, sys
def loaded():
    return {name: name in sys.modules for name in ("torch", "jax", "cupy")}
"""


def test_import_optnet_imports_no_framework():
    out = run_python(PRELUDE + """
import optnet
after_import = loaded()
import numpy as np
sol = optnet.solve(np.eye(2), np.array([1.0, -1.0]), G=-np.eye(2), h=np.zeros(2))
g = optnet.vjp(sol, np.ones(2))
after_solve = loaded()
print(json.dumps({"import": after_import, "solve": after_solve,
                  "x": [float(v) for v in sol.x], "status": int(sol.status),
                  "file": optnet.__file__}))
""")
    assert Path(out["file"]).resolve().parent == ROOT / "optnet"
    assert out["import"] == {name: False for name in FRAMEWORKS}
    # Solving NumPy problems (and differentiating them) must not import a framework either.
    assert out["solve"] == {name: False for name in FRAMEWORKS}
    assert out["status"] == 0
    assert abs(out["x"][0]) < 1e-8 and abs(out["x"][1] - 1.0) < 1e-8


def test_public_names_do_not_import_frameworks():
    out = run_python(PRELUDE + """
import optnet
names = {n: type(getattr(optnet, n)).__name__ for n in optnet.__all__}
print(json.dumps({"loaded": loaded(), "names": sorted(names)}))
""")
    assert out["loaded"] == {name: False for name in FRAMEWORKS}
    assert {"solve", "vjp", "jvp", "Status"} <= set(out["names"])


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_adapter_imports_its_framework_only_on_access(framework):
    pytest.importorskip(framework)
    other = "jax" if framework == "torch" else "torch"
    out = run_python(PRELUDE + f"""
import optnet
before = loaded()
adapter = optnet.{framework}
after = loaded()
print(json.dumps({{"before": before, "after": after, "module": adapter.__name__,
                  "has_solve": callable(getattr(adapter, "solve", None))}}))
""")
    assert out["before"] == {name: False for name in FRAMEWORKS}
    assert out["after"][framework] is True
    assert out["after"][other] is False
    assert out["after"]["cupy"] is False
    assert out["module"] == f"optnet.{framework}"
    assert out["has_solve"] is True


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_from_optnet_import_torch_layer():
    out = run_python(PRELUDE + """
from optnet import torch as ot
print(json.dumps({"loaded": loaded(), "layer": ot.OptNetLayer.__name__}))
""")
    assert out["loaded"]["torch"] is True and out["loaded"]["jax"] is False
    assert out["layer"] == "OptNetLayer"


def test_unknown_attribute_raises_attribute_error():
    out = run_python(PRELUDE + """
import optnet
try:
    optnet.cupy_adapter_that_does_not_exist
    raised = False
except AttributeError:
    raised = True
print(json.dumps({"raised": raised, "loaded": loaded()}))
""")
    assert out["raised"] is True
    assert out["loaded"] == {name: False for name in FRAMEWORKS}
