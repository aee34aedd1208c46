"""The module structure of txutp, checked on the source (``ast``; nothing is imported).

1. **No import cycle.** The graph has one edge per ``import`` of a txutp module from another,
   at module level or inside a function (a lazy import is still a dependency), and for a
   ``importlib.import_module`` of a txutp module name written in the importing module (the lazy
   exports of ``txutp/__init__.py``). ``from txutp.engine import X`` is an edge to the package
   (its ``__init__``), or to ``txutp.engine.X`` when that is a module; importing a submodule
   adds no edge to its parent packages. The graph must be acyclic. Imports under
   ``if TYPE_CHECKING:`` are kept apart: they must not close a cycle either, since such an
   import is how a cycle is usually hidden.
2. **No module reaches into another's private names.** Within txutp:

   * no ``from <txutp module> import _name`` of a leading-underscore name (dunders such as
     ``__version__`` are public; a private *submodule* imported by a module of its own package,
     ``from . import _packet`` in ``txutp/engine``, is a module import, not a name);
   * no ``obj._name`` (nor ``getattr(obj, "_name")``) where ``obj`` is not ``self``, ``cls``
     or ``super()``, unless ``_name`` belongs to the module doing it: defined there as a class
     attribute or method, a ``__slots__`` entry, a ``self._name =`` assignment or a
     module-level name. So ``other._seq`` in a class's own ``__eq__`` passes, and
     ``conn._recv`` outside the module of ``UTPConnection`` does not. Attributes of an
     imported module (``_packet._HEADER``) are always another module's.

   The exceptions are listed in ``ALLOWED`` with the reason for each.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "txutp"

#: (file relative to the repository root, private name) -> why the access is fine. Keep it short.
ALLOWED: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the txutp package, by dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = modules()


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def resolve(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module name of a ``from ... import`` (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    package = importer.split(".")
    if MODULES[importer].name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    type_checking: bool
    lazy: bool  # inside a function

    def where(self) -> str:
        kind = " (TYPE_CHECKING)" if self.type_checking else " (in a function)" if self.lazy else ""
        return f"{MODULES[self.importer].relative_to(ROOT)}:{self.line}: {self.importer} -> {self.imported}{kind}"


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def walk(node: ast.AST, type_checking: bool = False, lazy: bool = False) -> Iterator[tuple[ast.AST, bool, bool]]:
    """Every node under ``node`` with whether it is under ``if TYPE_CHECKING:`` and inside a function."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and is_type_checking(child.test):
            yield child, type_checking, lazy
            for stmt in child.body:
                yield stmt, True, lazy
                yield from walk(stmt, True, lazy)
            for stmt in child.orelse:
                yield stmt, type_checking, lazy
                yield from walk(stmt, type_checking, lazy)
            continue
        inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield child, type_checking, lazy
        yield from walk(child, type_checking, inner)


def imports_of(name: str, source: str | None = None) -> list[Import]:
    """The txutp modules that module ``name`` imports (``source``: its text, by default read from its file)."""
    tree = ast.parse(MODULES[name].read_text() if source is None else source, str(MODULES[name]))
    found: list[Import] = []
    dynamic = False
    for node, type_checking, lazy in walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve(name, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in MODULES else base)
        elif isinstance(node, ast.Call) and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
        ):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                targets = [arg.value]
                lazy = True
            else:
                dynamic = True
        for target in targets:
            if target in MODULES and target != name:
                found.append(Import(name, target, getattr(node, "lineno", 0), type_checking, lazy))
    if dynamic:  # import_module(variable): every txutp module name written in this module counts
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in MODULES and node.value != name:
                found.append(Import(name, str(node.value), node.lineno, False, True))
    return list(dict.fromkeys(found))  # one edge per statement


def find_cycle(edges: dict[str, list[Import]]) -> list[Import] | None:
    """One cycle of the graph (its edges in order), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[Import] = []

    def visit(node: str) -> list[Import] | None:
        state[node] = 1
        for edge in edges.get(node, []):
            if state.get(edge.imported) == 1:
                walked = [*path, edge]
                start = next(i for i, e in enumerate(walked) if e.importer == edge.imported)
                return walked[start:]
            if edge.imported not in state:
                path.append(edge)
                cycle = visit(edge.imported)
                if cycle is not None:
                    return cycle
                path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle is not None:
                return cycle
    return None


def all_imports() -> list[Import]:
    return [i for name in MODULES for i in imports_of(name)]


def graph(include_type_checking: bool) -> dict[str, list[Import]]:
    edges: dict[str, list[Import]] = {name: [] for name in MODULES}
    for i in all_imports():
        if include_type_checking or not i.type_checking:
            edges[i.importer].append(i)
    return edges


def all_cycles(edges: dict[str, list[Import]]) -> list[list[Import]]:
    """Cycles found one at a time, removing one edge of each, so every independent cycle shows."""
    edges = {k: list(v) for k, v in edges.items()}
    cycles = []
    while (cycle := find_cycle(edges)) is not None and len(cycles) < 20:
        cycles.append(cycle)
        last = cycle[-1]
        edges[last.importer] = [e for e in edges[last.importer] if e.imported != last.imported]
    return cycles


def describe(cycles: list[list[Import]]) -> str:
    return "\n".join("cycle:\n  " + "\n  ".join(e.where() for e in c) for c in cycles)


# ---------------------------------------------------------------------- private names


@dataclass(frozen=True)
class Access:
    path: str  # relative to the repository root
    line: int
    name: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.name} ({self.what})"


def own_names(tree: ast.Module) -> set[str]:
    """The private names a module defines: its module-level names, class attributes and methods,
    ``__slots__`` entries and ``self._x =`` assignments."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(stmt.name)
                elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                    for target in targets:
                        if isinstance(target, ast.Name):
                            names.add(target.id)
                            if target.id == "__slots__" and stmt.value is not None:
                                names.update(
                                    n.value
                                    for n in ast.walk(stmt.value)
                                    if isinstance(n, ast.Constant) and isinstance(n.value, str)
                                )
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            names.add(node.attr)
    return {n for n in names if is_private(n)}


