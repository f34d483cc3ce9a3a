"""Packaging: the wheel and the sdist build, hold the right files, and install and work in
virtual environments that do not see this checkout.

- Both are built once per module with ``python -m build --no-isolation`` (no network: the
  build backend is the running interpreter's setuptools) from a copy of the checkout's files,
  so that the build's ``optnet.egg-info`` lands in the copy and not in the repository (where,
  on ``sys.path``, it would make a second ``optnet`` distribution).
- A fresh venv without the system site packages installs the wheel (pip fetches numpy, scipy
  and array-api-compat from the configured index) and then the sdist over it; each time its
  python, run outside the repository, imports optnet from the venv, reads the version and the
  ``py.typed`` marker, and solves a small QP of known solution.
- A venv with the system site packages installs the wheel's ``torch``, ``jax`` and
  ``experiments`` extras with ``--no-index`` and no pip configuration, so that every
  requirement must already be satisfied by the system site packages: pip can fetch nothing
  (above all no torch wheel, which a bare requirement would take as a CUDA build). Then
  ``optnet.torch.solve`` and ``optnet.jax.solve`` solve the QP and the ``optnet`` console script
  of the venv answers ``--help``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VERSION = re.search(r'^__version__ = "([^"]+)"$',
                    (ROOT / "optnet" / "_version.py").read_text(encoding="utf-8"),
                    flags=re.M).group(1)
BIN = "Scripts" if os.name == "nt" else "bin"
TIMEOUT = 300

# Run by the venvs' python: everything it reports comes from the installed package.
CHECK = r'''
import importlib.metadata, importlib.resources, json, sys
import numpy as np
import optnet

dist = importlib.metadata.distribution("optnet")
out = {"file": optnet.__file__, "prefix": sys.prefix, "version": optnet.__version__,
       "dist_version": dist.version, "direct_url": json.loads(dist.read_text("direct_url.json")
                                                             or "{}").get("url", ""),
       "py_typed": importlib.resources.files("optnet").joinpath("py.typed").is_file()}
# minimize 1/2 x'x - [1, 1]'x subject to x <= 0.5: the free minimizer [1, 1] clipped, [0.5, 0.5].
Q, q, G, h = np.eye(2), -np.ones(2), np.eye(2), np.full(2, 0.5)
sol = optnet.solve(Q, q, G, h)
out["numpy"] = {"x": sol.x.tolist(), "solved": bool(sol.status == optnet.Status.SOLVED)}
if "torch" in sys.argv[1:]:
    import torch
    x, status = optnet.torch.solve(*(torch.tensor(a) for a in (Q, q, G, h)), status=True)
    out["torch"] = {"x": x.tolist(), "solved": bool(status == optnet.Status.SOLVED),
                    "module": torch.__file__}
if "jax" in sys.argv[1:]:
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    x, status = optnet.jax.solve(*(jnp.asarray(a) for a in (Q, q, G, h)), status=True)
    out["jax"] = {"x": x.tolist(), "solved": bool(status == optnet.Status.SOLVED),
                  "module": jax.__file__}
print(json.dumps(out))
'''


def clean_env(**extra):
    """The environment of the subprocesses: nothing points at this checkout or another venv."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", JAX_PLATFORMS="cpu",
               MPLBACKEND="Agg", PYTHONNOUSERSITE="1", **extra)
    return env


