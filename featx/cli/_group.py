"""The ``featx`` command line: one click group, one exception policy.

Stages map onto commands (extract -> train / finetune -> report, or ``run`` for a
whole pipeline). Every :class:`featx.FeatxError` becomes one line on stderr and an
exit code (2 for usage mistakes, 1 for runtime failures), never a traceback.
Each stage's commands live in their own module of ``featx.cli`` (``_extract``,
``_heads``, ``_finetune``, ``_pipeline``), each listing them in ``COMMANDS``; the
``COMMANDS`` table below names them, and a module is imported only when one of its
commands is used, so ``featx --help`` never loads torch.
"""

from __future__ import annotations

import importlib

import click

from ..core.errors import DiskError, FeatxError
from ..core.interrupts import sticky_interrupts

__all__ = ["main", "cli", "FeatxClickError", "LazyGroup"]


def safe_text(name) -> str:
    return str(name).encode("utf-8", "backslashreplace").decode("utf-8")


class FeatxClickError(click.ClickException):
    """A featx error as click sees it: one line, the error's own exit code."""

    def __init__(self, error: FeatxError):
        super().__init__(str(error).splitlines()[0] if str(error) else type(error).__name__)
        self.exit_code = error.exit_code

    def show(self, file=None) -> None:
        click.echo(f"featx: error: {self.format_message()}", err=True)


class LazyGroup(click.Group):
    """A group whose subcommands are named up front and imported on first use.

    ``lazy`` maps a command name to ``"module:attribute"`` (module relative to
    ``featx.cli``). ``featx --help`` and shell completion then load only the small
    command modules, never torch, timm or scikit-learn, which the commands import in
    their own bodies (click's documented "lazily loading subcommands" pattern).
    """

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module, "featx.cli"), attribute)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


class _Group(LazyGroup):
    def invoke(self, ctx: click.Context):
        try:
            # An interrupt swallowed anywhere in a command still ends it with 130 (core.interrupts).
            with sticky_interrupts():
                return super().invoke(ctx)
        except FeatxError as exc:
            raise FeatxClickError(exc) from None
        except KeyboardInterrupt:
            click.echo("featx: interrupted; run the same command again to resume", err=True)
            ctx.exit(130)
        except PermissionError as exc:
            # An output folder or file featx may not write: the path and the fix, not a traceback.
            where = safe_text(exc.filename) if exc.filename else str(exc)
            raise FeatxClickError(FeatxError(f"permission denied: {where}; make it writable or write somewhere "
                                             "else (--out)")) from None
        except (OSError, RuntimeError) as exc:
            # A write path that did not wrap its own disk errors still gets one line, not a traceback.
            from ..core.io import is_disk_error  # numpy: only on this error path

            if not is_disk_error(exc):
                raise
            raise FeatxClickError(DiskError(f"{str(exc).splitlines()[0]}")) from None


# Every command, by name: "module:attribute" under featx.cli. A new command needs its line
# here (tests/test_cli_fast.py checks that every module's COMMANDS is reachable).
COMMANDS: dict[str, str] = {
    "extract": "._extract:extract",
    "info": "._extract:info",
    "backbones": "._extract:backbones",
    "export": "._export:export",
    "import": "._import:import_",
    "heads": "._heads:heads",
    "train": "._heads:train",
    "evaluate": "._heads:evaluate",
    "predict": "._heads:predict",
    "export-model": "._heads:export_model",
    "finetune": "._finetune:finetune",
    "run": "._pipeline:run",
    "report": "._pipeline:report",
    "search": "._search:search",
    "bench": "._bench:bench",
}


@click.group(cls=_Group, lazy=COMMANDS, context_settings={
    "help_option_names": ["-h", "--help"], "max_content_width": 100, "auto_envvar_prefix": "FEATX"})
@click.version_option(package_name="featx")
def cli() -> None:
    """featx: extract features once with a frozen timm backbone, then fit many heads on them."""


def main() -> None:
    import signal

    # From here a Ctrl-C is a KeyboardInterrupt that each command turns into exit 130 (and a
    # resumable state); the import-time handler of ``featx.cli`` only covered the start.
    if getattr(signal.getsignal(signal.SIGINT), "__name__", "") == "_interrupted_while_starting":
        signal.signal(signal.SIGINT, signal.default_int_handler)
    cli.main(prog_name="featx", standalone_mode=True)
