#!/usr/bin/env python3
"""Check every TensorRT name the project's Python code uses against the real Python API of each release.

    python tools/check_trt_api.py [--oss-root DIR] [--no-rtx] [--json] [PATH ...]   (default PATH: pipeline/)
    python tools/check_trt_api.py --dump v11.1                                     (one release's names)

Surfaces (what each release defines):
* TensorRT 10.3, 10.13 and 11.1: parsed from the pybind11 sources of NVIDIA's open-source repository,
  `<oss-root>/<release>/python/src/**/*.cpp` (`py::class_<...>(m, "Name")`, `py::enum_`, `.def("name"`,
  `.def_property*`, `.def_readwrite`, `.def_static`, `.value("NAME"`, module-level `m.def`/`m.attr`), with class
  inheritance from the template arguments and nested scopes (`ILogger.Severity`). <oss-root> is
  $DVIT_TRT_OSS_ROOT, else ../shared/tensorrt-oss beside the repository.
* a few names that the `tensorrt` package's __init__.py adds in Python (PACKAGE_NAMES below);
* the installed TensorRT for RTX (`tensorrt_rtx`), by introspection, unless --no-rtx or not installed.

Uses (what the code touches), found in the AST under the conventions of pipeline/backend/tensorrt/: the module
object is `trt`, an attribute `.trt`, or the name a file imports tensorrt/tensorrt_rtx as; `trt.A.B` is name
`A.B`; `x.attr` is `Class.attr` when `x` is annotated `trt.Class` (parameter, annotated assignment, dataclass
field on `self`), or holds the result of a project function annotated `-> trt.Class`.

Findings (exit status 1):
* a used name missing from a release and not listed by any capability in backend.tensorrt.capabilities.CAPABILITIES, or listed
  but used in a function that never asks `has("<that capability>")`;
* a name that exists in no release at all (an invented name, e.g. trt.BuilderFlag.FAST_MATH_X);
* code the check cannot follow: TensorRT results assigned to unannotated names or chained
  (`builder.create_network(0).num_layers`), `getattr` with a computed name outside the backend's probes (BACKEND_OWNERS),
  `from tensorrt import ...`.
Without TensorRT-RTX installed, names only it defines (listed under a capability) cannot be verified and are
not reported; the check says so.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from pipeline.backend.tensorrt import CAPABILITIES

RELEASES = ("v10.3.0", "v10.13.3", "v11.1")
ENV_ROOT = "DVIT_TRT_OSS_ROOT"
TRT_MODULES = ("tensorrt", "tensorrt_rtx")
# Defined by the tensorrt package's __init__.py (python/packaging/bindings_wheel/tensorrt/__init__.py in
# NVIDIA/TensorRT; the installed tensorrt_rtx_bindings/__init__.py is the same file), not by the bindings.
PACKAGE_NAMES = {"__version__", "volume", "nptype", "common_enter", "common_exit"}
PACKAGE_MEMBERS = {"DataType": {"itemsize"}, "Logger": {"Severity"}}
ENUM_IMPLICIT = {"name", "value"}
# The modules allowed computed getattr on TensorRT: the probes and the builder's names taken from the capability table
# (pipeline/backend/tensorrt/).
BACKEND_OWNERS = ("pipeline/backend/tensorrt/capabilities.py", "pipeline/backend/tensorrt/loader.py",
                  "pipeline/backend/tensorrt/builder.py")


# ---------------------------------------------------------------------------------------------- surfaces
@dataclass
class Surface:
    """The Python names one TensorRT release defines."""

    label: str
    module: set[str] = field(default_factory=set)
    members: dict[str, set[str]] = field(default_factory=dict)  # class ("ILogger.Severity") -> own members
    bases: dict[str, list[str]] = field(default_factory=dict)
    enums: set[str] = field(default_factory=set)

    def is_class(self, name: str) -> bool:
        return name in self.members

    def class_members(self, name: str) -> set[str]:
        seen: set[str] = set()
        out: set[str] = set()
        todo = [name]
        while todo:
            c = todo.pop()
            if c in seen:
                continue
            seen.add(c)
            out |= self.members.get(c, set())
            todo += self.bases.get(c, [])
        return out

    def has(self, dotted: str) -> bool:
        """Whether `dotted` ("Name", "Class.member", "Outer.Inner.MEMBER") exists in this release."""
        parts = dotted.split(".")
        if parts[0] not in self.module and not self.is_class(parts[0]):
            return False
        cls: str | None = parts[0] if self.is_class(parts[0]) else None
        for part in parts[1:]:
            if cls is None:
                return False  # an attribute of a function or of a method's result: not a TensorRT name
            if _implicit(part) or (cls in self.enums and part in ENUM_IMPLICIT):
                continue
            if part not in self.class_members(cls):
                return False
            nested = self._nested(cls, part)
            if nested is not None:
                cls = nested
            elif cls not in self.enums:
                cls = None  # a method or property; an enum value keeps its enum's members (DataType.HALF.itemsize)
        return True

    def _nested(self, cls: str, part: str) -> str | None:
        """The class `cls.part` names, also through a base (Logger.Severity is ILogger.Severity)."""
        todo, seen = [cls], set()
        while todo:
            c = todo.pop()
            if self.is_class(f"{c}.{part}"):
                return f"{c}.{part}"
            seen.add(c)
            todo += [b for b in self.bases.get(c, []) if b not in seen]
        return None

    def names(self) -> list[str]:
        out = set(self.module)
        for c, members in self.members.items():
            out.add(c)
            out |= {f"{c}.{m}" for m in members}
        return sorted(out)


def _implicit(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


_COMMENT_OR_STRING = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.DOTALL)
_DECL = re.compile(r"py::(class_|enum_)\s*<")
_DEF = re.compile(r'\.(?:def\w*|value)\s*\(\s*"(\w+)"')
_MODULE_DEF = re.compile(r'\bm\s*\.\s*(?:def|attr|add_object)\s*\(\s*"(\w+)"')
_BIND_VECTOR = re.compile(r'py::bind_(?:vector|map)\s*<.*?>\s*\(\s*m\s*,\s*"(\w+)"')
BIND_VECTOR_MEMBERS = {"append", "clear", "count", "extend", "insert", "pop", "remove"}  # pybind11/stl_bind.h


def _mask(src: str) -> tuple[str, str]:
    """(text with comments blanked, the same with string and char literal contents blanked too): equal
    lengths, so brackets and semicolons are found in the second and names read from the first."""
    text, masked = [], []
    pos = 0
    for m in _COMMENT_OR_STRING.finditer(src):
        text.append(src[pos:m.start()])
        masked.append(src[pos:m.start()])
        tok = m.group()
        if tok[0] in "\"'":
            text.append(tok)
            masked.append(tok[0] + " " * (len(tok) - 2) + tok[-1])
        else:
            blank = re.sub(r"[^\n]", " ", tok)
            text.append(blank)
            masked.append(blank)
        pos = m.end()
    text.append(src[pos:])
    masked.append(src[pos:])
    return "".join(text), "".join(masked)


def _close(src: str, i: int, open_: str, close: str) -> int:
    """Index just past the bracket closing the one opened just before `i` (in masked text)."""
    depth = 1
    while depth:
        depth += (src[i] == open_) - (src[i] == close)
        i += 1
    return i


def _statement_end(src: str, i: int) -> int:
    """Index of the `;` ending the statement that starts at `i` (in masked text)."""
    depth = 0
    while not (src[i] == ";" and depth <= 0):
        depth += (src[i] in "([{") - (src[i] in ")]}")
        i += 1
    return i


def _split_top(s: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in s:
        depth += (ch in "<([") - (ch in ">)]")
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [*parts, cur.strip()] if cur.strip() else parts


def parse_bindings(src_dir: str | os.PathLike[str], label: str) -> Surface:
    """The names a release's pybind11 sources define."""
    files = sorted(Path(src_dir).rglob("*.cpp"))
    if not files:
        raise FileNotFoundError(f"no pybind11 sources (*.cpp) under {src_dir}")
    surface = Surface(label)
    cpp_to_py: dict[str, str] = {}
    pending_bases: list[tuple[str, list[str]]] = []
    for path in files:
        src, masked = _mask(path.read_text())
        variables: dict[str, str] = {}
        for m in _DECL.finditer(masked):
            t_end = _close(masked, m.end(), "<", ">")
            targs = _split_top(src[m.end(): t_end - 1])
            head = re.match(r'\s*(\w+)?\s*[({]\s*([\w:]+)\s*,\s*"(\w+)"', src[t_end: t_end + 300])
            if not head:
                continue
            var, scope, py_name = head.groups()
            parent = variables.get(scope) if scope != "m" else None
            qual = f"{parent}.{py_name}" if parent else py_name
            if parent:
                surface.members.setdefault(parent, set()).add(py_name)
            cpp = re.sub(r"\s+", "", targs[0]).split("::")[-1]
            cpp_to_py.setdefault(cpp, qual)
            cpp_to_py.setdefault(re.sub(r"\s+", "", targs[0]), qual)
            pending_bases.append((qual, [re.sub(r"\s+", "", t) for t in targs[1:]]))
            surface.members.setdefault(qual, set())
            if m.group(1) == "enum_":
                surface.enums.add(qual)
            end = _statement_end(masked, m.start())
            body = src[m.start(): end]
            names = set(_DEF.findall(body))
            surface.members[qual] |= names
            if parent and ".export_values()" in body:
                surface.members[parent] |= names
            if var:
                variables[var] = qual
                for vm in re.finditer(rf"\b{re.escape(var)}\s*\.", masked[end:]):
                    start = end + vm.start()
                    surface.members[qual] |= set(_DEF.findall(src[start: _statement_end(masked, start)]))
        surface.module |= set(_MODULE_DEF.findall(src))
        for name in _BIND_VECTOR.findall(src):
            surface.members.setdefault(name, set()).update(BIND_VECTOR_MEMBERS)
    for qual, targs in pending_bases:
        bases = []
        for t in targs:
            py = cpp_to_py.get(t) or cpp_to_py.get(t.split("::")[-1])
            if py and py != qual and not t.startswith("std::"):
                bases.append(py)
        surface.bases[qual] = bases
    surface.module |= {c for c in surface.members if "." not in c} | PACKAGE_NAMES
    for cls, extra in PACKAGE_MEMBERS.items():
        if cls in surface.members:
            surface.members[cls] |= extra
    return surface


