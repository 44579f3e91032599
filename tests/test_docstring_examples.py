"""The ``Example::`` blocks of the API reference are checked as far as a fragment can be.

The examples are fragments (they assume a nursery, a channel, a listener) and are not
run. They are walked over the same public surface as ``tests/test_docstrings.py`` (every
name in the public modules' ``__all__``, the members trioqio classes define, the ``#:``
doc comments of type aliases, constants and class attributes), and each code block of an
example section (``Example::``, ``>>>`` lines, ``::`` and ``.. code-block::`` blocks; a
``.. code-block:: console``/``sh``/``text`` block is a shell transcript and is skipped)
must:

1. **parse as Python** as the body of ``async def _example():`` (so top-level ``await``,
   ``async with`` and ``async for`` are legal);
2. **name real objects**: every ``trioqio.<dotted.name>`` chain resolves attribute by
   attribute (``trioqio.trace.subscribed``, ``trioqio.SocketChannel.connect``), every
   ``from trioqio.x import y`` imports, and a bare name that is public in the documented
   object's module (``Fault`` in ``trioqio.testing``'s examples) resolves there;
3. **use real attributes on the conventional variables**: ``var.name`` (called or not)
   must be an attribute of the class ``var`` stands for: a class attribute, an attrs
   field, an annotation, or a name in the class docstring's ``Args:``/``Attributes:``.
   ``var`` is bound, in this order, by ``except trioqio.X as var``, by a parameter
   annotated ``trioqio.X``, by ``var = trioqio.X(...)`` / ``async with trioqio.X(...) as
   var``, and otherwise by this mapping (see ``_CONVENTIONS``):

   ========================  ==================================================
   ``channel``               the documented class when it is a Channel, else
                             ``trioqio.abc.Channel``
   ``listener``              ``trioqio.NetListener``
   ``task``                  ``trioqio.Task``
   ``tls``                   ``trioqio.TLSChannel``
   ``ws``                    ``trioqio.WebsockChannel``
   ``buffer``                ``trioqio.BufferChannel``
   ``sink``                  ``trioqio.NullChannel``
   ``acl``                   ``trioqio.TLSAcl``
   ``stats``                 ``trioqio.ListenerStatistics``
   ``report``                ``trioqio.ShutdownReport``
   ``event``                 ``trioqio.trace.TraceEvent``
   ``slow``                  ``trioqio.testing.StallingChannel``
   ``proxy``                 ``trioqio.testing.FaultProxy``
   ========================  ==================================================

4. **call with arguments that fit**: a call of a resolved trioqio class or function, or of
   a method on a bound variable, binds its positional and keyword arguments to the
   signature (``inspect.Signature.bind``), so a misspelt keyword or a missing argument
   is caught. Calls with ``*args``/``**kwargs`` only have their named keywords checked.

The single failure message lists every offender with its file and line.
"""

from __future__ import annotations

import ast
import builtins as builtins_module
import importlib
import inspect
import os
import re
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
from test_docstrings import (
    PUBLIC_MODULES,
    Parsed,
    _class_attribute_comment,
    _doc_comment,
    _join_first_paragraph,
    _location,
    _members,
    is_class,
    parse,
    public_surface,
)

import trioqio

_CONVENTIONS: dict[str, str] = {
    "listener": "trioqio.NetListener",
    "task": "trioqio.Task",
    "tls": "trioqio.TLSChannel",
    "ws": "trioqio.WebsockChannel",
    "buffer": "trioqio.BufferChannel",
    "sink": "trioqio.NullChannel",
    "acl": "trioqio.TLSAcl",
    "stats": "trioqio.ListenerStatistics",
    "report": "trioqio.ShutdownReport",
    "event": "trioqio.trace.TraceEvent",
    "slow": "trioqio.testing.StallingChannel",
    "proxy": "trioqio.testing.FaultProxy",
}
_NOT_PYTHON = re.compile(r"\.\. code(?:-block)?::\s*(console|sh|shell|bash|text|none)\s*$")
_MISSING = object()