def run(cmd, cwd, env=None):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env or clean_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                                  f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def copy_sources(dest: Path):
    """The checkout's files as git sees them (tracked and untracked, not ignored) into
    ``dest``; without git, the tree less the usual build and cache folders."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], cwd=ROOT, capture_output=True,
                                check=True, timeout=60).stdout.decode().split("\0")
    except (OSError, subprocess.SubprocessError):
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
            ".git", "__pycache__", "*.egg-info", "build", "dist", "site", "runs", "benchenv",
            ".pytest_cache", ".hypothesis", ".ruff_cache"))
        return
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def make_venv(path: Path, system_site_packages=False):
    """A venv at ``path``; its python. With the system site packages it gets no pip or
    setuptools of its own (``--without-pip``): the system's serve, pip installing into the
    venv, and the venv's older copies cannot shadow what the system's torch requires."""
    cmd = [sys.executable, "-m", "venv", path]
    if system_site_packages:
        cmd[3:3] = ["--system-site-packages", "--without-pip"]
    run(cmd, cwd=path.parent)
    return path / BIN / ("python.exe" if os.name == "nt" else "python")


def check_installed(python: Path, outside: Path, *frameworks):
    """Run CHECK with ``python`` in ``outside``; assert the installed optnet answers right."""
    script = outside / "check_optnet.py"
    script.write_text(CHECK, encoding="utf-8")
    out = json.loads(run([python, script, *frameworks], cwd=outside).stdout.splitlines()[-1])
    prefix = Path(out["prefix"]).resolve()
    assert Path(out["file"]).resolve().is_relative_to(prefix), (
        f"optnet imported from {out['file']}, not from the venv {prefix}")
    assert out["version"] == out["dist_version"] == VERSION, out
    assert out["py_typed"], "importlib.resources finds no optnet/py.typed"
    for name in ("numpy", *frameworks):
        assert out[name]["solved"], (name, out[name])
        assert max(abs(v - 0.5) for v in out[name]["x"]) < 1e-8, (name, out[name])
    return out


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """``(wheel, sdist)`` built from a copy of the checkout."""
    pytest.importorskip("build", reason='the packaging test needs "build" (the test extra)')
    pytest.importorskip("setuptools", reason="the build backend, setuptools, is not installed")
    base = tmp_path_factory.mktemp("dists")
    src, out = base / "src", base / "dist"
    src.mkdir()
    copy_sources(src)
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src], cwd=base)
    wheel, = out.glob("*.whl")
    sdist, = out.glob("*.tar.gz")
    return wheel, sdist


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """A working directory with nothing of the repository in it."""
    return tmp_path_factory.mktemp("outside")


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory, dists):
    """A venv without the system site packages, the wheel installed with its requirements."""
    python = make_venv(tmp_path_factory.mktemp("venv") / "fresh")
    run([python, "-m", "pip", "install", dists[0]], cwd=python.parent)
    return python


def test_wheel_files(dists):
    wheel, _ = dists
    assert wheel.name == f"optnet-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = f"optnet-{VERSION}.dist-info"
        metadata = zf.read(f"{info}/METADATA").decode()
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    assert {"optnet/__init__.py", "optnet/_version.py", "optnet/py.typed"} <= set(names)
    stray = [n for n in names if n.split("/")[0] in ("tests", "benchmarks", "docs", "examples",
                                                     "scripts")]
    assert not stray, f"the wheel holds files outside the package: {stray}"
    assert all(n.startswith(("optnet/", f"{info}/")) for n in names), names
    assert f"\nVersion: {VERSION}\n" in metadata
    assert re.search(r"^optnet = optnet\.experiments\.cli:main$", entry_points, flags=re.M)


def test_sdist_files(dists):
    _, sdist = dists
    assert sdist.name == f"optnet-{VERSION}.tar.gz"
    with tarfile.open(sdist) as tf:
        names = set(tf.getnames())
    top = f"optnet-{VERSION}"
    wanted = ["pyproject.toml", "README.md", "CHANGELOG.md", "optnet/__init__.py",
              "optnet/_version.py", "optnet/py.typed"]
    wanted += [p.name for p in ROOT.glob("LICEN[CS]E*")]
    missing = [w for w in wanted if f"{top}/{w}" not in names]
    assert not missing, f"the sdist lacks {missing}"


def test_wheel_installs_and_runs_in_a_fresh_venv(fresh_venv, dists, outside):
    out = check_installed(fresh_venv, outside)
    assert out["direct_url"].endswith(dists[0].name), out["direct_url"]


def test_sdist_installs_and_runs_in_a_fresh_venv(fresh_venv, dists, outside):
    # Over the wheel's install (its requirements are there), built as a user's pip builds
    # it: in an isolated build environment of the sdist's [build-system] requirements, from
    # the index like the fresh venv's requirements (the venv's setuptools 65 of Python 3.11's
    # ensurepip has no bdist_wheel, so --no-build-isolation would need another fetch anyway).
    run([fresh_venv, "-m", "pip", "install", "--force-reinstall", "--no-deps", dists[1]],
        cwd=outside)
    out = check_installed(fresh_venv, outside)
    assert out["direct_url"].endswith(dists[1].name), out["direct_url"]


def test_extras_from_the_system_site_packages(tmp_path_factory, dists, outside):
    wheel, _ = dists
    python = make_venv(tmp_path_factory.mktemp("venv") / "extras", system_site_packages=True)
    # No index, no find-links, no configuration: pip may install nothing but the wheel.
    offline = clean_env(PIP_CONFIG_FILE=os.devnull)
    offline.pop("PIP_FIND_LINKS", None)
    pip = [python, "-m", "pip", "install", "--no-index"]
    # The wheel itself first (a system-wide optnet of the same version would satisfy it).
    logs = [run([*pip, "--force-reinstall", "--no-deps", wheel], outside, offline).stdout]
    for extra in ("torch", "jax", "experiments"):
        logs.append(run([*pip, f"{wheel}[{extra}]"], outside, offline).stdout)
    installed = [line for log in logs for line in log.splitlines()
                 if line.startswith("Successfully installed")]
    assert all(line.split()[2:] == [f"optnet-{VERSION}"] for line in installed), installed
    # Nothing but optnet is in the venv itself.
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
               outside).stdout.strip()
    own = sorted(p.name.split("-")[0].lower() for p in Path(site).glob("*.dist-info"))
    assert own == ["optnet"], own

    out = check_installed(python, outside, "torch", "jax")
    venv = Path(out["prefix"]).resolve()
    assert not Path(out["torch"]["module"]).resolve().is_relative_to(venv)

    script = python.parent / ("optnet.exe" if os.name == "nt" else "optnet")
    assert script.is_file(), f"no optnet console script in {python.parent}"
    helptext = run([script, "--help"], outside).stdout
    assert "sudoku" in helptext and "denoise" in helptext, helptext