def introspect_module(mod: Any, label: str) -> Surface:
    """The names an importable TensorRT flavour defines, read with dir()."""
    surface = Surface(label)
    for name in dir(mod):
        obj = getattr(mod, name)
        surface.module.add(name)
        if isinstance(obj, type):
            _introspect_class(surface, name, obj)
    return surface


def _introspect_class(surface: Surface, qual: str, cls: type) -> None:
    surface.members[qual] = set(dir(cls))
    if hasattr(cls, "__members__"):
        surface.enums.add(qual)
    for name in dir(cls):
        obj = getattr(cls, name, None)
        if (isinstance(obj, type) and not _implicit(name) and obj.__module__ == cls.__module__ and obj is not cls
                and qual.count(".") < 2):
            _introspect_class(surface, f"{qual}.{name}", obj)


def oss_root() -> Path:
    return Path(os.environ.get(ENV_ROOT) or REPO.parent / "shared" / "tensorrt-oss")


def load_surfaces(root: str | os.PathLike[str] | None = None, releases: Iterable[str] = RELEASES,
                  rtx: bool = True) -> list[Surface]:
    root = Path(root) if root else oss_root()
    surfaces = []
    for rel in releases:
        src = root / rel / "python" / "src"
        if not src.is_dir():
            raise FileNotFoundError(f"TensorRT {rel} binding sources not found at {src}: set ${ENV_ROOT} to the "
                                    "folder holding v10.3.0/, v10.13.3/ and v11.1/ (see ../shared/tensorrt-oss)")
        surfaces.append(parse_bindings(src, f"TensorRT {rel.lstrip('v')}"))
    if rtx:
        try:
            mod = importlib.import_module("tensorrt_rtx")
        except ImportError:
            mod = None
        if mod is not None:
            surfaces.append(introspect_module(mod, f"TensorRT-RTX {mod.__version__} (installed)"))
    return surfaces


