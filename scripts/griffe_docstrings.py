"""A Griffe extension for the docs site: numpydoc's reST markup as Markdown.

The docstrings follow numpydoc, whose inline markup is reStructuredText; mkdocstrings
renders them as Markdown. Before they are parsed, this extension rewrites

- ``:func:`name```, ``:class:`name``` and the other Sphinx roles into a cross-reference
  (an *optional* one: a name that the site does not document, such as a private helper,
  stays plain code instead of failing the strict build);
- a literal-block marker (a paragraph ending in ``::``) into a plain colon;
- ``(*batch, n)`` outside code into ``(\\*batch, n)``, so that the star is not emphasis.

Loaded by ``mkdocs.yml`` (``plugins.mkdocstrings.handlers.python.options.extensions``).
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|obj|exc|const):`~?([^`]+)`")
_ITEM = re.compile(r"^[\w*][\w*, ]* : ")   # a numpydoc item line: "name : type"
_STAR = re.compile(r"\(\*")


def _reference(match: re.Match, scope: str) -> str:
    name = match.group(1).strip()
    identifier = name if name.startswith("optnet") else f"{scope}.{name}"
    return (f'<autoref identifier="{identifier}" optional><code>{name}</code></autoref>')


def _escape_stars(line: str) -> str:
    if _ITEM.match(line):
        return line
    out, pos = [], 0
    for m in _STAR.finditer(line):
        inside_code = line[: m.start()].count("`") % 2 == 1
        out.append(line[pos:m.start()] + ("(*" if inside_code else "(\\*"))
        pos = m.end()
    out.append(line[pos:])
    return "".join(out)


def rewrite(text: str, scope: str) -> str:
    """The docstring ``text`` of an object in module ``scope``, rewritten (see above)."""
    lines = []
    for line in text.splitlines():
        stripped = line.rstrip()
        if stripped.strip() == "::":
            continue
        if stripped.endswith("::"):
            line = stripped[:-1]
        line = _ROLE.sub(lambda m: _reference(m, scope), line)
        lines.append(_escape_stars(line))
    return "\n".join(lines)


class NumpydocMarkup(griffe.Extension):
    """Rewrite every docstring of the loaded package (see the module docstring)."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.is_alias or obj.docstring is None:
            return
        module = obj if obj.is_module else obj.module
        obj.docstring.value = rewrite(obj.docstring.value, module.path)
