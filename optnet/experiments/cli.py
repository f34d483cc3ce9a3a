"""The ``optnet`` console command: one subcommand per experiment module.

Each module named in :data:`optnet.experiments.EXPERIMENTS` lives at
``optnet.experiments.<name>`` and exposes

- ``HELP: str``, a one-line description for ``optnet --help``;
- ``add_arguments(parser)``, which adds its options to its subparser;
- ``run(args) -> dict``, which runs it and returns its headline numbers.

The modules are imported only when their subcommand runs, so that
``optnet --help`` stays fast and does not need torch or matplotlib; their
one-line help is read from the module source without importing it.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import sys

from . import EXPERIMENTS

_INSTALL_HINT = 'pip install "optnet[experiments]"'


def _module_help(name):
    """``HELP`` of ``optnet.experiments.<name>``, read from its source without importing it."""
    spec = importlib.util.find_spec(f"{__package__}.{name}")
    if spec is None or spec.origin is None:
        return "(not available in this installation)"
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=spec.origin)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "HELP" for t in node.targets):
            try:
                return str(ast.literal_eval(node.value))
            except ValueError:
                break
    return ""


def _load(name):
    """Import an experiment module, turning a missing optional dependency into a clear error."""
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ModuleNotFoundError as exc:
        missing = exc.name or "a dependency"
        if missing.startswith(__package__ or "optnet.experiments"):
            raise
        raise SystemExit(
            f"optnet {name}: the optional dependency {missing!r} is missing; install the "
            f"experiments' dependencies with: {_INSTALL_HINT} (torch itself: "
            f'pip install "optnet[torch]", jax: pip install "optnet[jax]").') from exc


def build_parser(load_modules=()):
    """The argument parser, with the options of the modules in ``load_modules`` added."""
    parser = argparse.ArgumentParser(
        prog="optnet",
        description="Run the OptNet paper's experiments (Amos & Kolter, ICML 2017).")
    sub = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    sub.required = True
    subparsers = {}
    for name in EXPERIMENTS:
        text = _module_help(name)
        subparsers[name] = sub.add_parser(name, help=text, description=text)
    for name in load_modules:
        _load(name).add_arguments(subparsers[name])
    return parser


def run_experiment(argv):
    """Parse ``argv`` and run the chosen experiment.

    Returns
    -------
    dict
        What the experiment's ``run`` returned (its headline numbers).
    """
    argv = list(argv)
    # The experiment is the first argument that is not an option: only that module is
    # imported (and only its options added), so the others' dependencies are not needed.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    load = [chosen] if chosen in EXPERIMENTS else []
    parser = build_parser(load)
    args = parser.parse_args(argv)
    return _load(args.experiment).run(args)


def main(argv=None):
    """Entry point of the ``optnet`` command: parse ``argv`` (default ``sys.argv[1:]``) and run.

    Returns
    -------
    int
        The exit status, 0 (errors exit through ``SystemExit``). Use
        :func:`run_experiment` to get the experiment's result dict.
    """
    run_experiment(sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