# ---------------------------------------------------------------------------------------------- uses
@dataclass(frozen=True)
class Use:
    file: str
    line: int
    name: str  # "BuilderFlag.FP16", "IBuilderConfig.set_flag", "Builder"
    function: str  # enclosing function ("" at module level)
    guards: frozenset[str] = frozenset()  # capabilities the enclosing function asks has() about
    annotation: bool = False  # only in a type annotation (never executed)


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


def _annotation_class(node: ast.AST | None, aliases: frozenset[str] = frozenset({"trt"})) -> str | None:
    """'IBuilderConfig' for trt.IBuilderConfig, "trt.IBuilderConfig", trt.X | None, Optional[trt.X]."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError:
            return None
    chain = _chain(node, aliases)
    if chain and chain[0] == ["trt"] and len(chain[1]) == 1:
        return chain[1][0]
    if chain and chain[0] == ["trt"] and len(chain[1]) == 2 and chain[1][0][:1].isupper() and chain[1][1][:1].isupper():
        return ".".join(chain[1])
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _annotation_class(node.left, aliases) or _annotation_class(node.right, aliases)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "Optional":
        return _annotation_class(node.slice, aliases)
    return None


def _chain(node: ast.AST, aliases: frozenset[str] = frozenset({"trt"})) -> tuple[list[str], list[str]] | None:
    """(base, attrs) for a.b.c: base ['trt'] when the chain runs through the module (a name in `aliases`, or
    an attribute `.trt`), else [first name]."""
    attrs: list[str] = []
    cur = node
    while isinstance(cur, ast.Attribute):
        attrs.insert(0, cur.attr)
        cur = cur.value
    if not isinstance(cur, ast.Name):
        return None
    names = [cur.id, *attrs]
    if cur.id in aliases:
        return ["trt"], attrs
    if "trt" in names:
        i = len(names) - 1 - names[::-1].index("trt")
        return ["trt"], names[i + 1:]
    return [cur.id], attrs


class _FileScanner(ast.NodeVisitor):
    def __init__(self, path: Path, rel: str, returns: dict[str, str]) -> None:
        self.path, self.rel, self.returns = path, rel, returns
        self.uses: list[Use] = []
        self.findings: list[Finding] = []
        self.scopes: list[dict[str, str]] = [{}]
        self.functions: list[str] = []
        self.guards: list[frozenset[str]] = [frozenset()]
        self.fields: dict[str, dict[str, str]] = {}  # class -> self attribute -> TensorRT class
        self.classes: list[str] = []
        self.in_annotation = False
        self.aliases = frozenset({"trt"})

    def set_aliases(self, tree: ast.AST) -> None:
        """`trt`, plus every name a TensorRT module is imported as in this file."""
        names = {"trt"}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] in TRT_MODULES}
        self.aliases = frozenset(names)

    # -- helpers
    def _find(self, node: ast.AST, message: str) -> None:
        self.findings.append(Finding(self.rel, getattr(node, "lineno", 0), message))

    def _use(self, node: ast.AST, name: str) -> None:
        self.uses.append(Use(self.rel, getattr(node, "lineno", 0), name, ".".join(self.functions),
                             self.guards[-1], self.in_annotation))

    def _type_of(self, base: list[str], attrs: list[str]) -> tuple[str | None, list[str]]:
        """(TensorRT class of the value the chain starts from, the attributes applied to it)."""
        if base[0] == "self" and attrs and self.classes:
            cls = self.fields.get(self.classes[-1], {}).get(attrs[0])
            if cls:
                return cls, attrs[1:]
        for scope in reversed(self.scopes):
            if base[0] in scope:
                return scope[base[0]], attrs
        return None, attrs

    def _is_trt(self, node: ast.AST) -> bool:
        """Whether `node` evaluates to a TensorRT object (a module chain, a typed name, or a call of one)."""
        if isinstance(node, ast.Call):
            return self._is_trt(node.func) and not (isinstance(node.func, ast.Name))
        chain = _chain(node, self.aliases)
        if chain is None:
            return False
        base, attrs = chain
        if base == ["trt"]:
            return bool(attrs) and not any(_implicit(a) for a in attrs)
        cls, rest = self._type_of(base, attrs)
        return cls is not None and not any(_implicit(a) for a in rest)

    def _scope_for(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, str]:
        scope: dict[str, str] = {}
        args = fn.args
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if a is not None and (cls := _annotation_class(a.annotation, self.aliases)):
                scope[a.arg] = cls
        for node in ast.walk(fn):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if cls := _annotation_class(node.annotation, self.aliases):
                    scope[node.target.id] = cls
            elif (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                  and isinstance(node.value, ast.Call)):
                f = node.value.func
                fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
                chain = _chain(f, self.aliases)
                if fname in self.returns and not (chain and chain[0] == ["trt"]):
                    scope[node.targets[0].id] = self.returns[fname]
        return scope

    @staticmethod
    def _guards_in(fn: ast.AST) -> set[str]:
        out = set()
        for node in ast.walk(fn):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "has"
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                out.add(node.args[0].value)
            elif (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
                  and isinstance(node.slice.value, str) and node.slice.value in CAPABILITIES):
                out.add(node.slice.value)
        return out

    # -- visitors
    def visit_Module(self, node: ast.Module) -> None:
        for stmt in node.body:  # module-level annotated names
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and (cls := _annotation_class(stmt.annotation, self.aliases))):
                self.scopes[0][stmt.target.id] = cls
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module and node.module.split(".")[0] in TRT_MODULES:  # not `from .tensorrt import`
            self._find(node, f"from {node.module} import ...: use `trt.<name>` so the API check sees it")

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        fields = self.fields.setdefault(node.name, {})
        for stmt in node.body:
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and (cls := _annotation_class(stmt.annotation, self.aliases))):
                fields[stmt.target.id] = cls
        for sub in ast.walk(node):
            if (isinstance(sub, ast.AnnAssign) and isinstance(sub.target, ast.Attribute)
                    and isinstance(sub.target.value, ast.Name) and sub.target.value.id == "self"
                    and (cls := _annotation_class(sub.annotation, self.aliases))):
                fields[sub.target.attr] = cls
        self.classes.append(node.name)
        self.generic_visit(node)
        self.classes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node.name)
        self.scopes.append(self._scope_for(node))
        self.guards.append(self.guards[-1] | self._guards_in(node))
        for d in node.decorator_list:
            self.visit(d)
        self._visit_annotations(node)
        for stmt in node.body:
            self.visit(stmt)
        self.guards.pop()
        self.scopes.pop()
        self.functions.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def _visit_annotations(self, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        args = fn.args
        notes = [a.annotation for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
                 if a is not None and a.annotation is not None]
        for default in [*args.defaults, *args.kw_defaults]:
            if default is not None:
                self.visit(default)
        for ann in [*notes, fn.returns]:
            self._visit_annotation(ann)

    def _visit_annotation(self, ann: ast.AST | None) -> None:
        if ann is None:
            return
        if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
            try:
                ann = ast.parse(ann.value, mode="eval").body
            except SyntaxError:
                return
        self.in_annotation = True
        self.visit(ann)
        self.in_annotation = False

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._visit_annotation(node.annotation)
        if node.value is not None:
            self.visit(node.value)
        self.visit(node.target)

    def visit_Assign(self, node: ast.Assign) -> None:
        value = node.value
        scope = self.scopes[-1]
        for target in node.targets:
            names = [target] if isinstance(target, ast.Name) else [
                e for e in getattr(target, "elts", []) if isinstance(e, ast.Name)]
            for t in names:
                if t.id not in scope and t.id not in self.aliases and self._is_trt(value):
                    self._find(node, f"`{t.id} = ...` holds a TensorRT value: annotate it (`{t.id}: trt.<Class> = "
                                     "...`) so the API check knows its class")
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:
        scope = self.scopes[-1]
        if self._is_trt(node.iter) and isinstance(node.target, ast.Name) and node.target.id not in scope:
            self._find(node, f"loop variable `{node.target.id}` iterates over a TensorRT value: declare "
                             f"`{node.target.id}: trt.<Class>` before the loop")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Name) and f.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2:
            target, name = node.args[0], node.args[1]
            if self._is_trt(target) or (isinstance(target, ast.Name) and target.id in self.aliases):
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    synthetic = ast.Attribute(value=target, attr=name.value, ctx=ast.Load())
                    ast.copy_location(synthetic, node)
                    self.visit_Attribute(synthetic)
                    for a in node.args[2:]:
                        self.visit(a)
                    return
                if Path(self.rel).as_posix() not in BACKEND_OWNERS:
                    self._find(node, f"{f.id}() with a computed name on TensorRT: only {', '.join(BACKEND_OWNERS)} may "
                                     "do that (behind its probes)")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain = _chain(node, self.aliases)
        if chain is None:
            inner = node
            while isinstance(inner, ast.Attribute):
                inner = inner.value  # type: ignore[assignment]
            if isinstance(inner, (ast.Call, ast.Subscript)) and self._is_trt(
                    inner.func if isinstance(inner, ast.Call) else inner.value):
                self._find(node, f"`.{node.attr}` on the result of a TensorRT call: assign the result to an "
                                 "annotated name first")
            self.visit(inner)
            return
        base, attrs = chain
        if base == ["trt"]:
            self._module_chain(node, attrs)
        else:
            cls, rest = self._type_of(base, attrs)
            if cls is not None and rest and not _implicit(rest[0]):
                self._use(node, f"{cls}.{rest[0]}")
                if len(rest) > 1 and not _implicit(rest[1]) and rest[1] not in ENUM_IMPLICIT:
                    self._chained(node, f"{cls}.{rest[0]}", rest[1:])

    def _module_chain(self, node: ast.AST, attrs: list[str]) -> None:
        """trt.A.B.C -> name "A.B.C" (the check resolves classes, nested classes and enum values), stopping at
        dunders and at an enum value's name/value."""
        parts: list[str] = []
        for i, a in enumerate(attrs):
            if _implicit(a) or (i >= 2 and a in ENUM_IMPLICIT):
                break
            parts.append(a)
        if parts:
            self._use(node, ".".join(parts))

    def _chained(self, node: ast.AST, name: str, rest: list[str]) -> None:
        self._find(node, f"`{name}.{'.'.join(rest)}`: the check cannot tell the class of {name}; assign it to an "
                         "annotated name first")