# -- collecting the examples -------------------------------------------------------------


@attrs.frozen
class Documented:
    """One docstring (or ``#:`` comment) of the public surface, with its context."""

    name: str
    where: str
    text: str
    cls: type | None  # the class whose docstring or member this is
    home: str  # the public module through which the name is reached


def documented() -> Iterator[Documented]:
    """Every docstring and doc comment of the public surface, each once."""
    seen: set[Any] = set()
    for public_name, obj in public_surface():
        home = public_name if public_name in PUBLIC_MODULES else public_name.rpartition(".")[0]
        if isinstance(obj, types.ModuleType | types.FunctionType):
            if id(obj) not in seen:
                seen.add(id(obj))
                where = obj.__name__ if isinstance(obj, types.ModuleType) else _location(obj)
                yield Documented(public_name, where, obj.__doc__ or "", None, home)
        elif is_class(obj):
            if id(obj) not in seen:
                seen.add(id(obj))
                text = obj.__doc__ if "__doc__" in vars(obj) else None
                yield Documented(public_name, _location(obj), text or "", obj, home)
            yield from _member_docs(public_name, obj, home, seen)
        else:
            module_name, _, short = public_name.rpartition(".")
            text, where = _doc_comment(module_name, short)
            if text is not None and where not in seen:
                seen.add(where)
                yield Documented(public_name, where, _join_first_paragraph(text), None, home)


def _member_docs(public_name: str, cls: type, home: str, seen: set[Any]) -> Iterator[Documented]:
    for member in _members(public_name, cls):
        raw = member.raw
        if isinstance(raw, classmethod | staticmethod):
            raw = raw.__func__
        if isinstance(raw, property | types.FunctionType):
            if id(raw) in seen:
                continue
            seen.add(id(raw))
            target = raw.fget if isinstance(raw, property) else raw
            yield Documented(
                member.public_name, _location(target), raw.__doc__ or "", member.owner, home
            )
        elif (member.owner, member.name) not in seen:
            seen.add((member.owner, member.name))
            comment = _class_attribute_comment(member.owner, member.name)
            if comment is not None:
                text = _join_first_paragraph(comment)
                yield Documented(
                    member.public_name, _location(member.owner), text, member.owner, home
                )


def snippets(parsed: Parsed) -> list[str]:
    """The Python code blocks of the example sections, each dedented."""
    blocks: list[list[str]] = list(parsed.sections.get("example_literal", []))
    for body in parsed.sections.get("example", []):
        blocks.extend(_blocks(body))
    found = [textwrap.dedent("\n".join(block)).strip("\n") for block in blocks]
    return [code for code in found if code.strip()]


def _blocks(body: list[str]) -> Iterator[list[str]]:
    """The ``>>>`` and literal blocks of one section body (shell transcripts left out)."""
    doctest: list[str] = []
    i = 0
    while i < len(body):
        line, stripped = body[i], body[i].strip()
        if stripped.startswith((">>>", "...")) and (doctest or stripped.startswith(">>>")):
            doctest.append(stripped[4:])
            i += 1
            continue
        if doctest:
            yield doctest
            doctest = []
        if stripped.endswith("::") or stripped.startswith((".. code-block::", ".. code::")):
            level = len(line) - len(line.lstrip())
            j = i + 1
            block: list[str] = []
            while j < len(body) and (
                not body[j].strip() or len(body[j]) - len(body[j].lstrip()) > level
            ):
                block.append(body[j])
                j += 1
            if not _NOT_PYTHON.match(stripped):
                yield block
            i = j
            continue
        i += 1
    if doctest:
        yield doctest


# -- resolving names ---------------------------------------------------------------------


def _dotted(node: ast.expr) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"]; None when the chain is not rooted at a plain name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *parts]
    return None


