"""The package layout as a contract: stages import only earlier stages, through their public
names; no module over 600 lines, no function over 80, no import cycle; the public API is
the documented one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import featx

ROOT = Path(featx.__file__).parent
# The data path: a package may import packages of a lower rank (and itself), never higher.
RANK = {"core": 0, "data": 1, "extraction": 2, "heads": 3, "finetuning": 3, "pipeline": 4, "cli": 5}
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