def imported_modules(tree: ast.Module, name: str) -> set[str]:
    """Local names bound to a module by ``import x`` / ``import x as y`` / ``from p import module``."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = resolve(name, node)
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    bound.add(alias.asname or alias.name)
    return bound


def private_accesses_in(name: str, source: str | None = None) -> list[Access]:
    """Module ``name``'s uses of other modules' private names (``source``: as for :func:`imports_of`)."""
    path = MODULES[name]
    rel = str(path.relative_to(ROOT))
    tree = ast.parse(path.read_text() if source is None else source, rel)
    own = own_names(tree)
    module_aliases = imported_modules(tree, name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Access] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = resolve(name, node)
            if base != name and (base == "txutp" or base.startswith("txutp.")):
                for alias in node.names:
                    if f"{base}.{alias.name}" in MODULES and base == package:
                        continue  # a private submodule of the importer's own package
                    if is_private(alias.name):
                        found.append(Access(rel, node.lineno, alias.name, f"imported from {base}"))
            continue
        if isinstance(node, ast.Attribute):
            obj, attr = node.value, node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            obj, attr = node.args[0], node.args[1].value
        else:
            continue
        if not is_private(attr):
            continue
        if isinstance(obj, ast.Name) and obj.id in ("self", "cls"):
            continue
        if isinstance(obj, ast.Call) and isinstance(obj.func, ast.Name) and obj.func.id == "super":
            continue
        on_module = isinstance(obj, ast.Name) and obj.id in module_aliases
        if attr in own and not on_module:
            continue
        found.append(Access(rel, node.lineno, attr, f"on {ast.unparse(obj)}"))
    return sorted(set(found), key=lambda a: (a.line, a.name))


def private_accesses() -> list[Access]:
    return [a for name in MODULES for a in private_accesses_in(name)]


# ---------------------------------------------------------------------- the tests


def test_the_scan_sees_the_package() -> None:
    """The helpers find the modules and their imports (a scan that sees nothing proves nothing)."""
    assert {"txutp", "txutp.engine", "txutp.endpoints", "txutp.transport"} <= set(MODULES)
    imported = {(i.importer, i.imported) for i in all_imports()}
    assert ("txutp", "txutp.engine") in imported
    assert ("txutp.simulator", "txutp.engine") in imported
    assert ("txutp", "txutp.endpoints") in imported  # the lazy export, through import_module


def test_the_scans_catch_what_they_look_for() -> None:
    """The two scans on a made-up ``txutp/cli.py``: every kind of import and of private access."""
    source = textwrap.dedent(
        """\
        from typing import TYPE_CHECKING
        from .engine import _connection
        from .transport import _helper, UTPTransport
        from . import _multiplexer
        if TYPE_CHECKING:
            from .endpoints import UTPClientEndpoint
        class Mine:
            __slots__ = ("_own",)
            def f(self, other, mux):
                self._x, other._own, super()._y, mux.__class__
                mux._flush(), getattr(mux, "_state"), _multiplexer._own
                import txutp.tap
        """
    )
    imports = {(i.imported, i.type_checking, i.lazy) for i in imports_of("txutp.cli", source)}
    assert imports == {
        ("txutp.engine._connection", False, False),
        ("txutp.transport", False, False),
        ("txutp._multiplexer", False, False),
        ("txutp.endpoints", True, False),
        ("txutp.tap", False, True),
    }
    accesses = [(a.line, a.name) for a in private_accesses_in("txutp.cli", source)]
    assert accesses == [(2, "_connection"), (3, "_helper"), (11, "_flush"), (11, "_own"), (11, "_state")]
    cycle = find_cycle({"a": [Import("a", "b", 1, False, False)], "b": [Import("b", "a", 2, False, True)]})
    assert cycle is not None and [(e.importer, e.imported) for e in cycle] == [("a", "b"), ("b", "a")]


def test_no_import_cycle() -> None:
    cycles = all_cycles(graph(include_type_checking=False))
    assert not cycles, "import cycles among txutp modules:\n" + describe(cycles)


def test_type_checking_imports_hide_no_cycle() -> None:
    """An ``if TYPE_CHECKING:`` import may not close a cycle: the cycle is real, only hidden."""
    cycles = [c for c in all_cycles(graph(include_type_checking=True)) if any(e.type_checking for e in c)]
    assert not cycles, "cycles closed by TYPE_CHECKING imports:\n" + describe(cycles)


def test_no_module_uses_another_modules_private_names() -> None:
    found = [a for a in private_accesses() if (a.path, a.name) not in ALLOWED]
    assert not found, f"{len(found)} accesses to another module's private names:\n" + "\n".join(map(str, found))


def test_every_allowed_exception_is_still_needed() -> None:
    used = {(a.path, a.name) for a in private_accesses()}
    stale = sorted(set(ALLOWED) - used)
    assert not stale, f"ALLOWED lists accesses that no longer happen: {stale}"
