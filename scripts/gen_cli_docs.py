"""Write docs/cli.md, the command reference, from the click commands themselves.

    python scripts/gen_cli_docs.py           # rewrite docs/cli.md
    python scripts/gen_cli_docs.py --check   # exit 1 when docs/cli.md is out of date

``tests/test_docs.py`` runs the check, so the committed reference always matches the CLI.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "cli.md"
WIDTH = 100  # fixed, so the page does not depend on the terminal it was made in

HEADER = """# Command reference

Generated from the CLI by `python scripts/gen_cli_docs.py`; do not edit by hand.
Every option can also be set in the environment as `FEATX_<COMMAND>_<OPTION>`
(e.g. `FEATX_EXTRACT_WORKERS=0`, `FEATX_BENCH_EXTRACT_LIMIT=400`); the command line wins.
"""


def _help(command: click.Command, path: list[str], parent: click.Context | None) -> str:
    # make_context applies the group's context settings (-h, widths) as `featx CMD --help` does.
    ctx = command.make_context(path[-1], [], parent=parent, resilient_parsing=True, terminal_width=WIDTH,
                               max_content_width=WIDTH)
    return command.get_help(ctx), ctx


def render() -> str:
    sys.path.insert(0, str(ROOT))
    from featx.cli import cli

    parts = [HEADER]

    def walk(command, path, parent):
        text, ctx = _help(command, path, parent)
        title = " ".join(path)
        parts.append(f"\n## `{title}`\n\n```text\n{text.rstrip()}\n```\n")
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), [*path, name], ctx)

    walk(cli, ["featx"], None)
    return "".join(parts)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is out of date: run python scripts/gen_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
