"""The documentation site: it builds with warnings as errors, its examples run, and it
documents every public name.

- ``mkdocs build --strict`` of ``mkdocs.yml`` (once per session, into a temporary folder).
- Every ```` ```python ```` block of ``README.md`` and of the pages under ``docs/`` is run:
  the blocks of one file in order, in one namespace, in a fresh interpreter per file (the
  examples set global state such as JAX's float64 switch). A block that cannot run on a
  CPU-only machine is preceded by ``<!-- skip-exec: why -->``; at most ``MAX_SKIPPED`` are.
  A block preceded by ``<!-- requires: module, ... -->`` (the other libraries of the
  migration guides) runs where those modules are importable; ``tests/test_migration.py``
  runs them in the competitors' environment.
- Every name in the ``__all__`` of a public module (one whose path has no component
  starting with ``_``) has a docstring, and so has each public method of a public class;
  each of them is rendered in the API reference of the built site.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MAX_SKIPPED = 3
SKIP = re.compile(r"^<!--\s*skip-exec(?::\s*(?P<why>.*?))?\s*-->$")
REQUIRES = re.compile(r"^<!--\s*requires:\s*(?P<modules>[\w., ]+?)\s*-->$")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")


# ---------------------------------------------------------------------------- code blocks


def markdown_files():
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def code_blocks(path: Path):
    """The fenced blocks of ``path``: dicts of ``lang``, ``line`` (1-based, first code line),
    ``code`` (dedented), ``skip`` (the reason of a preceding skip marker, else None) and
    ``requires`` (the modules of a preceding requires marker)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i, previous = [], 0, ""
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        indent, fence, lang = m.group("indent"), m.group("fence"), m.group("lang").lower()
        start, i = i + 1, i + 1
        while i < len(lines) and not (lines[i].startswith(indent + fence[0] * len(fence))
                                      and not lines[i].strip().strip(fence[0])):
            i += 1
        body = [ln[len(indent):] if ln.startswith(indent) else ln.lstrip()
                for ln in lines[start:i]]
        marker, requires = SKIP.match(previous), REQUIRES.match(previous)
        blocks.append({"lang": lang, "line": start + 1, "code": "\n".join(body) + "\n",
                       "skip": (marker.group("why") or "no reason given") if marker else None,
                       "requires": [m.strip() for m in requires.group("modules").split(",")]
                       if requires else []})
        previous, i = "", i + 1
    return blocks


def python_blocks(path):
    return [b for b in code_blocks(path) if b["lang"] in ("python", "py")]


def rel(path):
    return path.relative_to(ROOT).as_posix()


FILES_WITH_PYTHON = [p for p in markdown_files() if python_blocks(p)]

RUNNER = textwrap.dedent("""
    import json, sys, time
    blocks = json.load(open(sys.argv[1]))
    namespace = {"__name__": "__main__"}
    times = []
    for b in blocks:
        t = time.perf_counter()
        exec(compile(b["code"], b["where"], "exec"), namespace)
        times.append(round(time.perf_counter() - t, 2))
    print("block seconds:", times)
""")


def test_skip_markers_are_few_and_each_precedes_a_python_block():
    skipped, stray = [], []
    for path in markdown_files():
        text = path.read_text(encoding="utf-8").splitlines()
        blocks = code_blocks(path)
        for pattern, key in ((SKIP, "skip"), (REQUIRES, "requires")):
            markers = sum(bool(pattern.match(line.strip())) for line in text)
            marked = [b for b in blocks if b[key]]
            if markers != len(marked) or any(b["lang"] not in ("python", "py") for b in marked):
                stray.append(rel(path))
        skipped += [(rel(path), b["line"], b["skip"]) for b in blocks if b["skip"]]
    assert not stray, f"markers not directly before a python block in {stray}"
    assert len(skipped) <= MAX_SKIPPED, f"too many examples are not run: {skipped}"


def test_the_docs_have_examples():
    n = sum(len(python_blocks(p)) for p in markdown_files())
    assert n >= 25, n
    assert {"README.md", "docs/getting-started.md"} <= {rel(p) for p in FILES_WITH_PYTHON}


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory):
    # One compilation cache for the session's examples: files that jit the same
    # computation (README.md and the getting-started page) compile it once.
    return tmp_path_factory.mktemp("jax-cache")