def _lookup(obj: Any, name: str) -> Any:
    """``getattr`` that also knows submodules and instance attributes a class documents."""
    value = getattr(obj, name, _MISSING)
    if value is not _MISSING:
        return value
    if isinstance(obj, types.ModuleType):
        try:
            return importlib.import_module(f"{obj.__name__}.{name}")
        except ImportError:
            return _MISSING
    if isinstance(obj, type) and _instance_attribute(obj, name):
        return None  # exists, but only on instances: nothing further to resolve
    return _MISSING


def _instance_attribute(cls: type, name: str) -> bool:
    if attrs.has(cls) and name in attrs.fields_dict(cls):
        return True
    for klass in cls.__mro__:
        if name in vars(klass).get("__annotations__", {}):
            return True
        parsed = parse(klass.__doc__ if "__doc__" in vars(klass) else None)
        if parsed is not None:
            documented = parsed.fields("args") + parsed.fields("attributes")
            if name in {field.lstrip("\\") for field in documented}:
                return True
    return False


def _conventional_channel(cls: type | None) -> type:
    if isinstance(cls, type) and issubclass(cls, trioqio.abc.Channel):
        return cls
    return trioqio.abc.Channel


class _Checker(ast.NodeVisitor):
    """Collects the problems of one example's syntax tree."""

    def __init__(self, item: Documented) -> None:
        self.problems: list[str] = []
        home = importlib.import_module(item.home)
        self.scope: dict[str, Any] = {"trioqio": trioqio}
        self.public = {name: getattr(home, name) for name in getattr(home, "__all__", ())}
        self.variables: dict[str, type] = {"channel": _conventional_channel(item.cls)}
        for var, dotted in _CONVENTIONS.items():
            self.variables[var] = self.resolve_path(dotted.split("."), report=False)

    def prepare(self, tree: ast.AST) -> None:
        """Bind names before checking: imports, explicit types and locally assigned names."""
        assigned: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                assigned.add(node.id)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                assigned.add(node.name)
            elif isinstance(node, ast.arg):
                assigned.add(node.arg)
                self.bind(node.arg, node.annotation)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                self.bind(node.name, node.type)
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                self.bind_call(node.targets[0], node.value)
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                self.bind_call(node.optional_vars, node.context_expr)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                self.imports(node)
        for name in assigned - set(self.scope):
            self.public.pop(name, None)

    def imports(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "trioqio":
                    self.resolve_path(alias.name.split("."))
            return
        if not node.module or node.module.split(".")[0] != "trioqio":
            return
        module = self.resolve_path(node.module.split("."))
        for alias in node.names:
            value = _MISSING if module is _MISSING else _lookup(module, alias.name)
            if value is _MISSING:
                self.problems.append(f"cannot import {alias.name} from {node.module}")
            else:
                self.scope[alias.asname or alias.name] = value

    def bind(self, name: str, annotation: ast.expr | None) -> None:
        if isinstance(annotation, ast.Subscript):
            annotation = annotation.value
        if annotation is None:
            return
        parts = _dotted(annotation)
        value = self.resolve_path(parts, report=False) if parts else None
        if isinstance(value, type):
            self.variables[name] = value

    def bind_call(self, target: ast.expr, value: ast.expr) -> None:
        if isinstance(value, ast.Await):
            value = value.value
        if isinstance(target, ast.Name) and isinstance(value, ast.Call):
            self.bind(target.id, value.func)

    def resolve_path(self, parts: list[str], *, report: bool = True) -> Any:
        """The object a dotted name rooted at trioqio or a public bare name stands for."""
        root = parts[0]
        if root in self.scope:
            obj = self.scope[root]
        elif root in self.public:
            obj = self.public[root]
        else:
            return None  # not ours: a local, a builtin, another library
        for depth, part in enumerate(parts[1:], start=2):
            if obj is None:
                return None
            obj = _lookup(obj, part)
            if obj is _MISSING:
                if report:
                    self.problems.append(f"{'.'.join(parts[:depth])} does not exist")
                return _MISSING
        return obj

    def visit_Attribute(self, node: ast.Attribute) -> None:
        parts = _dotted(node)
        if parts is not None and isinstance(node.ctx, ast.Load):
            # Check the whole chain once, from its outermost node.
            if parts[0] in self.variables and parts[0] not in self.scope:
                cls = self.variables[parts[0]]
                if _lookup(cls, parts[1]) is _MISSING:
                    self.problems.append(
                        f"{parts[0]}.{parts[1]}: {cls.__name__} has no {parts[1]!r}"
                    )
            else:
                self.resolve_path(parts)
            return
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        parts = _dotted(node.func)
        if parts is None:
            return
        target: Any = None
        drop_self = False
        if parts[0] in self.variables and len(parts) == 2 and parts[0] not in self.scope:
            cls = self.variables[parts[0]]
            raw = inspect.getattr_static(cls, parts[1], None)
            target = getattr(cls, parts[1], None)
            drop_self = isinstance(raw, types.FunctionType)
        elif parts[0] in self.scope or parts[0] in self.public:
            target = self.resolve_path(parts, report=False)
        if target is None or target is _MISSING or not callable(target):
            return
        self.check_arguments(".".join(parts), target, node, drop_self=drop_self)

    def check_arguments(self, name: str, target: Any, node: ast.Call, *, drop_self: bool) -> None:
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            return
        starred = any(isinstance(arg, ast.Starred) for arg in node.args)
        keywords = [kw.arg for kw in node.keywords if kw.arg is not None]
        if starred or len(keywords) < len(node.keywords):
            names = set(signature.parameters)
            kinds = {p.kind for p in signature.parameters.values()}
            if inspect.Parameter.VAR_KEYWORD not in kinds:
                for keyword in keywords:
                    if keyword not in names:
                        self.problems.append(f"{name}() takes no keyword {keyword!r}")
            return
        positional = [None] * (len(node.args) + drop_self)
        try:
            signature.bind(*positional, **dict.fromkeys(keywords))
        except TypeError as exc:
            self.problems.append(f"{name}(): {exc}")


def check_snippet(code: str, item: Documented) -> list[str]:
    """Every problem of one example code block."""
    source = "async def _example():\n" + textwrap.indent(code, "    ") + "\n    pass\n"
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [f"does not parse: {exc.msg} (example line {(exc.lineno or 1) - 1})"]
    checker = _Checker(item)
    checker.prepare(tree)
    checker.visit(tree)
    return list(dict.fromkeys(checker.problems))


def collect_example_problems() -> tuple[dict[str, list[str]], int]:
    """Check every example of the public surface; map "name (file:line)" to its problems."""
    problems: dict[str, list[str]] = {}
    count = 0
    for item in documented():
        parsed = parse(item.text)
        if parsed is None:
            continue
        for code in snippets(parsed):
            count += 1
            found = check_snippet(code, item)
            if found:
                problems.setdefault(f"{item.name} ({item.where})", []).extend(found)
    return problems, count


def test_docstring_examples_name_real_things() -> None:
    """Every API-reference example parses and names real trioqio objects and arguments."""
    problems, count = collect_example_problems()
    assert count > 100, f"only {count} examples found; is the surface walk broken?"
    lines = [f"{name}: {'; '.join(found)}" for name, found in sorted(problems.items())]
    assert not problems, (
        f"{len(problems)} docstrings have examples that do not check ({count} examples):\n"
        + "\n".join(lines)
    )


# -- the checker itself catches what it claims to ------------------------------------------


def _item(text: str, cls: type | None = trioqio.SocketChannel, home: str = "trioqio") -> Documented:
    return Documented("example", "here", text, cls, home)


def _problems(text: str, cls: type | None = trioqio.SocketChannel, home: str = "trioqio") -> str:
    parsed = parse(text)
    assert parsed is not None
    codes = snippets(parsed)
    assert codes, "the test docstring has no example"
    return "\n".join(p for code in codes for p in check_snippet(code, _item(text, cls, home)))


def test_checker_accepts_a_good_example() -> None:
    good = """Talk.

    Example::

        async with await trioqio.connect("tcp:localhost:4444") as channel:
            await channel.send_all(b"hi")
            channel.set_delay(False)
        with trioqio.trace.subscribed(print):
            ...
        task = trioqio.Task(source=None, name="x")
        print(task.result, listener.statistics().accepted)
        try:
            ...
        except trioqio.UnexpectedEOF as exc:
            print(exc.received)

    Examples:
        .. code-block:: console

            $ trioqio migrate --listen tcp:127.0.0.1:0

        >>> trioqio.parse_address("localhost:80").port
        80
    """
    assert _problems(good) == ""
    assert "parse_addres does not exist" in _problems(good.replace("parse_address", "parse_addres"))


def test_walk_reaches_aliases_members_and_submodules() -> None:
    names = {item.name for item in documented()}
    expected = {
        "trioqio.ClientHandler",  # a '#:' comment on a type alias
        "trioqio.SocketChannel.send_all",
        "trioqio.testing.Fault.applies_to",
        "trioqio.trace.subscribed",
        "trioqio.abc",
    }
    assert expected <= names


def test_checker_reports_each_kind_of_broken_example() -> None:
    assert "does not parse" in _problems("Bad.\n\nExample::\n\n    await channel.send_all(\n")
    broken = """Broken.

    Example::

        with trioqio.trace.subscribd(print):
            await channel.recieve_some()
        listener.set_client_fn(None)
        trioqio.InetAddress("localhost", 80, prot=1)
        ws = trioqio.WebsockChannel.server(channel, bogus=1)
        from trioqio.testing import check_chanel
        slow = Fault(cut_aftr=10)
    """
    found = _problems(broken, home="trioqio.testing")
    assert "trioqio.trace.subscribd does not exist" in found
    assert "channel.recieve_some: SocketChannel has no 'recieve_some'" in found
    assert "listener.set_client_fn: NetListener has no 'set_client_fn'" in found
    assert "trioqio.InetAddress(): got an unexpected keyword argument 'prot'" in found
    assert "cannot import check_chanel from trioqio.testing" in found
    assert "Fault(): got an unexpected keyword argument 'cut_aftr'" in found
    assert "trioqio.WebsockChannel.server(): got an unexpected keyword argument 'bogus'" in found


def test_conventional_variables_follow_the_documented_class() -> None:
    # In BufferChannel's examples "channel" is a BufferChannel; elsewhere the Channel base.
    example = "Seek.\n\nExample::\n\n    await channel.seek(0)\n"
    assert _problems(example, cls=trioqio.BufferChannel) == ""
    assert "Channel has no 'seek'" in _problems(example, cls=None)
    # An annotation or an except clause overrides the convention.
    typed = """Typed.

    Example::

        def done(task: trioqio.SocketChannel) -> None:
            task.set_delay(True)
            task.propagate_error()
    """
    assert _problems(typed) == "task.propagate_error: SocketChannel has no 'propagate_error'"


# -- every example type-checks (nox -s typecheck) ------------------------------------------
#
# tests/typecheck/ holds the README's example (readme_example.py) and every docstring
# example of the public surface above (doc_<module>.py, one file per source module), each
# example wrapped in an async function whose parameters are the example's free names with
# the types below; mypy --strict and pyright strict check those files (pyproject's
# [tool.mypy] files / [tool.pyright] include). This test keeps them in step with their
# sources: run it with TRIOQIO_WRITE_TYPED_EXAMPLES=1 to regenerate them.

TYPECHECK = Path(__file__).resolve().parent / "typecheck"
README = Path(__file__).resolve().parent.parent / "README.md"
PACKAGE = Path(trioqio.__file__).resolve().parent
#: Names an example may use without defining them: the type each stands for. ``channel``
#: and ``wrapped`` stand for the documented class when it is a Channel (see below), and a
#: bare name public in the documented object's module (``Fault`` in trioqio.testing's
#: examples) is imported from there.
FREE_NAMES = {
    "nursery": "trio.Nursery",
    "task": "trioqio.Task[Any]",
    "listener": "trioqio.NetListener",
    "tls": "trioqio.TLSChannel",
    "ws": "trioqio.WebsockChannel",
    "buffer": "trioqio.BufferChannel",
    "slow": "trioqio.testing.StallingChannel",
    "corrupting": "trioqio.testing.CorruptingChannel",
    "holding": "trioqio.testing.HoldingChannel",
    "socket_listener": "trioqio.SocketChannelListener",
    "listening_channel": "trioqio.SocketChannel",
    "sock_channel": "trioqio.SocketChannel",
    "client": "trioqio.abc.Channel",
    "server": "trioqio.abc.Channel",
    "sock": "trio.socket.SocketType",
    "ctx": "ssl.SSLContext",
    "done": "trioqio.CompletionCallback[trioqio.abc.Channel]",
    "handle": "trioqio.AnyClientHandler",
    "echo": "Callable[[trio.abc.Stream], Awaitable[None]]",
    "serve_one_request": "Callable[[trio.abc.Stream], Awaitable[None]]",
    "errors": "list[BaseException]",
    "log": "logging.Logger",
    "exc": "BaseException",
    "data": "bytes",
    "header": "bytes",
    "payload": "bytes",
    "page": "bytes",
    "page1": "bytes",
    "page2": "bytes",
    "length": "int",
    "fd": "int",
}
_CHANNEL_NAMES = ("channel", "wrapped")
#: The prelude's imports: names an example may use as they are.
_IMPORTED = {
    "errno", "functools", "hashlib", "logging", "os", "socket", "ssl", "sys", "threading",
    "time", "trio", "trioqio", "Any", "Awaitable", "Callable",
}  # fmt: skip
_PRELUDE = '''"""Generated by tests/test_docstring_examples.py (typed examples): do not edit.

{what}.

mypy --strict and pyright strict check each example as the body of a function whose
parameters are the example's free names (typed by test_docstring_examples.py's FREE_NAMES).
"""

# Generated code is checked by the type checkers, not linted or formatted: the examples
# keep the docstrings' own layout. Fragments compute values they do not use, and the
# prelude imports what any example may need.
# ruff: noqa
# fmt: off
# pyright: reportUnusedVariable=false, reportUnusedExpression=false
# pyright: reportUnusedFunction=false, reportUnusedImport=false, reportUnusedClass=false

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

import trioqio
import trioqio.abc
import trioqio.migration
import trioqio.testing
import trioqio.trace
'''


def _free_names(code: str) -> list[str]:
    """Names ``code`` reads but never binds (a function's parameters bind inside it only)."""
    known = set(dir(builtins_module)) | _IMPORTED
    free: list[str] = []

    def bound_in(body: list[ast.stmt], outer: set[str]) -> set[str]:
        names = set(outer)
        for statement in body:
            for node in ast.walk(statement):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.add(node.id)
                elif (
                    isinstance(
                        node,
                        ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.ExceptHandler,
                    )
                    and node.name
                ):
                    names.add(node.name)
        return names

    def visit(body: list[ast.stmt], outer: set[str]) -> None:
        names = bound_in(body, outer)
        for statement in body:
            for node in ast.walk(statement):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    params = {arg.arg for arg in ast.walk(node.args) if isinstance(arg, ast.arg)}
                    visit(node.body, names | params)
                elif isinstance(node, ast.Lambda):
                    params = {arg.arg for arg in ast.walk(node.args) if isinstance(arg, ast.arg)}
                    body_names = (
                        {n.id for n in ast.walk(node.body) if isinstance(n, ast.Name)}
                        - params
                        - names
                    )
                    free.extend(sorted(body_names - set(free)))
            for node in _outside_functions(statement):
                if isinstance(node, ast.Name) and node.id not in names and node.id not in free:
                    free.append(node.id)

    visit(ast.parse(code).body, known)
    return free


def _outside_functions(node: ast.AST) -> Iterator[ast.AST]:
    """The nodes of ``node`` that are not inside a function's or lambda's body."""
    if isinstance(node, ast.Lambda):
        return
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        outside: list[ast.AST | None] = [*node.args.defaults, *node.args.kw_defaults]
        outside += [*node.decorator_list, node.returns]
        outside += [arg.annotation for arg in ast.walk(node.args) if isinstance(arg, ast.arg)]
        for part in outside:
            if part is not None:
                yield from _outside_functions(part)
        return
    yield node
    for child in ast.iter_child_nodes(node):
        yield from _outside_functions(child)


def _defining_file(cls: type) -> Path | None:
    """The trioqio source file that defines ``cls`` (``__module__`` says "trioqio")."""
    pattern = re.compile(rf"^class {re.escape(cls.__name__)}\b", flags=re.MULTILINE)
    for path in sorted(PACKAGE.rglob("*.py")):
        if pattern.search(path.read_text()):
            return path
    return None


def _typed_file(item: Documented) -> tuple[str, str]:
    """The generated file an item's examples go to (one per source module), and its source."""
    path: Path | None = None
    if ".py:" in item.where:
        path = PACKAGE.parent / item.where.rpartition(":")[0]
    if item.cls is not None and (path is None or path.name == "__init__.py"):
        # Python 3.13's inspect finds a class through its __module__, which the package
        # sets to "trioqio": it would say trioqio/__init__.py. No class is defined there.
        path = _defining_file(item.cls)
    if path is None:  # a module docstring, a '#:' comment found by name
        path = Path(str(importlib.import_module(item.home).__file__))
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    # trioqio/abc.py re-exports trioqio/_abc.py: both go to doc_abc.py.
    stem = "_".join(part.lstrip("_") for part in parts) or "init"
    return f"doc_{stem}.py", path.relative_to(PACKAGE.parent).as_posix()


def _function_name(public_name: str, taken: set[str]) -> str:
    base = "example_" + re.sub(r"\W", "_", public_name.removeprefix("trioqio."))
    name, count = base, 1
    while name in taken:
        count += 1
        name = f"{base}_{count}"
    taken.add(name)
    return name


def _channel_type(item: Documented) -> str:
    """``trioqio.BufferChannel``, ``trioqio.abc.Channel``: the conventional channel's type.

    A member a private base defines (``MemoryChannel.seek``) is documented on the public
    class it is reached through (``trioqio.BufferChannel.seek``).
    """
    owner: Any = trioqio
    for part in item.name.split(".")[1:-1]:
        owner = getattr(owner, part, None)
    for cls in (item.cls, owner):
        channel = _conventional_channel(cls if isinstance(cls, type) else None)
        for module_name in PUBLIC_MODULES:
            if getattr(importlib.import_module(module_name), channel.__name__, None) is channel:
                return f"{module_name}.{channel.__name__}"
    raise AssertionError(f"{item.name}: no public channel class")


def _wrap(name: str, code: str, item: Documented, imports: set[str]) -> str:
    """``code`` as the body of ``async def name(<its free names>) -> None``."""
    public: set[str] = set(getattr(importlib.import_module(item.home), "__all__", ()))
    params: list[str] = []
    for free in _free_names(code):
        if free in public:
            imports.add(f"from {item.home} import {free}")
        elif free in _CHANNEL_NAMES:
            params.append(f"{free}: {_channel_type(item)}")
        else:
            assert free in FREE_NAMES, f"{item.name}'s example uses {free!r}: add it to FREE_NAMES"
            params.append(f"{free}: {FREE_NAMES[free]}")
    head = f"async def {name}({', '.join(params)}) -> None:"
    if len(head) > 100:  # one parameter a line
        head = f"async def {name}(\n" + "".join(f"    {p},\n" for p in params) + ") -> None:"
    return f"{head}\n{textwrap.indent(code, '    ')}\n"


def _file_text(what: str, imports: set[str], functions: list[str]) -> str:
    head = _PRELUDE.format(what=what)
    if imports:
        head += "\n" + "\n".join(sorted(imports)) + "\n"
    return head + "\n\n" + "\n\n".join(functions)


def readme_example() -> str:
    """The text tests/typecheck/readme_example.py must hold."""
    (readme,) = re.findall(
        r"^```python\n(.*?)^```$", README.read_text(), flags=re.MULTILINE | re.DOTALL
    )
    # The README's script, minus its imports (the prelude has them) and its trio.run.
    body = [line for line in readme.splitlines() if not line.startswith(("import ", "trio.run("))]
    script = "\n".join(body).strip("\n")
    run = "def readme_example() -> None:\n    trio.run(main)\n"
    return _file_text("The README's example", set(), [script + "\n", run])


def typed_examples() -> dict[str, str]:
    """Every generated file under tests/typecheck/: name -> the text it must hold."""
    grouped: dict[str, tuple[set[str], set[str], list[str], set[str]]] = {}
    for item in documented():
        parsed = parse(item.text)
        for code in snippets(parsed) if parsed is not None else []:
            file, source = _typed_file(item)
            sources, imports, functions, taken = grouped.setdefault(file, (set(), set(), [], set()))
            sources.add(source)
            name = _function_name(item.name, taken)
            functions.append(f"# -- {item.name}\n" + _wrap(name, code, item, imports))
    files = {"readme_example.py": readme_example()}
    for file, (sources, imports, functions, _) in sorted(grouped.items()):
        what = f"The docstring examples of the public names {' and '.join(sorted(sources))} define"
        files[file] = _file_text(what, imports, functions)
    return files


def _generated() -> set[str]:
    """The generated files now in tests/typecheck/ (the hand-written ones are not)."""
    return {
        path.name
        for path in TYPECHECK.glob("*.py")
        if path.read_text().startswith('"""Generated by tests/test_docstring_examples.py')
    }


def test_typed_examples_are_current() -> None:
    """tests/typecheck/ holds what the README and every docstring example say now."""
    expected = typed_examples()
    if os.environ.get("TRIOQIO_WRITE_TYPED_EXAMPLES"):
        for extra in _generated() - set(expected):
            (TYPECHECK / extra).unlink()
        for name, text in expected.items():
            (TYPECHECK / name).write_text(text)
    hint = "run TRIOQIO_WRITE_TYPED_EXAMPLES=1 pytest tests/test_docstring_examples.py -k typed"
    assert _generated() == set(expected), f"tests/typecheck/ has other generated files: {hint}"
    stale = [name for name, text in expected.items() if (TYPECHECK / name).read_text() != text]
    assert not stale, f"tests/typecheck/{', '.join(stale)} are stale: {hint}"


def test_every_example_is_typed() -> None:
    """The generated files hold every example the name check walks (none is left out)."""
    _, count = collect_example_problems()
    text = "".join(typed_examples().values())
    assert text.count("\n# -- trioqio") == count
    # Free names get a type; the conventional channel follows the documented class.
    seek = "await channel.seek(0)"
    assert _wrap("f", seek, _item("", None), set()).startswith(
        "async def f(channel: trioqio.abc.Channel) -> None:"
    )
    imports: set[str] = set()
    wrapped = _wrap(
        "f", f"{seek}\nFault()", _item("", trioqio.BufferChannel, "trioqio.testing"), imports
    )
    assert wrapped.startswith("async def f(channel: trioqio.BufferChannel) -> None:")
    assert imports == {"from trioqio.testing import Fault"}
