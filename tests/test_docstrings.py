"""Every public name has a proper Google-style docstring (the API reference is built from them).

The public surface is every name in the ``__all__`` of ``trioqio``, ``trioqio.abc``,
``trioqio.trace``, ``trioqio.testing`` and ``trioqio.migration`` (when a module has no
``__all__`` only its module docstring is checked), plus, for each public class, every
public method, property and data attribute that a trioqio class defines (members
inherited from ``object``, ``Exception`` or Trio are Trio's business). An object reached
through several public names is checked once.

Docstrings are split into sections the way ``sphinx.ext.napoleon`` does: a section header
is an unindented line such as ``Args:`` whose next non-blank line is indented deeper; the
section runs until the next unindented line; its fields are its least-indented lines,
``name (type): text``. ``Example::`` (a paragraph ending in ``::`` followed by an indented
literal block) also counts as the example section.

Rules:

* **Summary**: the first line is a non-empty sentence ending in ``.``, followed by a blank
  line (or nothing).
* **Functions and methods** (including classmethods and staticmethods):

  - ``Args:`` names every parameter of the signature except ``self``/``cls``, and nothing
    else (``*args`` and ``**kwargs`` written as such, a leading backslash is allowed);
  - ``Returns:`` (or ``Yields:``) when the return annotation is not ``None``;
  - ``Raises:`` listing real exception classes (each entry must resolve to a subclass of
    ``BaseException`` through builtins, ``trio``, ``trioqio``, ``ssl`` or a dotted import
    path). A function that raises nothing of its own says so instead with a paragraph
    starting ``Raises nothing`` (e.g. "Raises nothing: a closed channel is a no-op.");
  - an example: ``Example::`` with an indented block, or an ``Example:``/``Examples:``
    section holding a code block (``>>>`` lines, ``.. code-block::`` or a ``::`` block).
    A **method** may instead rely on its class: it is covered when the example of a
    public class through which it is reachable calls it (``.name`` appears in the code).
  - a **method with no docstring of its own** that overrides a documented method of a
    ``trio.abc`` class or of ``trioqio.abc.Channel`` with the same parameters keeps that
    method's contract: it inherits the docstring (as autodoc shows it) and passes.
* **Properties**: a summary line (their type is their annotation; no sections needed).
  napoleon parses a property's, attribute's or data's first line as ``type: text`` when it
  holds a single colon outside inline code and roles, so that line must not.
* **Classes**: summary, an example, and every constructor parameter (when ``__init__`` is
  defined by trioqio) named in ``Args:`` or ``Attributes:``. Every public data attribute
  the class defines (attrs fields, slots, class attributes, enum members) is named in its
  ``Attributes:``/``Args:`` section or has a ``#:`` doc comment in the class body.
* **Exceptions**: summary, a sentence saying when they are raised (the docstring uses the
  word "raise"/"raised"), and an example. Constructor arguments are not required.
* **Type aliases and constants** (``SocketAddress``, ``ClientHandler``, ``DATA_CHUNKS``,
  ``__version__``) cannot carry a docstring: their home is the ``#:`` doc comment above
  their assignment in the module that defines them (found by following the ``from ...
  import`` chain), which autodoc reads; a string literal right after the assignment is
  accepted too. It needs a summary and an example.
* **Modules** in ``__all__`` (``trioqio.abc``, ``trioqio.trace``): summary and example.

The single failure message lists every offender with its file and what is missing.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import enum
import importlib
import importlib.util
import inspect
import re
import ssl
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import trio

import trioqio

PUBLIC_MODULES = (
    "trioqio",
    "trioqio.abc",
    "trioqio.trace",
    "trioqio.testing",
    "trioqio.migration",
)

_ARGS = {
    "args",
    "arguments",
    "parameters",
    "params",
    "keyword args",
    "keyword arguments",
    "other parameters",
}
_OTHER = {
    "attention",
    "caution",
    "danger",
    "error",
    "hint",
    "important",
    "methods",
    "note",
    "notes",
    "receive",
    "receives",
    "references",
    "see also",
    "tip",
    "todo",
    "warning",
    "warnings",
    "warn",
    "warns",
}
_KINDS: dict[str, str] = {
    **dict.fromkeys(_ARGS, "args"),
    **dict.fromkeys(_OTHER, "other"),
    "attributes": "attributes",
    "return": "returns",
    "returns": "returns",
    "yield": "yields",
    "yields": "yields",
    "raise": "raises",
    "raises": "raises",
    "example": "example",
    "examples": "example",
}
_HEADER = re.compile(r"^(?:\s|\w)+:\s*$")
_LITERAL_HEADER = re.compile(r"^Examples?::\s*$")
_TYPED_NAME = re.compile(r"(.+?)\(\s*(.*[^\s]+)\s*\)")


# -- parsing (napoleon's rules) ----------------------------------------------------------


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _next_nonblank(lines: list[str], start: int) -> str | None:
    return next((line for line in lines[start:] if line.strip()), None)


@attrs.frozen
class Parsed:
    """A docstring split into its summary, free paragraphs and napoleon sections."""

    summary_line: str
    summary_ok: bool
    paragraphs: list[str]
    sections: dict[str, list[list[str]]]

    def fields(self, kind: str) -> list[str]:
        """Field names (the text before the colon, type removed) of every ``kind`` section."""
        names: list[str] = []
        for body in self.sections.get(kind, []):
            nonblank = [line for line in body if line.strip()]
            if not nonblank:
                continue
            base = min(_indent(line) for line in nonblank)
            for line in nonblank:
                if _indent(line) != base:
                    continue
                head = _split_colon(line.strip())
                match = _TYPED_NAME.fullmatch(head.strip())
                if match:
                    head = match.group(1)
                names.extend(part.strip() for part in head.split(",") if part.strip())
        return names

    def has(self, kind: str) -> bool:
        """Whether a non-empty ``kind`` section exists."""
        return any(any(line.strip() for line in body) for body in self.sections.get(kind, []))

    def example_code(self) -> list[str]:
        """The code lines of every example section that holds a code block."""
        code: list[str] = []
        for body in self.sections.get("example_literal", []):
            code.extend(body)
        for body in self.sections.get("example", []):
            code.extend(_code_blocks(body))
        return code


def _split_colon(text: str) -> str:
    # The field name ends at the first colon outside backquotes (``:class:`X``` aside).
    depth = False
    for i, char in enumerate(text):
        if char == "`":
            depth = not depth
        elif char == ":" and not depth and not text[i + 1 : i + 2].isalpha():
            return text[:i]
    return text


def _code_blocks(body: list[str]) -> list[str]:
    """Lines of ``>>>`` examples, ``.. code-block::`` bodies and ``::`` literal blocks."""
    code: list[str] = []
    i = 0
    while i < len(body):
        line = body[i]
        stripped = line.strip()
        if stripped.startswith(">>>"):
            code.append(stripped[3:])
        elif stripped.endswith("::") or stripped.startswith((".. code-block::", ".. code::")):
            level = _indent(line)
            j = i + 1
            block: list[str] = []
            while j < len(body) and (not body[j].strip() or _indent(body[j]) > level):
                block.append(body[j])
                j += 1
            if any(part.strip() for part in block):
                code.extend(block)
                i = j
                continue
        i += 1
    return code


def parse(doc: str | None) -> Parsed | None:
    """Split ``doc`` as napoleon would; None when there is no docstring at all."""
    if not doc or not doc.strip():
        return None
    lines = inspect.cleandoc(doc).splitlines()
    summary = lines[0].strip()
    summary_ok = (
        bool(summary)
        and summary.endswith(".")
        and not _HEADER.match(summary)
        and (len(lines) == 1 or not lines[1].strip())
    )
    sections: dict[str, list[list[str]]] = {}
    paragraphs: list[str] = []
    i = 1
    while i < len(lines):
        line = lines[i]
        following = _next_nonblank(lines, i + 1)
        deeper = following is not None and _indent(following) > _indent(line)
        kind: str | None = None
        if _indent(line) == 0 and deeper:
            name = line.strip().rstrip(":").lower()
            if _LITERAL_HEADER.match(line):
                kind = "example_literal"
            elif _HEADER.match(line) and name in _KINDS:
                kind = _KINDS[name]
        if kind is None:
            if line.strip():
                paragraphs.append(line.strip())
            i += 1
            continue
        body: list[str] = []
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > 0):
            body.append(lines[i])
            i += 1
        sections.setdefault(kind, []).append(body)
    return Parsed(summary, summary_ok, paragraphs, sections)


# -- resolution helpers ------------------------------------------------------------------


def _resolve_exception(text: str) -> bool:
    name = re.sub(r":\w+:", "", text).strip().strip("`").lstrip("~").strip()
    if name in {"ExceptionGroup", "BaseExceptionGroup"}:
        return True
    candidates: list[Any] = []
    if "." not in name:
        for namespace in (builtins, trio, trioqio, ssl):
            candidates.append(getattr(namespace, name, None))
    else:
        module_name, _, attr = name.rpartition(".")
        for prefix in (module_name, f"trioqio.{module_name}"):
            try:
                module = importlib.import_module(prefix)
            except ImportError:
                continue
            candidates.append(getattr(module, attr, None))
    return any(isinstance(c, type) and issubclass(c, BaseException) for c in candidates)


def _raises_entries(parsed: Parsed) -> list[str]:
    entries: list[str] = []
    for field in parsed.fields("raises"):
        entries.extend(part for part in re.split(r"\s+or\s+|\|", field) if part.strip())
    return entries


def _signature_names(func: Callable[..., Any], *, drop_first: bool) -> list[str]:
    signature = inspect.signature(func, follow_wrapped=True)
    params = list(signature.parameters.values())
    if drop_first and params:
        params = params[1:]
    names: list[str] = []
    for param in params:
        if param.kind is param.VAR_POSITIONAL:
            names.append(f"*{param.name}")
        elif param.kind is param.VAR_KEYWORD:
            names.append(f"**{param.name}")
        else:
            names.append(param.name)
    return names


def _returns_none(func: Callable[..., Any]) -> bool:
    annotation = inspect.signature(func, follow_wrapped=True).return_annotation
    return annotation in (None, "None", "NoReturn", inspect.Signature.empty)


def _location(obj: Any) -> str:
    try:
        target = inspect.unwrap(obj)
        path = Path(inspect.getsourcefile(target) or "?")
        line = inspect.getsourcelines(target)[1]
    except (TypeError, OSError):
        return "?"
    with contextlib.suppress(ValueError):
        path = path.relative_to(Path(trioqio.__file__).parent.parent)
    return f"{path}:{line}"


def _doc_comment(module_name: str, name: str, _depth: int = 0) -> tuple[str | None, str]:
    """The ``#:`` comment (or following string) of ``name``'s assignment, and where it is.

    Follows ``from .x import name`` chains to the module that assigns the name.
    """
    spec = importlib.util.find_spec(module_name)
    assert spec is not None
    assert spec.origin is not None
    source = Path(spec.origin).read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    for index, node in enumerate(tree.body):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            where = f"{Path(spec.origin).relative_to(Path(trioqio.__file__).parent.parent)}"
            return _comment_for(lines, tree.body, index), f"{where}:{node.lineno}"
        if isinstance(node, ast.ImportFrom) and _depth < 10:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    relative = "." * node.level + (node.module or "")
                    target = importlib.util.resolve_name(relative, spec.parent)
                    return _doc_comment(target, alias.name, _depth + 1)
    return None, module_name


def _comment_for(lines: list[str], body: list[ast.stmt], index: int) -> str | None:
    node = body[index]
    comment: list[str] = []
    row = node.lineno - 2
    while row >= 0 and lines[row].strip().startswith("#:"):
        comment.insert(0, lines[row].strip()[2:].removeprefix(" "))
        row -= 1
    if comment:
        return "\n".join(comment)
    inline = lines[node.lineno - 1].partition("#:")[2]
    if inline.strip():
        return inline.strip()
    after = body[index + 1] if index + 1 < len(body) else None
    if (
        isinstance(after, ast.Expr)
        and isinstance(after.value, ast.Constant)
        and isinstance(after.value.value, str)
    ):
        return after.value.value
    return None


def _class_attribute_comment(cls: type, name: str) -> str | None:
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return None
    source = inspect.cleandoc("\n" + source) if source.startswith(" ") else source
    tree = ast.parse(source)
    classdef = tree.body[0]
    if not isinstance(classdef, ast.ClassDef):
        return None
    lines = source.splitlines()
    for index, node in enumerate(classdef.body):
        target: ast.expr | None = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign):
            target = node.target
        if isinstance(target, ast.Name) and target.id == name:
            return _comment_for(lines, classdef.body, index)
    return None


# -- the checks --------------------------------------------------------------------------


def check_summary(parsed: Parsed | None) -> list[str]:
    """Problems with the presence and first line of a docstring."""
    if parsed is None:
        return ["no docstring"]
    if not parsed.summary_ok:
        return [
            f"summary must be a sentence ending in '.', then a blank line: {parsed.summary_line!r}"
        ]
    return []


def check_example(parsed: Parsed) -> list[str]:
    """Problems with the example section."""
    if not parsed.example_code():
        return ["no Example:: section with a code block"]
    return []


def check_function(
    func: Callable[..., Any], *, drop_first: bool, example_covered: bool = False
) -> list[str]:
    """Problems with a function's or method's docstring."""
    parsed = parse(func.__doc__)
    problems = check_summary(parsed)
    if parsed is None:
        return problems
    documented = [name.lstrip("\\") for name in parsed.fields("args")]
    expected = _signature_names(func, drop_first=drop_first)
    missing = [name for name in expected if name not in documented]
    if missing:
        problems.append(f"Args missing: {', '.join(missing)}")
    extra = [name for name in documented if name not in expected]
    if extra:
        problems.append(f"Args names no parameter: {', '.join(extra)}")
    if not _returns_none(func) and not (parsed.has("returns") or parsed.has("yields")):
        problems.append("no Returns:/Yields: section (return annotation is not None)")
    says_nothing = any(p.lower().startswith("raises nothing") for p in parsed.paragraphs)
    if not parsed.has("raises") and not says_nothing:
        problems.append("no Raises: section (or a 'Raises nothing' paragraph)")
    bad = [entry for entry in _raises_entries(parsed) if not _resolve_exception(entry)]
    if bad:
        problems.append(f"Raises entries that are not exception classes: {', '.join(bad)}")
    if not example_covered:
        problems.extend(check_example(parsed))
    return problems


def check_exception(cls: type) -> list[str]:
    """Problems with an exception class's docstring."""
    parsed = parse(cls.__doc__)
    problems = check_summary(parsed)
    if parsed is None:
        return problems
    if "raise" not in inspect.cleandoc(cls.__doc__ or "").lower():
        problems.append("does not say when it is raised (no 'raise'/'raised')")
    problems.extend(check_example(parsed))
    return problems


