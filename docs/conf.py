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
    lines: list[str] = []
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
    _write_trace_events()


def trace_events_table() -> str:
    """The event table of docs/api/trace.md, from ``trioqio.trace.EVENTS`` (declared once).

    tests/test_trace_events.py checks that the declaration covers every emit in the
    package; this table is written from it at every build, so it cannot fall behind.
    """
    # The private declaration (QEMU file and description with each event) is the table's
    # source; EVENTS is its public, name -> fields view.
    from trioqio._trace import _DECLARATIONS, _NOT_EMITTED  # pyright: ignore[reportPrivateUsage]

    lines: list[str] = []
    section = None
    for event in _DECLARATIONS:
        assert trioqio.trace.EVENTS[event.name] == event.fields
        if event.source != section:
            section = event.source
            lines += [
                "",
                f"### `io/{section}`",
                "",
                "| Event | Fields | When |",
                "| --- | --- | --- |",
            ]
        fields = ", ".join(f"`{field}`" for field in event.fields) or "none"
        what = event.what if event.qemu else f"trioqio's own (not in QEMU): {event.what}"
        lines.append(f"| `{event.name}` | {fields} | {what} |")
    lines += [
        "",
        "### QEMU events trioqio does not emit",
        "",
        "| QEMU event | Why |",
        "| --- | --- |",
    ]
    lines += [f"| `{name}` | {why} |" for name, why in _NOT_EMITTED]
    return "\n".join(lines) + "\n"


def _write_trace_events() -> None:
    (GENERATED / "trace-events.md").write_text(trace_events_table())


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


def _assignment(module_name: str, name: str, depth: int = 0) -> tuple[str, ast.stmt] | None:
    """The source of the module that assigns ``name`` and that assignment's node.

    Follows the ``from .x import name`` chain from ``module_name`` (at most ten steps).
    """
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    source = Path(spec.origin).read_text()
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return source, node
        if isinstance(node, ast.ImportFrom) and depth < 10:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    relative = "." * node.level + (node.module or "")
                    target = importlib.util.resolve_name(relative, spec.parent)
                    return _assignment(target, alias.name, depth + 1)
    return None


def _doc_comment(module_name: str, name: str) -> str | None:
    found = _assignment(module_name, name)
    if found is None:
        return None
    source, node = found
    lines = source.splitlines()
    row, comment = node.lineno - 2, list[str]()
    while row >= 0 and lines[row].strip().startswith("#:"):
        comment.insert(0, lines[row].strip()[2:].removeprefix(" "))
        row -= 1
    return "\n".join(comment) or None


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


# -- public names only, real signatures, constants' values ---------------------------------
# The reference shows what users import: a private base (a mixin or a shared engine
# behind public classes) is replaced by its own bases until public classes are reached,
# a cross-reference to ``trioqio._module.Name`` is pointed at the public name, and a
# signature shows values where autodoc_preserve_defaults would show source text that
# means nothing to a reader (attrs' ``attr_dict['x'].default``, a private constant's name).


def _public_objects() -> dict[int, str]:
    """id(object) -> its public dotted name, for every public class and function."""
    found: dict[int, str] = {}
    for name in sorted(_public_names()):
        module_name, _, attr = name.rpartition(".")
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
        obj = getattr(module, attr, None)
        if isinstance(obj, type) or callable(obj):
            found.setdefault(id(obj), name)
    return found


def _is_public_class(cls: type, public: dict[int, str]) -> bool:
    module = cls.__module__ or ""
    return not (module == "trioqio" or module.startswith("trioqio.")) or id(cls) in public


def _public_bases(cls: type, public: dict[int, str]) -> list[type]:
    bases: list[type] = []
    for base in cls.__bases__:
        for found in [base] if _is_public_class(base, public) else _public_bases(base, public):
            if found not in bases and found is not object:
                bases.append(found)
    return bases


