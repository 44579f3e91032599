"""Sphinx configuration for the trioqio guide and API reference (``nox -s docs``).

The guide pages are Markdown (MyST); the API reference is generated from the docstrings
(autodoc + napoleon, Google style). Every Python sample on a guide page is included from
``examples/`` with ``literalinclude``, and ``nox -s examples`` runs those scripts, so no
sample is left unexecuted: :func:`_no_inline_python` turns a Python block written inline
in a guide page into a build warning (an error under ``-W``). :func:`_check_api_coverage`
warns about a public name that the API reference does not document.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trioqio  # noqa: E402

project = "trioqio"
author = "trioqio developers"
copyright = "trioqio developers"
release = trioqio.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = "trioqio"
html_theme_options = {"description": "QEMU's io/ subsystem in structured concurrency"}

# -- autodoc ------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes:" as fields: no duplicate of a documented property
nitpicky = False


# -- generated includes -------------------------------------------------------------
# performance.md includes these: whatever plots and per-topic tables the last
# `nox -s bench` left (benchmarks/plot.py writes docs/perf/*.svg; each bench_*.py writes
# benchmarks/results/<topic>.md), so a new figure needs no edit here. The soak run
# (benchmarks/bench_soak.py: soak.svg, soak.md) goes to reliability.md instead.
GENERATED = ROOT / "docs" / "_generated"
RELIABILITY_TOPICS = {"soak"}
PERF_TITLES = {
    "offload": "Thread offload (Task vs to_thread)",
    "echo": "Echo round trips",
    "bulk_tcp": "Bulk TCP throughput",
    "accept": "Accepting connections",
    "migrate": "Migration throughput",
    "tls": "TLS bulk throughput",
}


def _unlink_results(text: str) -> str:
    """Keep the text of links between result files (not pages here), drop the link."""
    return re.sub(r"\[([^\]]*)\]\((?!https?:)[^)]*\.(?:md|json)\)", r"\1", text)


def _write_generated() -> None:
    GENERATED.mkdir(exist_ok=True)
    figures = sorted(
        p for p in (ROOT / "docs" / "perf").glob("*.svg") if p.stem not in RELIABILITY_TOPICS
    )
    lines = []
    for svg in figures:
        title = PERF_TITLES.get(svg.stem, svg.stem.replace("_", " "))
        lines += [
            f"```{{figure}} /perf/{svg.name}",
            f":alt: {title}: ratio of each implementation's median to the reference",
            ":width: 100%",
            "",
            f"{title} (`docs/perf/{svg.name}`)",
            "```",
            "",
        ]
    if not figures:
        lines.append("No plots yet: run `nox -s bench` (it runs `benchmarks/plot.py`).")
    (GENERATED / "perf-figures.md").write_text("\n".join(lines) + "\n")
    compare = ROOT / "benchmarks" / "results" / "compare.md"
    if compare.exists():
        text = _unlink_results(compare.read_text())
    else:
        text = "No side-by-side results yet: run `nox -s bench` (`benchmarks/compare.py`).\n"
    (GENERATED / "perf-compare.md").write_text(text)
    topics = sorted(
        p
        for p in (ROOT / "benchmarks" / "results").glob("*.md")
        if p.name != "compare.md" and p.stem not in RELIABILITY_TOPICS
    )
    lines = []
    for table in topics:
        text = _unlink_results(table.read_text())
        text = re.sub(r"^(#+) ", r"#\1 ", text, flags=re.M)  # one level below ours
        lines += [f"### `{table.stem}` (`benchmarks/results/{table.name}`)", "", text, ""]
    (GENERATED / "perf-topics.md").write_text("\n".join(lines) + "\n")
    _write_soak()


def _write_soak() -> None:
    """reliability.md's "Over time": soak.svg and soak.md, or a line saying how to make them."""
    svg = ROOT / "docs" / "perf" / "soak.svg"
    if svg.exists():
        lines = [
            "```{figure} /perf/soak.svg",
            ":alt: open fds, threads, RSS and traced memory against connect/close cycles "
            "and completed Tasks",
            ":width: 100%",
            "",
            "Resources over a long run (`docs/perf/soak.svg`)",
            "```",
        ]
    else:
        lines = ["No soak plot yet: run `nox -s bench` (it runs `benchmarks/bench_soak.py`)."]
    (GENERATED / "soak-figure.md").write_text("\n".join(lines) + "\n")
    table = ROOT / "benchmarks" / "results" / "soak.md"
    if table.exists():
        text = _unlink_results(table.read_text())  # its ### sits under "## Over time"
    else:
        text = "No soak figures yet: run `python benchmarks/bench_soak.py` (or `nox -s bench`).\n"
    (GENERATED / "soak-table.md").write_text(text)


