"""What a killed or refused run leaves: temporaries of dead featx processes are removed by the next
run (and only those), a write featx may not make is one line, and a Ctrl-C while the command line
is still importing is exit 130 with one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from featx.cli import cli
from featx.core.io import remove_stale_temps, write_atomic

from ._head_stores import write_store

ROOT = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_processes_are_removed_and_nothing_else(tmp_path):
    dead, live = _dead_pid(), os.getppid()
    (tmp_path / f".state.json.{dead}.tmp").write_text("half")
    (tmp_path / f".logreg.{dead}.new").mkdir()
    (tmp_path / f".logreg.{dead}.new" / "model.skops").write_text("half")
    keep = [tmp_path / f".state.json.{live}.tmp",  # a live writer's
            tmp_path / f".notes.{dead}.txt",  # not a featx pattern
            tmp_path / f".part-00001.h5.{os.getpid()}.{dead}.tmp",  # a shard writer's, with an all-digit suffix
            tmp_path / "state.json"]
    for path in keep:
        path.write_text("x")
    (tmp_path / f".odd.{dead}.new").write_text("a file where featx makes folders")
    removed = remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted([f".state.json.{dead}.tmp", f".logreg.{dead}.new"])
    assert all(p.exists() for p in keep) and (tmp_path / f".odd.{dead}.new").exists()


def test_write_atomic_removes_its_own_stale_temporary(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".results.json.{dead}.tmp"
    stale.write_text("{")
    other = tmp_path / f".report.md.{dead}.tmp"
    other.write_text("#")
    write_atomic(tmp_path / "results.json", "{}")
    assert not stale.exists() and other.exists()  # only that file's


def test_train_removes_what_a_killed_train_left(tmp_path):
    store = write_store(tmp_path / "f.h5", n=90)
    out = tmp_path / "run"
    dead = _dead_pid()
    out.mkdir()
    (out / f".logreg.{dead}.new").mkdir()
    (out / f".results.json.{dead}.tmp").write_text("{")
    result = CliRunner().invoke(cli, ["train", "--features", str(store.path), "--heads", "logreg", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not (out / f".logreg.{dead}.new").exists() and not (out / f".results.json.{dead}.tmp").exists()


def test_permission_denied_on_splits_is_one_line(tmp_path, monkeypatch):
    import builtins

    import featx.core.io as io

    store = write_store(tmp_path / "f.h5", n=90)
    real_open = builtins.open

    def guarded(path, *args, **kwargs):
        if "splits.json" in os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(io, "open", guarded, raising=False)  # as root, chmod would not stop the write
    result = CliRunner().invoke(cli, ["train", "--features", str(store.path), "--heads", "logreg", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "permission denied while writing" in result.output and "splits.json" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_permission_error_anywhere_in_a_command_is_one_line(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/srv/out/f.h5")

    monkeypatch.setattr("featx.extraction.extract", denied)
    result = CliRunner().invoke(cli, ["extract", "--source", "digits", "--out", str(tmp_path / "f.h5")])
    assert result.exit_code == 1 and "permission denied: /srv/out/f.h5" in result.output, result.output
    assert "Traceback" not in result.output


def test_ctrl_c_while_the_command_line_imports_is_130_and_one_line(tmp_path):
    # A script named like the console script: the interrupt lands right after featx.cli's own import,
    # while the rest of the start-up would still run (deterministic, unlike a timed kill).
    script = tmp_path / "featx"
    script.write_text("import os, signal, time\nimport featx.cli\nos.kill(os.getpid(), signal.SIGINT)\n"
                      "time.sleep(30)\nprint('not interrupted')\n")
    # A shell's background job inherits SIGINT ignored (and Ctrl-C could not reach it): the child gets
    # the default back, as a command typed at a terminal has it.
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)},
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.strip() == "featx: interrupted while starting; nothing was done"


def test_main_hands_ctrl_c_back_to_the_commands(monkeypatch):
    from featx.cli import _interrupted_while_starting, main

    monkeypatch.setattr(sys, "argv", ["featx", "--version"])
    previous = signal.signal(signal.SIGINT, _interrupted_while_starting)
    try:
        with pytest.raises(SystemExit):
            main()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # commands' sticky interrupts apply
    finally:
        signal.signal(signal.SIGINT, previous)