def _project_returns(trees: Iterable[ast.AST]) -> dict[str, str]:
    """Functions annotated `-> trt.Class`, by name (names defined with two different classes are dropped)."""
    seen: dict[str, set[str]] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (cls := _annotation_class(node.returns)):
                seen.setdefault(node.name, set()).add(cls)
    return {name: next(iter(c)) for name, c in seen.items() if len(c) == 1}


def python_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(q for q in p.rglob("*.py") if "__pycache__" not in q.parts)
        else:
            yield p


def scan(paths: Iterable[str | os.PathLike[str]], root: Path = REPO) -> tuple[list[Use], list[Finding]]:
    files = list(python_files(paths))
    trees = {f: ast.parse(f.read_text(), filename=str(f)) for f in files}
    returns = _project_returns(trees.values())
    uses: list[Use] = []
    findings: list[Finding] = []
    for f, tree in trees.items():
        rel = str(f.resolve().relative_to(root)) if f.resolve().is_relative_to(root) else str(f)
        s = _FileScanner(f, rel, returns)
        s.set_aliases(tree)
        s.visit(tree)
        uses += s.uses
        findings += s.findings
    return uses, findings


# ---------------------------------------------------------------------------------------------- check
def guarded_names() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for cap, c in CAPABILITIES.items():
        for n in c.names:
            out.setdefault(n, set()).add(cap)
    return out