def importable(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def run_blocks(python, blocks, tmp_path, jax_cache):
    """Run ``blocks`` in order, in one namespace, in a fresh ``python``; its CompletedProcess."""
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    (tmp_path / "runner.py").write_text(RUNNER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(MPLBACKEND="Agg", JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=str(jax_cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    # Run in a scratch folder: an example that writes files leaves nothing in the tree.
    work = tmp_path / "work"
    work.mkdir()
    return subprocess.run([str(python), str(tmp_path / "runner.py"),
                           str(tmp_path / "blocks.json")],
                          capture_output=True, text=True, cwd=work, env=env, timeout=600)


@pytest.mark.parametrize("path", FILES_WITH_PYTHON, ids=rel)
def test_examples_run(path, tmp_path, jax_cache):
    blocks = [dict(b, where=f"{rel(path)}:{b['line']}") for b in python_blocks(path)
              if b["skip"] is None and all(importable(m) for m in b["requires"])]
    if not blocks:
        pytest.skip("every example of this file is marked skip-exec or needs another library")
    proc = run_blocks(sys.executable, blocks, tmp_path, jax_cache)
    assert proc.returncode == 0, (
        f"an example of {rel(path)} failed (the traceback names file:line of its block)\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")


# ---------------------------------------------------------------------------- the site


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    for mod in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(mod, reason='the docs extra: pip install -e ".[docs]"')
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def test_site_builds_strict(site):
    assert (site / "index.html").is_file()
    assert (site / "api" / "optnet" / "index.html").is_file()
    # Every page of docs/ is in the site (the build would warn about pages not in nav).
    for page in DOCS.rglob("*.md"):
        html = page.relative_to(DOCS).with_suffix("")
        html = html.parent if html.name == "index" else html
        assert (site / html / "index.html").is_file(), page


def public_modules():
    """The modules of the package with an ``__all__`` and no ``_`` component, found without
    importing anything (``optnet.backends.cupy`` needs cupy)."""
    found = []
    for path in sorted((ROOT / "optnet").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = [t for node in tree.body if isinstance(node, ast.Assign)
                   for t in node.targets]
        targets += [node.target for node in tree.body if isinstance(node, ast.AnnAssign)]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            found.append(".".join(parts))
    return found


def test_public_modules_found():
    assert {"optnet", "optnet.torch", "optnet.jax"} <= set(public_modules())


def public_objects():
    """``(qualified name, object)`` for each public name and each public method of a class."""
    out = []
    for modname in public_modules():
        mod = importlib.import_module(modname)
        for name in mod.__all__:
            obj = getattr(mod, name)
            out.append((f"{modname}.{name}", obj))
            if inspect.isclass(obj) and not issubclass(obj, BaseException):
                for attr, member in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    if isinstance(member, staticmethod | classmethod):
                        member = member.__func__
                    if inspect.isfunction(member) or isinstance(member, property):
                        out.append((f"{modname}.{name}.{attr}", member))
    return out


def _own_doc(obj):
    doc = obj.__doc__ or ""
    # A NamedTuple without a docstring gets "Name(field, ...)".
    if inspect.isclass(obj) and re.fullmatch(rf"{obj.__name__}\(.*\)", doc.strip()):
        return ""
    return inspect.cleandoc(doc)


def test_public_names_have_numpydoc_docstrings():
    missing, sections = [], []
    for qualname, obj in public_objects():
        doc = _own_doc(obj)
        if not doc:
            missing.append(qualname)
            continue
        # Public functions with parameters document them, numpydoc style.
        if inspect.isfunction(obj) and qualname.count(".") <= 2 and [
                p for p in inspect.signature(obj).parameters if p not in ("self", "ctx")]:
            for section in ("Parameters", "Returns"):
                if not re.search(rf"^{section}\n-{{3,}}$", doc, flags=re.M):
                    sections.append(f"{qualname}: {section}")
    assert not missing, f"public names without a docstring: {missing}"
    assert not sections, f"numpydoc sections missing: {sections}"


def test_public_names_are_in_the_api_reference(site):
    pages = "\n".join(p.read_text(encoding="utf-8") for p in (site / "api").rglob("*.html"))
    anchors = set(re.findall(r'id="([\w.]+)"', pages))
    absent = [q for q, _ in public_objects() if q not in anchors]
    assert not absent, f"not rendered in the API reference (docs/api/*.md): {absent}"