def _process_bases(app: Any, name: str, obj: Any, options: Any, bases: list[Any]) -> None:
    """Show a class's public bases: a private base is replaced by its own bases."""
    if not isinstance(obj, type):
        return
    public = _public_objects()
    if all(not isinstance(b, type) or _is_public_class(b, public) for b in bases):
        return
    bases[:] = _public_bases(obj, public) or [object]


def _private_paths() -> dict[str, str]:
    """``trioqio._module.Name`` -> the public name, for every public object."""
    public = _public_objects()
    paths: dict[str, str] = {}
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("trioqio."):
            continue
        if not any(part.startswith("_") for part in module_name.split(".")):
            continue
        for attr, value in vars(module).items():
            name = public.get(id(value))
            if name is not None and not attr.startswith("__"):
                paths[f"{module_name}.{attr}"] = name
                qualname = getattr(value, "__qualname__", attr)
                paths.setdefault(f"{module_name}.{qualname}", name)
    return paths


def _public_references(app: Any, doctree: Any) -> None:
    """Point cross-references to ``trioqio._x.Name`` (type hints) at ``trioqio.Name``."""
    from sphinx.addnodes import pending_xref

    text_node: Any = importlib.import_module("docutils.nodes").Text  # docutils: untyped

    paths = _private_paths()
    for node in doctree.findall(pending_xref):
        target = node.get("reftarget", "")
        if node.get("refdomain") != "py" or target not in paths:
            continue
        node["reftarget"] = paths[target]
        for text in list(node.findall(text_node)):  # the shown text, where it is the path
            if text.astext() == target:
                text.parent.replace(text, text_node(paths[target]))


_ATTRS_DEFAULT = re.compile(r"attr_dict\['(\w+)'\]\.default")
_CONSTANT = re.compile(r"(?<=[=\[(, ])([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[A-Z]{2,}[A-Z0-9]*)(?=[,)\]])")


def _constant_source(module_name: str, name: str) -> str | None:
    """The source text of ``name = <literal>`` in ``module_name`` (following imports)."""
    found = _assignment(module_name, name)
    value = getattr(found[1], "value", None) if found is not None else None
    if found is None or value is None:
        return None
    try:
        ast.literal_eval(value)
    except ValueError:
        return None
    return ast.get_source_segment(found[0], value)


def _real_signature(
    app: Any,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None] | None:
    """Defaults as values: attrs' generated ``__init__`` and private constants' names."""
    if not signature:
        return None
    new = signature
    cls = obj if isinstance(obj, type) else None
    if cls is not None and hasattr(cls, "__attrs_attrs__"):
        import attrs

        fields = attrs.fields_dict(cls)

        def attrs_default(match: re.Match[str]) -> str:
            default = fields[match.group(1)].default
            factory = getattr(default, "factory", None)  # attrs.Factory(list), ...
            if callable(factory):
                return f"{getattr(factory, '__name__', 'factory')}()"
            return repr(default)

        new = _ATTRS_DEFAULT.sub(attrs_default, new)
    function = obj.__init__ if cls is not None else obj
    function = getattr(function, "__func__", function)
    # The module the function was written in (a public function's __module__ may say
    # "trioqio", where its defaults' names are not defined).
    module_name = getattr(function, "__globals__", {}).get("__name__") or ""
    if module_name.startswith("trioqio"):

        def constant(match: re.Match[str]) -> str:
            text = _constant_source(module_name, match.group(1))
            return match.group(1) if text is None else text

        new = _CONSTANT.sub(constant, new)
    return (new, return_annotation) if new != signature else None


def setup(app: Any) -> dict[str, Any]:
    app.add_autodoc_attrgetter(type, _defining_module)
    app.connect("autodoc-process-bases", _process_bases)
    app.connect("autodoc-process-signature", _real_signature)
    app.connect("doctree-read", _public_references)
    app.connect("source-read", _no_inline_python)
    app.connect("env-check-consistency", _check_api_coverage)
    # Before napoleon (priority 500), so the comment's sections are converted too.
    app.connect("autodoc-process-docstring", _data_doc_comment, priority=400)
    return {"parallel_read_safe": True}