def has_rtx(surfaces: list[Surface]) -> bool:
    return any(s.label.startswith("TensorRT-RTX") for s in surfaces)


def check(uses: Iterable[Use], surfaces: list[Surface]) -> list[Finding]:
    """Findings for uses missing from some release. Without the TensorRT-RTX surface (not installed here), a
    name found in no release but listed by a capability may be TensorRT-RTX's own: it is not reported."""
    guarded = guarded_names()
    rtx = has_rtx(surfaces)
    findings = []
    for u in uses:
        missing = [s.label for s in surfaces if not s.has(u.name)]
        if not missing:
            continue
        if len(missing) == len(surfaces):
            if rtx or u.name not in guarded:
                findings.append(Finding(u.file, u.line, f"trt.{u.name} exists in no TensorRT release checked "
                                                        f"({', '.join(s.label for s in surfaces)})"))
        elif u.annotation:
            continue
        elif u.name not in guarded:
            findings.append(Finding(u.file, u.line, f"trt.{u.name} is missing from {', '.join(missing)}: list it "
                                                    "under a capability in backend.tensorrt.capabilities.CAPABILITIES and use it "
                                                    "behind backend.has(...)"))
        elif not guarded[u.name] & u.guards:
            caps = " or ".join(f'has("{c}")' for c in sorted(guarded[u.name]))
            findings.append(Finding(u.file, u.line, f"trt.{u.name} is missing from {', '.join(missing)}, and "
                                                    f"{u.function or 'module level'} never asks {caps}"))
    return findings