def _defines_init(cls: type) -> bool:
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            # Constructors inherited from builtins, Trio or the stdlib are not ours to document.
            return klass.__module__.split(".")[0] not in {"builtins", "trio", "abc", "enum"}
    return False


def check_class(cls: type[object]) -> list[str]:
    """Problems with a class's own docstring (not its members)."""
    if BaseException in cls.__mro__:
        return check_exception(cls)
    parsed = parse(cls.__doc__ if "__doc__" in vars(cls) else None)
    problems = check_summary(parsed)
    if parsed is None:
        return problems
    problems.extend(check_example(parsed))
    documented = {name.lstrip("\\") for name in parsed.fields("args") + parsed.fields("attributes")}
    if _defines_init(cls) and not issubclass(cls, enum.Enum):
        names = _signature_names(cls.__init__, drop_first=True)
        missing = [name for name in names if name not in documented]
        if missing:
            problems.append(f"constructor Args missing: {', '.join(missing)}")
    return problems


# napoleon reads the first line of an attribute, property or data docstring as
# "type: description" when it holds a single colon outside code and roles.
_XREF_OR_CODE = re.compile(r"(:(?:[a-zA-Z0-9]+[\-_+:.])*[a-zA-Z0-9]+:`.+?`)|(``.+?``)|(`.+?`)")
_SINGLE_COLON = re.compile(r"(?<!:):(?!:)")


