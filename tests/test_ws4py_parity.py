"""Parity with ws4py 0.6.0: every public name ws4py defines exists in wsloop (``ws4py.server`` ->
``wsloop.servers``) with a compatible signature, and the same ws4py programs, run once with ws4py
and once ported by their imports, record the same callbacks with the same argument types."""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib
import inspect
import json
import logging
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ws4py  # a test dependency (setup.cfg's test extra): its absence is a failure, not a skip

from tests.support import ws4py_programs as programs

# --------------------------------------------------------------------------------------------
# The only differences allowed, each with its reason. A name key is a gap as the test prints
# it, "<ws4py name>: <what>" or, to pin the difference, the whole line. A conversation key is
# "<program> <conversation>: <event> <field>" (or ": events" for a missing or extra callback),
# where <program> may be "servers" or "clients" (all of them) and <conversation> "*" (any).
# An entry that nothing needs any more fails test_every_*_exception_is_still_needed.
# --------------------------------------------------------------------------------------------
NAME_EXCEPTIONS: dict[str, str] = {
    "ws4py.WS_VERSION: value -- (13,) != ws4py's (8, 13)": (
        "wsloop speaks RFC 6455's version 13 only; ws4py's (8, 13) also admits the hybi-08 draft "
        "(Sec-WebSocket-Version: 8), which no browser has sent since 2012"
    ),
    "ws4py.server.cherrypyserver.WebSocketTool.upgrade: default version -- (13,) != ws4py's (8, 13)": (
        "the default is wsloop.WS_VERSION, for the reason given at ws4py.WS_VERSION"
    ),
    "ws4py.messaging.CloseControlMessage: default reason -- b'' != ws4py's ''": (
        "wsloop keeps a close reason as bytes always (issue 15: closed() and CloseControlMessage "
        "give bytes); ws4py keeps a str reason as given and has bytes only from a parsed frame"
    ),
    "ws4py.messaging.Message.__unicode__: missing": "Python 2's unicode() protocol; Python 3 calls __str__",
    "ws4py.messaging.CloseControlMessage.__unicode__: missing": "Python 2's unicode() protocol",
    (
        "ws4py.streaming.VALID_CLOSING_CODES: value -- [1000, 1001, 1002, 1003, 1007, 1008, 1009, "
        "1010, 1011, 1012, 1013, 1014] != ws4py's [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011]"
    ): (
        "a ws4py gap wsloop fixes: 1012 (Service Restart), 1013 (Try Again Later) and 1014 (Bad "
        "Gateway) are registered close codes (IANA's WebSocket registry) that wsloop's protocol "
        "accepts and sends; ws4py's Stream failed a peer's valid 1012-1014 close with 1002"
    ),
}

#: ws4py.server.tulipserver's WebSocketProtocol is an asyncio StreamReaderProtocol whose
#: handshake coroutines are its internals; ws4py's module does not import on any Python wsloop
#: supports (asyncio.coroutine went in 3.11), and its documented use,
#: ``loop.create_server(lambda: WebSocketProtocol(handler_cls), ...)``, works on wsloop's, an
#: asyncio.BufferedProtocol reading every connection into one shared buffer (no StreamReader).
_TULIP_REASON = "ws4py's tulipserver internals (see the comment above _TULIP_REASON)"
NAME_EXCEPTIONS.update(
    {
        f"ws4py.server.tulipserver.WebSocketProtocol{gap}": _TULIP_REASON
        for gap in [
            ": base -- not a subclass of (the counterpart of) asyncio.streams.StreamReaderProtocol",
            ": base -- not a subclass of (the counterpart of) asyncio.streams.FlowControlMixin",
            ": base -- not a subclass of (the counterpart of) asyncio.protocols.Protocol",
            *(
                f".{name}: missing"
                for name in (
                    "reader",
                    "writer",
                    "terminated",
                    "handle_initial_handshake",
                    "handle_websocket",
                    "read_headers",
                    "next_line",
                )
            ),
        ]
    }
)

CONVERSATION_EXCEPTIONS: dict[str, str] = {
    "servers server-closes: events": (
        "a ws4py bug wsloop fixes: after a close the server started, ws4py's WebSocketManager "
        "marks the websocket terminated on the peer's reply and so never calls terminate(): "
        "closed() is never called and the socket stays open; wsloop calls "
        "closed(4001, b'server reason') and closes the connection"
    ),
    "servers *: peer close-reply reason": (
        "wsloop's reply to a peer's close frame echoes the status code only (RFC 6455 5.5.1); "
        "ws4py repeats the reason too. No callback sees it"
    ),
    "clients *: reference close-reply reason": "the same, for a client's reply to the server's close",
    "servers drop-at-once: closed args[1]": (
        "ws4py passes the str 'Going away' for a 1006 (no close frame received) where every "
        "other reason it passes is bytes; wsloop passes bytes always"
    ),
}

