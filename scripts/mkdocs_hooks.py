"""MkDocs hooks of the docs site (``hooks:`` in ``mkdocs.yml``).

``on_page_markdown`` replaces the marker ``<!-- optnet-cli-help -->`` of a page with the
``--help`` text of the ``optnet`` command and of each of its subcommands, taken from the
parser itself (``optnet.experiments.cli.build_parser``), so that the command-line reference
cannot drift from the command; it replaces a line ``<!-- optnet-changelog ... -->`` with
``CHANGELOG.md`` of the repository root, so that the changelog is written once.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

MARKER = "<!-- optnet-cli-help -->"
CHANGELOG_MARKER = re.compile(r"^<!-- optnet-changelog\b.*?-->$", flags=re.M)
ROOT = Path(__file__).resolve().parent.parent


def _help(parser) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        parser.print_help()
    return out.getvalue().rstrip()


def cli_reference() -> str:
    """Markdown: one section per subcommand with its ``--help`` text."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from optnet.experiments import EXPERIMENTS
    from optnet.experiments.cli import build_parser

    parser = build_parser(EXPERIMENTS)
    subparsers = next(a for a in parser._actions if a.dest == "experiment").choices
    parts = ["## `optnet`", "", "```text", _help(parser), "```", ""]
    for name in EXPERIMENTS:
        parts += [f"## `optnet {name}`", "", "```text", _help(subparsers[name]), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, **kwargs) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, cli_reference())
    if CHANGELOG_MARKER.search(markdown):
        changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
        markdown = CHANGELOG_MARKER.sub(lambda _: changelog, markdown)
    return markdown