def check_attribute_line(text: str | None) -> list[str]:
    """Problems napoleon's inline-attribute parsing would cause (a first line "type: text")."""
    if not text or not text.strip():
        return []
    first = inspect.cleandoc(text).splitlines()[0]
    match = _SINGLE_COLON.search(_XREF_OR_CODE.sub(lambda m: "x" * len(m.group(0)), first))
    if match and first[match.end() :].strip():
        head = first[: match.start()].strip()
        return [f"napoleon would show {head!r} as the type: avoid ':' in the first line"]
    return []


def _join_first_paragraph(text: str) -> str:
    # A ``#:`` comment is prose wrapped at the line length; its first paragraph is the summary.
    lines = inspect.cleandoc(text).splitlines()
    end = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))
    return "\n".join([" ".join(line.strip() for line in lines[:end]), *lines[end:]])


def check_data(text: str | None) -> list[str]:
    """Problems with a ``#:`` doc comment of a type alias or constant."""
    if text is None:
        return ["no '#:' doc comment on its assignment"]
    parsed = parse(_join_first_paragraph(text))
    problems = check_summary(parsed) + check_attribute_line(text)
    if parsed is not None:
        problems.extend(check_example(parsed))
    return problems


@attrs.frozen
class Member:
    """One public member of a public class, with where it is defined."""

    public_name: str
    owner: type
    name: str
    raw: Any