#: Where an exception lets wsloop's server differ, what it must record instead: the arguments
#: of its closed() (each a subset of the recorded argument).
WSLOOP_CLOSED_WHERE_EXCUSED: dict[str, list[dict[str, Any]]] = {
    "server-closes": [{"type": "int", "value": 4001}, {"type": "bytes", "value": "server reason"}],
    "drop-at-once": [{"type": "int", "value": 1006}, {"type": "bytes"}],
}

# ws4py 0.6.0's public modules, relative to the package ("" is ws4py itself).
MODULES = [
    "",
    "async_websocket",
    "client",
    "client.geventclient",
    "client.threadedclient",
    "client.tornadoclient",
    "compat",
    "exc",
    "framing",
    "manager",
    "messaging",
    "server",
    "server.cherrypyserver",
    "server.geventserver",
    "server.tulipserver",
    "server.wsgirefserver",
    "server.wsgiutils",
    "streaming",
    "utf8validator",
    "websocket",
]

WS4PY_DIR = Path(ws4py.__file__).parent


def ws4py_module_name(rel: str) -> str:
    return "ws4py" + ("." + rel if rel else "")


def wsloop_module_name(ws4py_name: str) -> str:
    """``ws4py.server...`` -> ``wsloop.servers...``, ``ws4py...`` -> ``wsloop...``."""
    if ws4py_name == "ws4py.server" or ws4py_name.startswith("ws4py.server."):
        return "wsloop.servers" + ws4py_name[len("ws4py.server") :]
    return "wsloop" + ws4py_name[len("ws4py") :]


def source_path(rel: str) -> Path:
    base = WS4PY_DIR.joinpath(*rel.split(".")) if rel else WS4PY_DIR
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


# ------------------------------------------------------------------------------ ws4py's surface


class Unresolved:
    """A default value seen only in source (a module that does not import here)."""

    def __init__(self, source: str):
        self.source = source

    def __repr__(self) -> str:
        return self.source


@dataclass
class Member:
    name: str
    kind: str  # "method", "property", "coroutine", "attribute"
    node: ast.AST
    settable: bool = False


@dataclass
class ClassInfo:
    name: str
    node: ast.ClassDef
    members: dict[str, Member]


@dataclass
class ModuleInfo:
    rel: str
    name: str
    tree: ast.Module
    live: types.ModuleType | None  # None: ws4py's module does not import on this Python
    classes: dict[str, ClassInfo]
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef]
    constants: dict[str, ast.expr]


def public(name: str) -> bool:
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))


