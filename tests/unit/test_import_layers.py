"""The import graph of our packages keeps its shape: no cycles, layers that only point down.

The graph is built from the source with ``ast``; nothing is imported, so a module that needs
root, a kernel or grpc is read like any other. Every import counts: at the top, inside a
function (the lazy ones that keep start-up cheap) and under ``TYPE_CHECKING``, because each of
them is a dependency a reader has to follow.

The rules live in the tables below, one row per rule, so another package's rules are rows too:
- LAYERS: per package, its layers from the bottom up; a module may import its own layer and
  the ones below, never one above (the longest matching prefix gives a module its layer);
- SELF_CONTAINED: libraries that import nothing of their package outside themselves;
- FORBIDDEN: (importer, imported, why) pairs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "overlayctl")

# Bottom first. The package's own __init__ (a version string) is the bottom layer by itself.
LAYERS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "agent": (
        ("the package", ("agent",)),
        (
            "libraries",
            ("agent.net", "agent.http.wire", "agent.logs", "agent.notify", "agent.files"),
        ),
        ("etcd client", ("agent.etcd",)),
        ("subnets and leases", ("agent.subnet",)),
        ("data planes, rules, HTTP", ("agent.backends", "agent.rules", "agent.http")),
        ("options", ("agent.options",)),
        ("daemon", ("agent.daemon", "agent.report", "agent.hooks")),
        ("entry point", ("agent.main",)),
    ),
    "overlayctl": (
        ("the package", ("overlayctl",)),
        (
            "words, errors, the hosts' paths",
            ("overlayctl.text", "overlayctl.errors", "overlayctl.paths"),
        ),
        ("inventory", ("overlayctl.inventory",)),
        ("local state, the lab", ("overlayctl.pki", "overlayctl.wheelhouse", "overlayctl.lab")),
        ("planning (pure)", ("overlayctl.plan",)),
        ("SSH", ("overlayctl.remote",)),
        ("etcd over SSH", ("overlayctl.etcd",)),
        (
            "phases and their engine, doctor's facts, probes and checks",
            ("overlayctl.phases", "overlayctl.doctor"),
        ),
        ("actions", ("overlayctl.actions", "overlayctl.vagrant")),
        ("tables, diffs, JSON", ("overlayctl.output",)),
        ("command line", ("overlayctl.cli", "overlayctl.__main__")),
    ),
}

SELF_CONTAINED = (
    ("agent.net", "the kernel library: callers pass plain values, it knows no lease or backend"),
    ("overlayctl.remote.scripts", "programs run on hosts: the standard library only"),
)

FORBIDDEN = (
    ("agent", "overlayctl", "the agent is installed alone on hosts (its own wheel, Python 3.9)"),
    ("overlayctl.inventory", "overlayctl.remote", "the inventory is read and checked offline"),
    ("overlayctl.plan", "overlayctl.remote", "planning is pure; only remote/ speaks SSH"),
    ("overlayctl.inventory", "overlayctl.plan", "the inventory knows nothing of what it becomes"),
    ("overlayctl.etcd", "overlayctl.plan.render", "an etcdctl command needs no Jinja2"),
    ("overlayctl.doctor.checks", "overlayctl.remote", "checks are pure: facts in, findings out"),
    ("overlayctl.doctor", "overlayctl.phases", "doctor only reads: it runs no phase"),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of our packages, by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def _is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def _absolute(name: str, node: ast.ImportFrom) -> str:
    """The module an ImportFrom names, with relative levels resolved against NAME."""
    if not node.level:
        return node.module or ""
    base = name.split(".")
    if not _is_package(name):
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(name: str) -> Iterator[tuple[str, int]]:
    """(our module, line) for every import in module NAME, wherever it stands."""
    tree = ast.parse(modules()[name].read_text(), str(modules()[name]))
    ours = modules()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(name, node)
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in ours]
            targets = subs if len(subs) == len(node.names) else [module, *subs]
        for target in targets:
            if target.partition(".")[0] not in PACKAGES:
                continue
            known = target
            while known and known not in ours:  # `import a.b.c` of a name inside a.b
                known = known.rpartition(".")[0]
            if known:
                yield known, node.lineno


@cache
def graph() -> dict[str, tuple[tuple[str, int], ...]]:
    return {name: tuple(sorted(set(imports_of(name)))) for name in modules()}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_of(name: str) -> int | None:
    """The index of NAME's layer: the longest prefix that matches it (the bare package name
    matches only its own __init__)."""
    package = name.partition(".")[0]
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, (_, prefixes) in enumerate(LAYERS.get(package, ())):
        for prefix in prefixes:
            matches = name == prefix if prefix == package else within(name, prefix)
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def cycles(package: str) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    nodes = [n for n in graph() if within(n, package)]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target, _ in graph()[node]:
            if not within(target, package):
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            selfloop = any(t == node for t, _ in graph()[node])
            if len(component) > 1 or selfloop:
                found.append(sorted(component))

    for node in nodes:
        if node not in index:
            visit(node)
    return found


def forbidden_imports(importer: str, imported: str) -> list[str]:
    return [
        f"{name}:{line} imports {target}"
        for name, edges in graph().items()
        if within(name, importer)
        for target, line in edges
        if within(target, imported)
    ]


# -- the rules ------------------------------------------------------------------------------------


def test_the_graph_sees_the_packages() -> None:
    """A guard for the guards: an empty or unparsed graph would pass every rule below."""
    assert {"agent.daemon", "agent.net.netlink", "overlayctl.cli"} <= set(graph())
    assert any(t == "agent.subnet.lease" for t, _ in graph()["agent.daemon"])
    assert any(t == "agent.http.metrics" for t, _ in graph()["agent.report"])  # a lazy import
    assert any(t == "agent.net.rtnl" for t, _ in graph()["agent.net.netlink"])


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_no_import_cycle(package: str) -> None:
    assert cycles(package) == []


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_every_module_has_a_layer(package: str) -> None:
    """A new module (or folder) is placed in the table on purpose, not by accident."""
    missing = [n for n in graph() if within(n, package) and layer_of(n) is None]
    assert missing == []


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_no_lower_layer_imports_a_higher_one(package: str) -> None:
    names = [name for name, _ in LAYERS[package]]
    upward = []
    for name, edges in graph().items():
        mine = layer_of(name)
        if not within(name, package) or mine is None:
            continue
        for target, line in edges:
            theirs = layer_of(target)
            if within(target, package) and theirs is not None and theirs > mine:
                upward.append(f"{name}:{line} ({names[mine]}) imports {target} ({names[theirs]})")
    assert upward == []


@pytest.mark.parametrize(("library", "why"), SELF_CONTAINED)
def test_self_contained_libraries(library: str, why: str) -> None:
    package = library.partition(".")[0]
    outside = [
        f"{name}:{line} imports {target}"
        for name, edges in graph().items()
        if within(name, library)
        for target, line in edges
        if within(target, package) and not within(target, library)
    ]
    assert outside == [], why


@pytest.mark.parametrize(("importer", "imported", "why"), FORBIDDEN)
def test_forbidden_imports(importer: str, imported: str, why: str) -> None:
    assert forbidden_imports(importer, imported) == [], why