def _trioqio_classes(cls: type) -> Iterator[type]:
    for klass in cls.__mro__:
        if klass.__module__.startswith("trioqio"):
            yield klass


def _members(public_name: str, cls: type) -> Iterator[Member]:
    seen: set[str] = set()
    for klass in _trioqio_classes(cls):
        for name, raw in vars(klass).items():
            if name.startswith("_") or name in seen:
                continue
            seen.add(name)
            yield Member(f"{public_name}.{name}", klass, name, raw)


def _example_mentions(classes: list[type], name: str) -> bool:
    pattern = re.compile(rf"\.{re.escape(name)}\b")
    for cls in classes:
        parsed = parse(cls.__doc__ if "__doc__" in vars(cls) else None)
        if parsed is not None and any(pattern.search(line) for line in parsed.example_code()):
            return True
    return False


def is_class(obj: object) -> bool:
    """A real class, not a parametrised alias.

    On Python 3.10 ``isinstance(Callable[[X], Y], type)`` is True.
    """
    return isinstance(obj, type) and not isinstance(obj, types.GenericAlias)


def public_surface() -> Iterator[tuple[str, Any]]:
    """Every (public name, object) pair named in the public modules' ``__all__``."""
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        yield module_name, module
        for name in getattr(module, "__all__", ()):
            yield f"{module_name}.{name}", getattr(module, name)


