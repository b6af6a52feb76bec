"""The ``featx`` command line: one click group, one exception policy.

Stages map onto commands (extract -> train / finetune -> report, or ``run`` for a
whole pipeline). Every :class:`featx.FeatxError` becomes one line on stderr and an
exit code (2 for usage mistakes, 1 for runtime failures), never a traceback.
Each stage's commands live in their own module of ``featx.cli`` (``_extract``,
``_heads``, ``_finetune``, ``_pipeline``), each exporting ``COMMANDS``; the package
``__init__`` adds them to this group.
"""

from __future__ import annotations

import click

from ..core.errors import DiskError, FeatxError
from ..core.interrupts import sticky_interrupts
from ..core.io import is_disk_error

__all__ = ["main", "cli", "FeatxClickError"]


def safe_text(name) -> str:
    return str(name).encode("utf-8", "backslashreplace").decode("utf-8")


class FeatxClickError(click.ClickException):
    """A featx error as click sees it: one line, the error's own exit code."""

    def __init__(self, error: FeatxError):
        super().__init__(str(error).splitlines()[0] if str(error) else type(error).__name__)
        self.exit_code = error.exit_code

    def show(self, file=None) -> None:
        click.echo(f"featx: error: {self.format_message()}", err=True)


class _Group(click.Group):
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
            if not is_disk_error(exc):
                raise
            raise FeatxClickError(DiskError(f"{str(exc).splitlines()[0]}")) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