def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements that define module names: ``if __name__ == '__main__'`` blocks are skipped,
    an ``if`` (compat's Python 3 test) and a ``try`` (an optional import) count by their body:
    the else/except branches are Python 2's or a fallback for a name the body imports."""
    for node in body:
        if isinstance(node, ast.If):
            if "__name__" in ast.unparse(node.test):
                continue
            yield from _module_level(node.body)
        elif isinstance(node, ast.Try):
            yield from _module_level(node.body)
        else:
            yield node


def _decorators(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    return [ast.unparse(d) for d in node.decorator_list]


def _class_info(node: ast.ClassDef) -> ClassInfo:
    members: dict[str, Member] = {}
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not public(item.name):
                continue
            decorators = _decorators(item)
            if any(d.endswith(".setter") for d in decorators):
                members[item.name].settable = True
            elif "property" in decorators:
                members[item.name] = Member(item.name, "property", item)
            elif any(d.endswith("coroutine") for d in decorators):
                members[item.name] = Member(item.name, "coroutine", item)
            else:
                members[item.name] = Member(item.name, "method", item)
        elif isinstance(item, ast.Assign):
            for target in item.targets:
                if isinstance(target, ast.Name) and public(target.id) and target.id != "__doc__":
                    members[target.id] = Member(target.id, "attribute", item.value)
    return ClassInfo(node.name, node, members)


def load_module(rel: str) -> ModuleInfo:
    name = ws4py_module_name(rel)
    tree = ast.parse(source_path(rel).read_text(encoding="utf-8"))
    try:
        live: types.ModuleType | None = importlib.import_module(name)
    except Exception:  # async_websocket, tulipserver: asyncio.coroutine is gone in 3.11
        live = None
    classes: dict[str, ClassInfo] = {}
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    constants: dict[str, ast.expr] = {}
    for node in _module_level(tree.body):
        if isinstance(node, ast.ClassDef) and public(node.name):
            classes[node.name] = _class_info(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and public(node.name):
            functions[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and not target.id.startswith("_"):
                    constants[target.id] = node.value
    return ModuleInfo(rel, name, tree, live, classes, functions, constants)


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return Unresolved(ast.unparse(node))


def signature_from_ast(node: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> inspect.Signature:
    args = node.args
    params: list[inspect.Parameter] = []
    positional = [*args.posonlyargs, *args.args]
    defaults: list[Any] = [inspect.Parameter.empty] * (len(positional) - len(args.defaults))
    defaults += [_literal(d) for d in args.defaults]
    for i, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
        kind = (
            inspect.Parameter.POSITIONAL_ONLY
            if i < len(args.posonlyargs)
            else inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        params.append(inspect.Parameter(arg.arg, kind, default=default))
    if args.vararg:
        params.append(inspect.Parameter(args.vararg.arg, inspect.Parameter.VAR_POSITIONAL))
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        default = inspect.Parameter.empty if kw_default is None else _literal(kw_default)
        params.append(inspect.Parameter(arg.arg, inspect.Parameter.KEYWORD_ONLY, default=default))
    if args.kwarg:
        params.append(inspect.Parameter(args.kwarg.arg, inspect.Parameter.VAR_KEYWORD))
    if method:
        params = params[1:]
    return inspect.Signature(params)


def ws4py_signature(
    info: ModuleInfo, node: ast.FunctionDef | ast.AsyncFunctionDef, owner: str | None
) -> inspect.Signature:
    """From the live function where ws4py imports (real default values), else from the source."""
    if info.live is not None:
        obj: Any = getattr(info.live, owner) if owner else info.live
        obj = obj.__dict__[node.name] if owner else getattr(obj, node.name)
        if isinstance(obj, (types.FunctionType, types.MethodType)):
            sig = inspect.signature(obj)
            return sig.replace(parameters=list(sig.parameters.values())[1:]) if owner else sig
    return signature_from_ast(node, method=owner is not None)


# ------------------------------------------------------------------------------ the comparison


@dataclass
class Gap:
    where: str  # ws4py's dotted name
    what: str  # missing, kind, signature, default <param>, value, base ...
    detail: str = ""

    @property
    def key(self) -> str:
        return f"{self.where}: {self.what}"

    def __str__(self) -> str:
        return self.key + (f" -- {self.detail}" if self.detail else "")


def counterpart_of_ws4py_object(obj: Any) -> Any:
    """The wsloop object at the place of a ws4py class or function (``missing`` if none)."""
    module = importlib.import_module(wsloop_module_name(obj.__module__))
    target: Any = module
    for part in obj.__qualname__.split("."):
        target = getattr(target, part, MISSING)
        if target is MISSING:
            return MISSING
    return target


MISSING = object()


def _default_matches(ours: Any, theirs: Any) -> bool:
    if isinstance(theirs, Unresolved):
        return True
    if inspect.isclass(theirs) and theirs.__module__.startswith("ws4py"):
        counterpart = counterpart_of_ws4py_object(theirs)
        return inspect.isclass(ours) and counterpart is not MISSING and issubclass(ours, counterpart)
    if isinstance(theirs, (type(None), bool, int, float, str, bytes, tuple, list)):
        return type(ours) is type(theirs) and bool(ours == theirs)
    return True


def compare_signature(where: str, ours: inspect.Signature, theirs: inspect.Signature) -> list[Gap]:
    """Every call ws4py's signature accepts must bind to ours, with the same meaning: ws4py's
    positional parameters at the same place under the same names (or taken by our ``*args`` and
    ``**kwargs``), their defaults present and equal, our extra parameters optional."""
    P = inspect.Parameter
    gaps: list[Gap] = []
    our_params = list(ours.parameters.values())
    our_positional = [p for p in our_params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    our_var_pos = any(p.kind is P.VAR_POSITIONAL for p in our_params)
    our_var_kw = any(p.kind is P.VAR_KEYWORD for p in our_params)
    by_name = {p.name: p for p in our_params if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)}
    theirs_names = set()
    bad = f"ws4py {theirs} vs wsloop {ours}"
    for index, param in enumerate(theirs.parameters.values()):
        theirs_names.add(param.name)
        if param.kind is P.VAR_POSITIONAL:
            if not our_var_pos:
                gaps.append(Gap(where, "signature", f"*{param.name} not accepted: {bad}"))
            continue
        if param.kind is P.VAR_KEYWORD:
            if not our_var_kw:
                gaps.append(Gap(where, "signature", f"**{param.name} not accepted: {bad}"))
            continue
        if param.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD):
            if index < len(our_positional):
                mine = our_positional[index]
                if mine.name != param.name and param.kind is not P.POSITIONAL_ONLY:
                    gaps.append(
                        Gap(
                            where,
                            "signature",
                            f"parameter {index + 1} is {mine.name!r}, not {param.name!r}: {bad}",
                        )
                    )
                    continue
            elif not our_var_pos:
                gaps.append(Gap(where, "signature", f"no positional parameter {param.name!r}: {bad}"))
                continue
        if param.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY):
            mine_kw = by_name.get(param.name)
            if mine_kw is None and not our_var_kw:
                gaps.append(Gap(where, "signature", f"{param.name!r} not accepted by name: {bad}"))
                continue
        mine_any = by_name.get(param.name) or (our_positional[index] if index < len(our_positional) else None)
        if mine_any is None:
            continue  # absorbed by *args/**kwargs
        if param.default is not P.empty:
            if mine_any.default is P.empty:
                gaps.append(Gap(where, f"default {param.name}", f"missing (ws4py: {param.default!r})"))
            elif not _default_matches(mine_any.default, param.default):
                gaps.append(
                    Gap(where, f"default {param.name}", f"{mine_any.default!r} != ws4py's {param.default!r}")
                )
    theirs_positional = sum(
        p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD) for p in theirs.parameters.values()
    )
    for index, mine in enumerate(our_params):
        required = mine.default is P.empty and mine.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)
        filled = mine.name in theirs_names or (mine in our_positional and index < theirs_positional)
        if required and not filled:
            gaps.append(Gap(where, "signature", f"extra required parameter {mine.name!r}: {bad}"))
    return gaps


def our_signature(obj: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def _is_coroutine_function(obj: Any) -> bool:
    return inspect.iscoroutinefunction(obj) or inspect.isasyncgenfunction(obj)


def _ws4py_bases(info: ModuleInfo, cls: ClassInfo) -> list[Any]:
    """ws4py's class's bases, all the way up (``object`` left out): live where ws4py imports,
    else evaluated from the source's imports and the module's own classes."""
    if info.live is not None:
        return list(getattr(info.live, cls.name).__mro__[1:-1])
    namespace: dict[str, Any] = {}
    for node in info.tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            exec(compile(ast.Module([node], []), str(source_path(info.rel)), "exec"), namespace)
    bases: list[Any] = []
    for expr in cls.node.bases:
        text = ast.unparse(expr)
        if text in info.classes:  # a class of the same module: compare through its counterpart
            bases.append(("local", text))
            continue
        base = eval(text, namespace)
        bases.extend(b for b in base.__mro__[:-1] if b not in bases)
    return bases


def compare_class(info: ModuleInfo, cls: ClassInfo, ours: Any, where: str) -> list[Gap]:
    gaps: list[Gap] = []
    wsloop_module = importlib.import_module(wsloop_module_name(info.name))
    for base in _ws4py_bases(info, cls):
        if isinstance(base, tuple):
            target, label = getattr(wsloop_module, base[1], MISSING), f"{info.name}.{base[1]}"
        elif base.__module__.startswith("ws4py"):
            target, label = counterpart_of_ws4py_object(base), f"{base.__module__}.{base.__qualname__}"
        else:
            target, label = base, f"{base.__module__}.{base.__qualname__}"
        if target is MISSING or not inspect.isclass(target) or not issubclass(ours, target):
            gaps.append(Gap(where, "base", f"not a subclass of (the counterpart of) {label}"))
    init = next((n for n in cls.node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    if init is not None:
        sig = our_signature(ours)
        theirs = passed_through(info, cls, "__init__") or ws4py_signature(info, init, cls.name)
        if sig is None:
            gaps.append(Gap(where, "signature", "wsloop's constructor has no signature"))
        else:
            gaps += compare_signature(where, sig, theirs)
    for member in cls.members.values():
        if member.name == "__init__":
            continue
        mwhere = f"{where}.{member.name}"
        try:
            mine = inspect.getattr_static(ours, member.name)
        except AttributeError:
            gaps.append(Gap(mwhere, "missing"))
            continue
        if member.kind == "property":
            # Read as an attribute, never called: a property, a slot or a class attribute
            # reads the same; a method or a class would not.
            if inspect.isroutine(mine) or isinstance(mine, (staticmethod, classmethod, type)):
                gaps.append(Gap(mwhere, "kind", f"a property in ws4py, {type(mine).__name__} in wsloop"))
            elif member.settable and isinstance(mine, property) and mine.fset is None:
                gaps.append(Gap(mwhere, "kind", "ws4py's property is settable, wsloop's is read-only"))
        elif member.kind in ("method", "coroutine"):
            func = getattr(ours, member.name)
            if isinstance(mine, property) or not callable(func):
                gaps.append(Gap(mwhere, "kind", f"a method in ws4py, {type(mine).__name__} in wsloop"))
                continue
            if member.kind == "coroutine" and not _is_coroutine_function(func):
                gaps.append(Gap(mwhere, "kind", "a coroutine in ws4py, a plain function in wsloop"))
            sig = our_signature(mine.__func__ if isinstance(mine, (staticmethod, classmethod)) else mine)
            if sig is not None and not isinstance(mine, staticmethod):
                sig = sig.replace(parameters=list(sig.parameters.values())[1:])
            assert isinstance(member.node, (ast.FunctionDef, ast.AsyncFunctionDef))
            theirs = passed_through(info, cls, member.name) or ws4py_signature(info, member.node, cls.name)
            if member.name.startswith("__"):  # called by Python, positionally
                theirs = positional_only(theirs)
            if sig is None:
                gaps.append(Gap(mwhere, "signature", "wsloop's has no signature"))
            else:
                gaps += compare_signature(mwhere, sig, theirs)
        else:  # a class attribute
            theirs_value = (
                getattr(getattr(info.live, cls.name), member.name)
                if info.live is not None
                else _literal(member.node)  # type: ignore[arg-type]
            )
            gaps += compare_value(mwhere, getattr(ours, member.name), theirs_value)
    return gaps


def positional_only(sig: inspect.Signature) -> inspect.Signature:
    P = inspect.Parameter
    return sig.replace(
        parameters=[
            p.replace(kind=P.POSITIONAL_ONLY) if p.kind is P.POSITIONAL_OR_KEYWORD else p
            for p in sig.parameters.values()
        ]
    )


def passed_through(info: ModuleInfo, cls: ClassInfo, name: str) -> inspect.Signature | None:
    """For ws4py's ``def name(self, *args, **kwargs)`` that hands its arguments to the same
    method of a base from another library, that method's signature: the calls that work."""
    if info.live is None:
        return None
    live = getattr(info.live, cls.name)
    sig = inspect.signature(live.__dict__[name])
    kinds = [p.kind for p in list(sig.parameters.values())[1:]]
    if kinds != [inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD]:
        return None
    for base in live.__mro__[1:]:
        if not base.__module__.startswith("ws4py") and name in base.__dict__:
            base_sig = inspect.signature(base.__dict__[name])
            return base_sig.replace(parameters=list(base_sig.parameters.values())[1:])
    return None


def compare_value(where: str, ours: Any, theirs: Any) -> list[Gap]:
    if inspect.isclass(theirs):
        counterpart = counterpart_of_ws4py_object(theirs) if theirs.__module__.startswith("ws4py") else theirs
        if not (inspect.isclass(ours) and counterpart is not MISSING and issubclass(ours, counterpart)):
            return [Gap(where, "value", f"{ours!r} is not (a subclass of) the counterpart of {theirs!r}")]
        return []
    if callable(theirs):
        return (
            []
            if callable(ours)
            else [Gap(where, "kind", f"callable in ws4py, {type(ours).__name__} in wsloop")]
        )
    if isinstance(theirs, logging.Logger):
        return [] if isinstance(ours, logging.Logger) else [Gap(where, "value", f"{ours!r} is not a Logger")]
    if isinstance(theirs, (type(None), bool, int, float, str, bytes, tuple, list, dict, set, frozenset)):
        if type(ours) is not type(theirs) or ours != theirs:
            return [Gap(where, "value", f"{ours!r} != ws4py's {theirs!r}")]
    return []


def module_gaps(rel: str) -> list[Gap]:
    info = load_module(rel)
    ours_name = wsloop_module_name(info.name)
    try:
        ours = importlib.import_module(ours_name)
    except Exception as exc:  # absent, or broken on import
        return [Gap(info.name, "missing", f"import {ours_name}: {exc}")]
    gaps: list[Gap] = []
    theirs_all = next(
        (
            ast.literal_eval(node.value)
            for node in info.tree.body
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets)
        ),
        [],
    )
    ours_all = getattr(ours, "__all__", None)
    for name in theirs_all:  # ``from ws4py.x import *`` must bring the same names
        if ours_all is not None and name not in ours_all:
            gaps.append(Gap(f"{info.name}.{name}", "not in __all__"))
    for name, value in info.constants.items():
        where = f"{info.name}.{name}"
        if not hasattr(ours, name):
            gaps.append(Gap(where, "missing"))
            continue
        theirs = getattr(info.live, name) if info.live is not None else _literal(value)
        if not isinstance(theirs, Unresolved):
            gaps += compare_value(where, getattr(ours, name), theirs)
    for name, node in info.functions.items():
        where = f"{info.name}.{name}"
        mine = getattr(ours, name, MISSING)
        if mine is MISSING:
            gaps.append(Gap(where, "missing"))
        elif not inspect.isroutine(mine):
            gaps.append(Gap(where, "kind", f"a function in ws4py, {type(mine).__name__} in wsloop"))
        else:
            sig = our_signature(mine)
            if sig is None:
                gaps.append(Gap(where, "signature", "wsloop's has no signature"))
            else:
                gaps += compare_signature(where, sig, ws4py_signature(info, node, None))
    for name, cls in info.classes.items():
        where = f"{info.name}.{name}"
        mine = getattr(ours, name, MISSING)
        if mine is MISSING:
            gaps.append(Gap(where, "missing"))
        elif not inspect.isclass(mine):
            gaps.append(Gap(where, "kind", f"a class in ws4py, {type(mine).__name__} in wsloop"))
        else:
            gaps += compare_class(info, cls, mine, where)
    return gaps


def excused(gap: Gap) -> bool:
    """An exception names a gap by its key or, to pin the difference, by its whole text."""
    return gap.key in NAME_EXCEPTIONS or str(gap) in NAME_EXCEPTIONS


def unexcused(gaps: list[Gap]) -> list[str]:
    return [str(gap) for gap in gaps if not excused(gap)]


@pytest.mark.parametrize("rel", MODULES, ids=[ws4py_module_name(m) for m in MODULES])
def test_names_and_signatures(rel: str) -> None:
    """Every public name ws4py's module defines (by its source), and every public method,
    property and class attribute of its classes, exists in wsloop with a compatible signature."""
    problems = unexcused(module_gaps(rel))
    assert not problems, f"{len(problems)} gap(s) against {ws4py_module_name(rel)}:\n" + "\n".join(problems)


def module_of(key: str) -> str:
    """The ws4py module a gap's key is about: the longest module name its name starts with."""
    name = key.split(":")[0]
    modules = [ws4py_module_name(rel) for rel in MODULES]
    return max((m for m in modules if name == m or name.startswith(m + ".")), key=len)


def test_every_name_exception_is_still_needed() -> None:
    """An exception no gap matches is stale, unless its module still has other gaps (a name or a
    parameter missing there hides the differences behind it)."""
    used: set[str] = set()
    unfinished: set[str] = set()
    for rel in MODULES:
        gaps = module_gaps(rel)
        used |= {gap.key for gap in gaps} | {str(gap) for gap in gaps}
        if unexcused(gaps):
            unfinished.add(ws4py_module_name(rel))
    stale = [key for key in NAME_EXCEPTIONS if key not in used and module_of(key) not in unfinished]
    assert not stale, f"exceptions that no gap needs any more: {stale}"


# ------------------------------------------------------------------------------ a client's state

CLIENT_URLS = [
    "ws://example.com:9000/a/b?x=1",
    "wss://example.com/p",
    "ws+unix:///tmp/h7.sock",
    "ws://[::1]:9000/",
]
CLIENT_ATTRIBUTES = [
    "host",
    "port",
    "resource",
    "scheme",
    "unix_socket_path",
    "bind_addr",
    "protocols",
    "extensions",
    "extra_headers",
    "exclude_headers",
    "ssl_options",
    "client_terminated",
    "server_terminated",
    "terminated",
    "environ",
    "heartbeat_freq",
]


def client_state(cls: type, url: str) -> dict[str, Any]:
    """What a program can read on a client made, not connected, from ``url``: its attributes
    (``key`` by type: it is random), and its handshake's headers but Host and Origin (ws4py's are
    wrong for an IPv6 host and a unix socket: ``Host: ::1:9000``, ``Host: localhost:None``),
    the key's value and wsloop's compression offer."""
    client = cls(url, protocols=["chat"], headers=[("X-A", "1")])
    try:
        state: dict[str, Any] = {}
        for name in CLIENT_ATTRIBUTES:
            try:
                state[name] = getattr(client, name)
            except Exception as exc:
                state[name] = f"raises {type(exc).__name__}"
        state["key type"] = type(getattr(client, "key", None)).__name__
        skip = {"host", "origin", "sec-websocket-key", "sec-websocket-extensions"}
        state["handshake_headers"] = sorted(
            (k, v) for k, v in client.handshake_headers if k.lower() not in skip
        )
        return state
    finally:
        if getattr(client, "sock", None) is not None:
            client.sock.close()


@pytest.mark.parametrize("url", CLIENT_URLS)
def test_client_attributes(url: str) -> None:
    """ws4py's WebSocketBaseClient and wsloop's, made from the same URL, read the same."""
    from ws4py.client import WebSocketBaseClient as Theirs

    from wsloop.client import WebSocketBaseClient as Ours

    theirs, ours = client_state(Theirs, url), client_state(Ours, url)
    problems = [
        f"{name}: ws4py {theirs[name]!r}, wsloop {ours[name]!r}"
        for name in theirs
        if theirs[name] != ours[name] or type(theirs[name]) is not type(ours[name])
    ]
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------ conversations


@pytest.fixture(scope="module")
def server_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """ws4py's server programs (wsgiref, CherryPy) and their wsloop ports, each played every
    conversation by the same raw-socket client, all at the same time: by '<flavour> <program>',
    by conversation, the events recorded (the peer's first)."""
    directory = tmp_path_factory.mktemp("servers")
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with contextlib.ExitStack() as stack:
        drivers = []
        for program, source in programs.SERVER_PROGRAMS.items():
            for flavour in ("ws4py", "wsloop"):
                ported = source if flavour == "ws4py" else programs.port_to_wsloop(source)
                port, log = stack.enter_context(
                    programs.server_program(directory, f"{flavour}_{program}", ported)
                )

                def drive(key: str = f"{flavour} {program}", port: int = port, log: Path = log) -> None:
                    runs[key] = programs.drive_server(port, log)

                drivers.append(threading.Thread(target=drive))
        for driver in drivers:
            driver.start()
        for driver in drivers:
            driver.join()
    return runs


@pytest.fixture(scope="module")
def client_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """ws4py's client programs and their wsloop ports, each through its conversations against
    its own reference server (the websockets library's), all at the same time: by
    '<flavour> <program>', by conversation, the events recorded (the server's included)."""
    directory = tmp_path_factory.mktemp("clients")
    runs_of = [(flavour, program) for program in programs.CLIENT_PROGRAMS for flavour in ("ws4py", "wsloop")]
    references = {run: programs.ReferenceServer() for run in runs_of}
    results: dict[tuple[str, str], Path] = {}

    def run(flavour: str, program: str) -> None:
        source, first, conversations = programs.CLIENT_PROGRAMS[program]
        if flavour == "wsloop":
            source = programs.port_to_wsloop(source)
        url = f"ws://127.0.0.1:{references[flavour, program].port}/"
        results[flavour, program] = programs.run_client_program(
            directory, f"{flavour}_{program}", source, first, url, conversations
        )

    threads = [threading.Thread(target=run, args=key) for key in runs_of]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for reference in references.values():
            reference.stop()
    runs = {}
    for (flavour, program), log in results.items():
        events = programs.by_conversation(programs.read_log(log))
        for path, seen in references[flavour, program].seen.items():
            conversation = path.strip("/")
            events.setdefault(conversation, []).extend({"conversation": conversation, **e} for e in seen)
        runs[f"{flavour} {program}"] = events
    return runs


def fields(event: dict[str, Any]) -> dict[str, Any]:
    """An event's fields, one by one: ``args[i]``, ``attributes.<name>``, and the rest."""
    flat: dict[str, Any] = {}
    for key, value in event.items():
        if key == "args":
            flat.update({f"args[{i}]": arg for i, arg in enumerate(value)})
            flat["args count"] = len(value)
        elif key == "attributes":
            flat.update({f"attributes.{name}": v for name, v in value.items()})
        elif key not in ("conversation", "event"):
            flat[key] = value
    return flat


def conversation_differences(
    side: str, name: str, theirs: list[dict[str, Any]], ours: list[dict[str, Any]]
) -> list[tuple[str, str]]:
    """The differences, each as (key, text): the key is '<side> <conversation>: <event> <field>'
    for a field of events both sides have at the same place, '<side> <conversation>: events'
    for an event one side has and the other has not."""
    differences = []
    matcher = difflib.SequenceMatcher(
        a=[e["event"] for e in theirs], b=[e["event"] for e in ours], autojunk=False
    )
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            key = f"{side} {name}: events"
            missing, extra = [e["event"] for e in theirs[i1:i2]], [e["event"] for e in ours[j1:j2]]
            text = f"ws4py has {missing} where wsloop has {extra}"
            differences.append((key, text))
            continue
        for their, mine in zip(theirs[i1:i2], ours[j1:j2], strict=True):
            a, b = fields(their), fields(mine)
            for field in sorted(set(a) | set(b)):
                theirs_value, ours_value = a.get(field, "<none>"), b.get(field, "<none>")
                if theirs_value != ours_value:
                    key = f"{side} {name}: {their['event']} {field}"
                    text = f"ws4py {json.dumps(theirs_value)}, wsloop {json.dumps(ours_value)}"
                    differences.append((key, text))
    return differences


def group_of(side: str) -> str:
    return "servers" if side in programs.SERVER_PROGRAMS else "clients"


def candidate_keys(key: str) -> set[str]:
    """The exception keys that name a difference: its own, and with ``servers``/``clients`` for
    its program and ``*`` for its conversation."""
    side, rest = key.split(" ", 1)
    name, what = rest.split(":", 1)
    return {f"{s} {n}:{what}" for s in (side, group_of(side)) for n in (name, "*")}


def conversation_excused(key: str) -> bool:
    return not candidate_keys(key).isdisjoint(CONVERSATION_EXCEPTIONS)


def unexcused_differences(differences: list[tuple[str, str]]) -> list[str]:
    return [f"{key} -- {text}" for key, text in differences if not conversation_excused(key)]


SERVER_CASES = [
    (program, name) for program in programs.SERVER_PROGRAMS for name in programs.SERVER_CONVERSATIONS
]


@pytest.mark.parametrize(("program", "name"), SERVER_CASES, ids=[f"{p}-{n}" for p, n in SERVER_CASES])
def test_server_conversation(
    server_runs: dict[str, dict[str, list[dict[str, Any]]]], program: str, name: str
) -> None:
    """ws4py's server program (wsgiref, CherryPy) and its port: the same frames out, the same
    callbacks, the same argument types and values."""
    theirs, ours = (
        server_runs[f"ws4py {program}"].get(name, []),
        server_runs[f"wsloop {program}"].get(name, []),
    )
    assert any(e["event"] == "opened" for e in theirs), f"ws4py's own run is incomplete: {theirs}"
    problems = unexcused_differences(conversation_differences(program, name, theirs, ours))
    if name in WSLOOP_CLOSED_WHERE_EXCUSED:
        expected = WSLOOP_CLOSED_WHERE_EXCUSED[name]
        closed = [e["args"] for e in ours if e["event"] == "closed"]
        if (
            len(closed) != 1
            or len(closed[0]) != len(expected)
            or any(want.items() - got.items() for want, got in zip(expected, closed[0], strict=True))
        ):
            problems.append(f"wsloop's closed() args {closed}, expected once, matching {expected}")
    assert not problems, "\n".join(problems)


CLIENT_CASES = [
    (program, name) for program, (_, _, names) in programs.CLIENT_PROGRAMS.items() for name in names
]


@pytest.mark.parametrize(("program", "name"), CLIENT_CASES, ids=[f"{p}-{n}" for p, n in CLIENT_CASES])
def test_client_conversation(
    client_runs: dict[str, dict[str, list[dict[str, Any]]]], program: str, name: str
) -> None:
    """ws4py's client program (threaded, gevent) and its port, against the reference server."""
    theirs, ours = (
        client_runs[f"ws4py {program}"].get(name, []),
        client_runs[f"wsloop {program}"].get(name, []),
    )
    assert any(e["event"] == "closed" for e in theirs), f"ws4py's own run is incomplete: {theirs}"
    problems = unexcused_differences(conversation_differences(program, name, theirs, ours))
    problems += [json.dumps(e) for e in client_runs[f"wsloop {program}"].get("-", [])]  # a timeout, a crash
    assert not problems, "\n".join(problems)


def test_every_conversation_exception_is_still_needed(
    server_runs: dict[str, dict[str, list[dict[str, Any]]]],
    client_runs: dict[str, dict[str, list[dict[str, Any]]]],
) -> None:
    """Stale: an exception no difference matches, among the runs that completed (a wsloop
    program that could not start or crashed hides the differences behind it)."""
    keys: set[str] = set()
    unfinished: set[str] = set()
    sides = [
        (
            program,
            server_runs[f"ws4py {program}"],
            server_runs[f"wsloop {program}"],
            list(programs.SERVER_CONVERSATIONS),
        )
        for program in programs.SERVER_PROGRAMS
    ]
    for program, (_, _, names) in programs.CLIENT_PROGRAMS.items():
        sides.append((program, client_runs[f"ws4py {program}"], client_runs[f"wsloop {program}"], names))
    for side, theirs, ours, names in sides:
        if "-" in ours:  # the wsloop program exited early or timed out
            unfinished |= {side, group_of(side)}
        for name in names:
            for key, _ in conversation_differences(side, name, theirs.get(name, []), ours.get(name, [])):
                keys |= candidate_keys(key)
    stale = sorted(key for key in set(CONVERSATION_EXCEPTIONS) - keys if key.split(" ")[0] not in unfinished)
    assert not stale, f"exceptions that no difference needs any more: {stale}"