def collect_problems() -> tuple[dict[str, list[str]], int]:
    """Check the whole public surface; map "name (file:line)" to its problems."""
    problems: dict[str, list[str]] = {}
    checked: set[int] = set()
    count = 0
    surface = list(public_surface())
    public_classes = [obj for _, obj in surface if is_class(obj)]
    # Which public classes expose each member function (for example coverage).
    exposers: dict[int, list[type]] = {}
    for cls in public_classes:
        for member in _members(cls.__name__, cls):
            exposers.setdefault(id(member.raw), []).append(cls)

    def report(name: str, obj: Any, found: list[str], where: str | None = None) -> None:
        nonlocal count
        count += 1
        if found:
            problems[f"{name} ({where or _location(obj)})"] = found

    for public_name, obj in surface:
        if id(obj) in checked and not isinstance(obj, (int, str)):
            continue
        checked.add(id(obj))
        module_name, _, short = public_name.rpartition(".")
        if isinstance(obj, types.ModuleType):
            parsed = parse(obj.__doc__)
            found = check_summary(parsed)
            if parsed is not None and public_name not in PUBLIC_MODULES:
                found.extend(check_example(parsed))
            report(public_name, obj, found, obj.__name__)
        elif is_class(obj):
            report(public_name, obj, check_class(obj))
            for member in _members(public_name, obj):
                # Functions are shared by subclasses; a data value (an enum member, a
                # default) may be shared by unrelated attributes, so it is keyed by owner.
                routine = isinstance(member.raw, (property, classmethod, staticmethod))
                routine = routine or isinstance(member.raw, types.FunctionType)
                key = id(member.raw) if routine else hash((member.owner, member.name))
                if key in checked:
                    continue
                checked.add(key)
                report(member.public_name, *_check_member(member, exposers))
        elif isinstance(obj, types.FunctionType):
            report(public_name, obj, check_function(obj, drop_first=False))
        else:
            text, where = _doc_comment(module_name or "trioqio", short)
            report(public_name, obj, check_data(text), where)
    return problems, count


