"""An instant CLI and a lazy ``import featx``: help, version and completion load no heavy library.

Each check runs in a fresh interpreter (the test process itself has torch loaded) and
reads ``sys.modules`` afterwards.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "sklearn", "ray", "xgboost", "torchvision", "h5py", "matplotlib")

# Runs featx's CLI in-process on each argv of ARGVS, then prints the heavy modules loaded.
_PROBE = """
import json, os, sys
from featx.cli import cli
for argv in json.loads(sys.argv[1]):
    try:
        cli.main(argv, prog_name="featx", standalone_mode=False)
    except SystemExit:
        pass
heavy = [m for m in json.loads(sys.argv[2]) if m in sys.modules]
print(json.dumps(heavy))
"""


def _loaded(argvs: list[list[str]], env: dict | None = None, code: str = _PROBE) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(argvs), json.dumps(HEAVY)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["extract", "--help"]])
def test_help_and_version_import_no_heavy_library(argv):
    assert _loaded([argv]) == []


def _all_commands() -> list[list[str]]:
    from featx.cli import cli

    ctx = cli.make_context("featx", ["--help"], resilient_parsing=True)
    paths = []

    def walk(group, prefix):
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            paths.append([*prefix, name])
            if hasattr(command, "list_commands"):
                walk(command, [*prefix, name])

    walk(cli, [])
    return paths


def test_every_command_help_imports_no_heavy_library():
    commands = _all_commands()
    assert {"extract", "train", "run", "bench"} <= {c[0] for c in commands} and ["bench", "extract"] in commands
    assert _loaded([[*c, "--help"] for c in commands]) == []


def test_shell_completion_imports_no_heavy_library():
    # click's completion protocol: the words so far in COMP_WORDS, the cursor word in COMP_CWORD.
    code = _PROBE.replace('cli.main(argv, prog_name="featx", standalone_mode=False)',
                          'os.environ["COMP_WORDS"] = " ".join(argv); os.environ["COMP_CWORD"] = str(len(argv) - 1)\n'
                          '        cli.main([], prog_name="featx", complete_var="_FEATX_COMPLETE")')
    argvs = [["featx", "ex"], ["featx", "extract", "--ba"], ["featx", "bench", "lo"]]
    assert _loaded(argvs, env={"_FEATX_COMPLETE": "bash_complete"}, code=code) == []


def test_completion_lists_commands_and_options():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "_FEATX_COMPLETE": "bash_complete",
           "COMP_WORDS": "featx extract --batch", "COMP_CWORD": "2"}
    proc = subprocess.run([sys.executable, "-m", "featx.cli"], capture_output=True, text=True, env=env, timeout=120)
    assert "--batch-size" in proc.stdout


def test_every_module_command_is_registered():
    """A command defined in a featx.cli module but missing from the lazy table would vanish from the CLI."""
    from featx.cli import cli
    from featx.cli._bench import bench

    ctx = cli.make_context("featx", ["--help"], resilient_parsing=True)
    reachable = {id(cli.get_command(ctx, n)) for n in cli.list_commands(ctx)}
    reachable |= {id(bench.get_command(ctx, n)) for n in bench.list_commands(ctx)}
    import featx.cli as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name == "__main__":  # runs the CLI on import
            continue
        module = importlib.import_module(f"featx.cli.{info.name}")
        commands = getattr(module, "COMMANDS", [])
        for command in commands if isinstance(commands, list) else []:  # _group's COMMANDS is the table
            assert id(command) in reachable, f"{info.name}: command {command.name!r} is not in the lazy command table"


def test_import_featx_is_lazy_and_keeps_every_public_name():
    code = ("import json, sys, featx\n"
            "print(json.dumps([m for m in json.loads(sys.argv[2]) if m in sys.modules]))")
    assert _loaded([], code=code) == []
    import featx

    eager = {"__version__", "BadImageError", "FeatxError", "FeatxUsageError", "StoreInUseError",
             "StoreMismatchError", "StoreDamagedError", "DiskError"}
    assert set(featx.__all__) == eager | set(featx._LAZY)
    for name in featx.__all__:
        assert getattr(featx, name) is not None
    assert set(featx.__all__) <= set(dir(featx))
    assert featx.extract is importlib.import_module("featx.extraction").extract
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        featx.nope  # noqa: B018


def test_options_take_featx_environment_defaults():
    from featx.cli import cli

    runner = CliRunner()
    bad = runner.invoke(cli, ["extract", "--source", "digits", "--out", "x.h5"], env={"FEATX_EXTRACT_BATCH_SIZE": "0"})
    assert bad.exit_code == 2 and "0 is below 1" in bad.output
    # Nested groups take the nested name: FEATX_BENCH_LOGREG_CLASSES for `featx bench logreg --classes`.
    nested = runner.invoke(cli, ["bench", "logreg"], env={"FEATX_BENCH_LOGREG_CLASSES": "1"})
    assert nested.exit_code == 2 and "--classes >= 2" in nested.output
    # A command-line option beats the environment: the bad batch size is not seen, the missing folder is.
    fixed = runner.invoke(cli, ["extract", "--source", "/no/such/folder", "--out", "x.h5", "--batch-size", "4"],
                          env={"FEATX_EXTRACT_BATCH_SIZE": "0"})
    assert fixed.exit_code == 2 and "not found" in fixed.output and "below" not in fixed.output