_write_generated()

# -- checks -------------------------------------------------------------------------
_INLINE_PYTHON = re.compile(
    r"^[ \t]*(```|~~~|:::)[ \t]*"  # a fence, optionally a directive, then the language
    r"(\{(code(-block)?|sourcecode)\}[ \t]*)?"
    r"(python3?|py|pycon|ipython)[ \t]*$",
    re.M,
)


def _no_inline_python(app: Any, docname: str, source: list[str]) -> None:
    """Warn about a Python sample written inline in a guide page instead of included."""
    from sphinx.util import logging

    if docname.startswith("api/"):
        return
    for match in _INLINE_PYTHON.finditer(source[0]):
        line = source[0].count("\n", 0, match.start()) + 1
        logging.getLogger(__name__).warning(
            "inline Python sample: include it from examples/ with literalinclude so that "
            "`nox -s examples` runs it",
            location=(docname, line),
        )


def _public_names() -> set[str]:
    import trioqio.abc
    import trioqio.testing
    import trioqio.trace

    names = {f"trioqio.{n}" for n in trioqio.__all__ if n not in {"abc", "trace"}}
    names |= {f"trioqio.abc.{n}" for n in trioqio.abc.__all__}
    names |= {f"trioqio.trace.{n}" for n in trioqio.trace.__all__}
    names |= {f"trioqio.testing.{n}" for n in trioqio.testing.__all__}
    return names


def _check_api_coverage(app: Any, env: Any) -> None:
    """Warn about every public name the API reference does not document."""
    from sphinx.util import logging

    documented = set(env.get_domain("py").objects)
    for name in sorted(_public_names() - documented):
        logging.getLogger(__name__).warning(
            "public name %s is missing from the API reference (docs/api/)", name
        )


# -- type aliases and constants: their `#:` doc comment ---------------------------------
# autodoc reads `#:` comments only from the module named in the directive, and
# `trioqio.SocketAddress` is an import there; without this hook autodata shows the
# docstring of the value's type (``int``, ``types.UnionType``). Follow the
# ``from .x import name`` chain to the assignment and use its comment instead
# (tests/test_docstrings.py checks that every such name has one).


def _doc_comment(module_name: str, name: str, depth: int = 0) -> str | None:
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        return None
    source = Path(spec.origin).read_text()
    lines = source.splitlines()
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            row, comment = node.lineno - 2, []
            while row >= 0 and lines[row].strip().startswith("#:"):
                comment.insert(0, lines[row].strip()[2:].removeprefix(" "))
                row -= 1
            return "\n".join(comment) or None
        if isinstance(node, ast.ImportFrom) and depth < 10:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    relative = "." * node.level + (node.module or "")
                    target = importlib.util.resolve_name(relative, spec.parent)
                    return _doc_comment(target, alias.name, depth + 1)
    return None


def _data_doc_comment(
    app: Any, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    if what != "data":
        return
    module, _, short = name.rpartition(".")
    text = _doc_comment(module, short)
    if text is not None:
        lines[:] = [*inspect.cleandoc(text).splitlines(), ""]


def _defining_module(obj: Any, name: str, *default: Any) -> Any:
    # trioqio's public classes say ``__module__ == "trioqio"`` (as trio's do), which sends
    # autodoc's source analysis (member order "bysource") to trioqio/__init__.py, where
    # no member is written; answer with the module the class's own methods were written in.
    if (
        name == "__module__"
        and isinstance(obj, type)
        and obj.__dict__.get("__module__") == "trioqio"
    ):
        for value in vars(obj).values():
            module = getattr(getattr(value, "__func__", value), "__module__", None)
            if isinstance(module, str) and module.startswith("trioqio."):
                return module
    from sphinx.util.inspect import safe_getattr

    return safe_getattr(obj, name, *default)


def setup(app: Any) -> dict[str, Any]:
    app.add_autodoc_attrgetter(type, _defining_module)
    app.connect("source-read", _no_inline_python)
    app.connect("env-check-consistency", _check_api_coverage)
    # Before napoleon (priority 500), so the comment's sections are converted too.
    app.connect("autodoc-process-docstring", _data_doc_comment, priority=400)
    return {"parallel_read_safe": True}