#: The classes whose methods' contracts an override may inherit with their docstrings.
_CONTRACTS = (
    trio.abc.AsyncResource,
    trio.abc.SendStream,
    trio.abc.ReceiveStream,
    trio.abc.HalfCloseableStream,
    trio.abc.Stream,
    trio.abc.Listener,
    trioqio.abc.Channel,
)


def inherits_contract(owner: type, name: str, func: Callable[..., Any]) -> bool:
    """Whether ``func`` (no docstring of its own) overrides a documented contract method."""
    if func.__doc__ is not None:
        return False
    for base in owner.__mro__[1:]:
        if base in _CONTRACTS and isinstance(vars(base).get(name), types.FunctionType):
            contract = vars(base)[name]
            same = list(inspect.signature(func).parameters) == list(
                inspect.signature(contract).parameters
            )
            return same and bool(contract.__doc__)
    return False


def _check_member(member: Member, exposers: dict[int, list[type]]) -> tuple[Any, list[str]]:
    raw = member.raw
    if isinstance(raw, types.FunctionType) and inherits_contract(member.owner, member.name, raw):
        return raw, []
    covered = _example_mentions(exposers.get(id(raw), [member.owner]), member.name)
    if isinstance(raw, property):
        return raw.fget, check_summary(parse(raw.__doc__)) + check_attribute_line(raw.__doc__)
    if isinstance(raw, (classmethod, staticmethod)):
        func: Callable[..., Any] = raw.__func__  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        first = isinstance(raw, classmethod)
        return func, check_function(func, drop_first=first, example_covered=covered)
    if isinstance(raw, types.FunctionType):
        return raw, check_function(raw, drop_first=True, example_covered=covered)
    # Data: attrs fields and slots, class attributes, enum members.
    parsed = parse(member.owner.__doc__)
    documented: set[str] = set()
    if parsed is not None:
        documented = {n.lstrip("\\") for n in parsed.fields("args") + parsed.fields("attributes")}
    if member.name in documented:
        return member.owner, []
    comment = _class_attribute_comment(member.owner, member.name)
    if comment is not None:
        found = check_summary(parse(_join_first_paragraph(comment)))
        return member.owner, found + check_attribute_line(comment)
    return member.owner, [
        f"data attribute not named in {member.owner.__name__}'s Attributes: (or a '#:' comment)"
    ]