def check_capabilities(surfaces: list[Surface]) -> list[Finding]:
    """Every name the capability table lists must exist in at least one release (no invented guards); checked
    only with the TensorRT-RTX surface present, since some names are its own."""
    if not has_rtx(surfaces):
        return []
    return [Finding("pipeline/backend/tensorrt/capabilities.py", 0, f"capability {cap}: trt.{n} exists in no release checked")
            for cap, c in CAPABILITIES.items() for n in c.names if not any(s.has(n) for s in surfaces)]


def run(paths: Iterable[str | os.PathLike[str]], surfaces: list[Surface]) -> tuple[list[Use], list[Finding]]:
    uses, findings = scan(paths)
    return uses, findings + check(uses, surfaces) + check_capabilities(surfaces)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", default=[str(REPO / "pipeline")], help="Python files or folders")
    p.add_argument("--oss-root", default=None, help=f"folder with v10.3.0/ v10.13.3/ v11.1/ (default ${ENV_ROOT} "
                                                    "or ../shared/tensorrt-oss)")
    p.add_argument("--no-rtx", action="store_true", help="do not check against the installed tensorrt_rtx")
    p.add_argument("--json", action="store_true", help="print uses and findings as JSON")
    p.add_argument("--dump", metavar="RELEASE", help="print every name RELEASE (e.g. v11.1, or rtx) defines")
    args = p.parse_args(argv)
    try:
        if args.dump:
            s = (load_surfaces(args.oss_root, (), rtx=True)[0] if args.dump == "rtx"
                 else load_surfaces(args.oss_root, (args.dump,), rtx=False)[0])
            print("\n".join(s.names()))
            return 0
        surfaces = load_surfaces(args.oss_root, rtx=not args.no_rtx)
    except (FileNotFoundError, IndexError) as e:
        print(f"check_trt_api: {e}", file=sys.stderr)
        return 2
    uses, findings = run(args.paths, surfaces)
    if args.json:
        print(json.dumps({"surfaces": [s.label for s in surfaces], "uses": [asdict(u) | {"guards": sorted(u.guards)}
                                                                           for u in uses],
                          "findings": [asdict(f) for f in findings]}, indent=2))
    else:
        names = sorted({u.name for u in uses})
        print(f"checked {len(uses)} uses of {len(names)} TensorRT names against {', '.join(s.label for s in surfaces)}")
        if not has_rtx(surfaces):
            print("TensorRT-RTX not checked (not installed, or --no-rtx): names only it defines were not verified")
        for f in findings:
            print(f)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
