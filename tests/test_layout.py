"""The package layout as a contract: stages import only earlier stages, through their public
names, and never the ``featx`` package above them; no module over 600 lines, no function over
80, no import cycle (inside a package, lazy imports count too); the public API is the
documented one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import featx

ROOT = Path(featx.__file__).parent
# The data path: a package may import packages of a lower rank (and itself), never higher.
RANK = {"core": 0, "data": 1, "store": 2, "extraction": 3, "heads": 4, "finetuning": 4, "pipeline": 5, "cli": 6}
# Import circles inside a package that are known and not yet removed (module pairs, either order).
# Each entry is a debt: remove it with the circle; the test fails if a listed circle is gone too.
KNOWN_PACKAGE_CYCLES: set[frozenset[str]] = set()
# The documented API before the layout move; later issues may add names, never drop one.
PUBLIC_API = {
    "__version__", "DEFAULT_BACKBONE", "BackboneSpec", "OfflineWeights", "create_backbone", "list_offline_weights",
    "register_offline_weights", "resolve_backbone", "BadImageError", "FeatxError", "FeatxUsageError",
    "StoreInUseError", "StoreMismatchError", "extract", "finetune", "FeatureExtractor", "ArraySource", "CsvSource",
    "DigitsSource", "ImageFolderSource", "Item", "Source", "open_source", "FeatureStore", "HeadSpec", "create_head",
    "list_heads", "register_head", "train_heads", "evaluate_head", "TrainedHead", "load_head", "predict", "Pipeline",
    "PipelineRun", "load_pipeline", "run_pipeline", "write_report",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(module: str, path: Path) -> list[tuple[str, list[str], bool]]:
    """(imported module, names, at module level) for every featx import in a file."""
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "featx":
                found.append((target, [a.name for a in node.names], id(node) in top))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "featx":
                    found.append((alias.name, [], id(node) in top))
    return found


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_public_api_kept():
    assert set(featx.__all__) >= PUBLIC_API, PUBLIC_API - set(featx.__all__)
    for name in featx.__all__:
        assert hasattr(featx, name), name
    assert callable(featx.extract) and callable(featx.finetune)  # not shadowed by subpackages


def test_every_module_belongs_to_a_stage():
    for module in _modules():
        package = _package(module)
        assert package is None or package in RANK, f"{module} is outside the data-path packages {sorted(RANK)}"


def test_stages_import_only_lower_stages_through_public_names():
    problems = []
    for module, path in _modules().items():
        here = _package(module)
        for target, names, _ in _imports(module, path):
            there = _package(target)
            if here is None or there is None or there == here:
                continue
            if RANK[there] >= RANK[here]:
                problems.append(f"{module} imports {target}: {there} is not an earlier stage than {here}")
            private_module = any(part.startswith("_") for part in target.split(".")[2:])
            private_names = [n for n in names if n.startswith("_")]
            if private_module or private_names:
                problems.append(f"{module} imports private {target} {private_names or ''}")
    assert not problems, "\n".join(problems)


def test_no_import_cycle_at_module_level():
    modules = _modules()
    graph = {m: set() for m in modules}
    for module, path in modules.items():
        for target, names, at_top in _imports(module, path):
            if not at_top:
                continue
            for candidate in [target, *(f"{target}.{n}" for n in names)]:
                if candidate in modules and candidate != module:
                    graph[module].add(candidate)
    # A package's __init__ importing its own modules is how re-exports work, not a cycle.
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in graph[node]:
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
                if not any(b.startswith(a + ".") for a, b in zip(cycle, cycle[1:])):
                    pytest.fail("import cycle: " + " -> ".join(cycle))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_sizes():
    problems = []
    for path in _modules().values():
        lines = path.read_text().splitlines()
        if len(lines) > 600:
            problems.append(f"{path.relative_to(ROOT.parent)}: {len(lines)} lines (max 600)")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    problems.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name}: {length} lines (max 80)")
    assert not problems, "\n".join(problems)


def test_no_import_back_up_to_the_featx_package():
    # featx/__init__ imports every stage: a stage importing it (``from .. import x``) is a circle.
    problems = [f"{module} imports {target} {names}" for module, path in _modules().items() if _package(module)
                for target, names, _ in _imports(module, path) if target == "featx"]
    assert not problems, "\n".join(problems)


def _package_graph(package: str) -> dict[str, set[str]]:
    """Imports between one package's modules, lazy (function-level) ones included; not its __init__."""
    modules = {m: p for m, p in _modules().items() if m.startswith(f"featx.{package}.")}
    graph = {m: set() for m in modules}
    for module, path in modules.items():
        for target, names, _ in _imports(module, path):
            for candidate in [target, *(f"{target}.{n}" for n in names)]:
                if candidate in modules and candidate != module:
                    graph[module].add(candidate)
    return graph


def _cycle_pairs(graph: dict[str, set[str]]) -> set[frozenset]:
    """Every pair of modules that reach each other (so lie on one circle)."""
    reach = {}
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(graph[node])
        reach[start] = seen
    return {frozenset({a, b}) for a in graph for b in reach[a] if a != b and a in reach[b]}


def test_no_import_cycle_inside_a_package():
    found = set()
    for package in RANK:
        found |= _cycle_pairs(_package_graph(package))
    unknown = sorted(" <-> ".join(sorted(pair)) for pair in found - KNOWN_PACKAGE_CYCLES)
    assert not unknown, "import circle inside a package:\n" + "\n".join(unknown)
    gone = sorted(" <-> ".join(sorted(pair)) for pair in KNOWN_PACKAGE_CYCLES - found)
    assert not gone, "circle removed: drop it from KNOWN_PACKAGE_CYCLES:\n" + "\n".join(gone)


def test_the_cycle_check_sees_lazy_imports():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle_pairs(graph) == {frozenset("ab"), frozenset("bc"), frozenset("ac")}
    assert _cycle_pairs({"a": {"b"}, "b": set()}) == set()