def test_public_names_have_docstrings() -> None:
    """Every public name has a summary, Args, Returns, Raises and an example as they apply."""
    problems, count = collect_problems()
    assert count > 100, f"only {count} public names found; is the surface walk broken?"
    lines = [f"{name}: {'; '.join(found)}" for name, found in sorted(problems.items())]
    assert not problems, (
        f"{len(problems)} of {count} public names lack a proper docstring:\n" + "\n".join(lines)
    )


# -- the checker itself catches what it claims to ------------------------------------------


def _good(a: int, *rest: int, flag: bool = False, **extra: int) -> int:
    """Add things.

    Args:
        a (int): first.
        *rest: more.
        flag: a flag.
        \\**extra: even more.

    Returns:
        The sum.

    Raises:
        ValueError: never really.
        trio.ClosedResourceError: sometimes.

    Example::

        _good(1)
    """
    return a


def _bad(a: int, b: int) -> int:
    """no period here
    Args:
        a: first.
        c: not a parameter.

    Raises:
        NotAnError: whatever.
    """
    return a + b


def _quiet() -> None:
    """Do nothing.

    Raises nothing: there is nothing to fail.

    Examples:
        >>> _quiet()
    """


def test_checker_accepts_a_complete_docstring() -> None:
    assert check_function(_good, drop_first=False) == []
    assert check_function(_quiet, drop_first=False) == []


def test_checker_reports_each_missing_part() -> None:
    found = "\n".join(check_function(_bad, drop_first=False))
    assert "summary must be a sentence" in found
    # The sections are still checked after a bad summary line.
    assert "Args missing: b" in found
    assert "Args names no parameter: c" in found
    assert "no Returns:" in found
    assert "not exception classes: NotAnError" in found
    assert "no Example::" in found
    assert check_function(_bare, drop_first=False) == ["no docstring"]


def _bare() -> None:
    pass


def test_checker_requires_raises_and_a_code_block() -> None:
    def plain(x: int) -> None:
        """Plain.

        Args:
            x: thing.

        Example:
            plain(1) written as prose is not a code block.
        """

    assert check_function(plain, drop_first=False) == [
        "no Raises: section (or a 'Raises nothing' paragraph)",
        "no Example:: section with a code block",
    ]


def test_checker_checks_classes_and_data() -> None:
    @attrs.frozen
    class Point:
        """A point.

        Attributes:
            x: across.

        Example::

            Point(x=1, y=2)
        """

        x: int
        y: int

    assert check_class(Point) == ["constructor Args missing: y"]
    assert check_data(None) == ["no '#:' doc comment on its assignment"]
    assert check_data("An alias.\n\nExample::\n\n    x: Alias\n") == []
    assert check_exception(ValueError) != []


def test_checker_catches_napoleon_inline_types() -> None:
    assert check_attribute_line("The cursor, where the next read happens.") == []
    assert check_attribute_line("The :class:`ssl.SSLObject` and ``a: b`` code.") == []
    assert check_attribute_line("The cursor: where the next read happens.") == [
        "napoleon would show 'The cursor' as the type: avoid ':' in the first line"
    ]


def test_doc_comments_are_found_through_imports() -> None:
    # trioqio/__init__.py imports SocketAddress; the comment sits on the assignment.
    text, where = _doc_comment("trioqio", "SocketAddress")
    assert where.startswith(str(Path("trioqio") / "_address.py"))
    assert text is not None


def test_an_override_without_a_docstring_inherits_the_contract() -> None:
    class Quiet(trioqio.abc.Channel):
        async def send_all(self, data: Any) -> None:
            pass

        async def send_eof(self, extra: int = 0) -> None:  # a changed signature
            pass

        def other(self) -> None:
            pass

    assert inherits_contract(Quiet, "send_all", Quiet.send_all)
    assert not inherits_contract(Quiet, "send_eof", Quiet.send_eof)
    assert not inherits_contract(Quiet, "other", Quiet.other)
