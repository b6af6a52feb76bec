"""``featx run`` (a whole pipeline, cached stage by stage) and ``featx report`` (rebuild a report)."""

from __future__ import annotations

from pathlib import Path

import click

from ..core.errors import FeatxError

__all__ = ["COMMANDS", "run", "report"]

_STATUS_WORDS = {"cached": "cached", "to run": "to run", "done": "ran", "failed": "FAILED", "skipped": "skipped"}


def _shorten(text: str | None, limit: int = 160) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


@click.command()
@click.argument("pipeline_file", metavar="PIPELINE.yaml", type=click.Path(dir_okay=False))
@click.option("--out", "out", default=None, type=click.Path(file_okay=False),
              help="Output directory (default: the file's `out`, else runs/<name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value: dotted key, YAML value (e.g. --set seeds=3 --set source.path=data/cifar10 "
                   "--set 'heads=[logreg, knn]'). Repeatable.")
@click.option("--dry-run", is_flag=True, help="Validate and print which stages are cached and which would run; run nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output, only the report path.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the outcome as JSON on stdout: stages with status and seconds, counts, report path.")
def run(pipeline_file, out, overrides, dry_run, quiet, as_json):
    """Run a pipeline: extract per backbone, heads per store, fine-tune baselines, then the report.

    Stages whose inputs did not change since the last run are reused; a failed stage
    does not stop the others, and running the same command again resumes.
    """
    from ..pipeline import run_pipeline

    result = run_pipeline(pipeline_file, overrides=overrides, out=out, dry_run=dry_run, quiet=quiet)
    if as_json:
        _echo_run_json(result)
    elif dry_run:
        click.echo(f"pipeline {result.pipeline.name} -> {result.out} (dry run: nothing is run or written)")
        width = max(len(s.title) for s in result.stages)
        for stage in result.stages:
            note = ""
            if stage.status == "to run" and stage.key is None:
                note = "  (after its feature store)"
            click.echo(f"  {stage.title:<{width}}  {_STATUS_WORDS.get(stage.status, stage.status)}{note}")
        click.echo(f"  {'report':<{width}}  to run")
        counts = result.counts()
        click.echo(f"{counts.get('cached', 0)} cached, {counts.get('to run', 0)} to run")
    if dry_run:
        return
    if not as_json:
        _echo_summary(result, quiet)
    if result.failed:
        names = "; ".join(f"{s.title}: {_shorten(s.error)}" for s in result.failed[:3])
        raise FeatxError(f"{len(result.failed)} stage(s) did not finish ({names}); the report shows the rest. "
                         f"Fix the cause and run the same command again to resume")


def _echo_run_json(result) -> None:
    from ..core.io import json_text

    click.echo(json_text({"pipeline": result.pipeline.name, "out": str(result.out), "dry_run": result.dry_run,
                          "report": None if result.report is None else str(result.report),
                          "counts": result.counts(), "stages": [s.row() for s in result.stages]}))


def _echo_summary(result, quiet: bool) -> None:
    counts = result.counts()
    summary = ", ".join(f"{n} {_STATUS_WORDS.get(k, k)}" for k, n in counts.items())
    if counts.get("cached") == len(result.stages):
        summary += " (nothing recomputed: no backbone forward pass, no training)"
    if not quiet:
        click.echo(f"stages: {summary}")
    click.echo(f"report: {result.report}")


@click.command()
@click.argument("out_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--title", default=None, help="Report title (default: from the pipeline's name).")
def report(out_dir, title):
    """Rebuild DIR/report.html, report.md and the plots from DIR/results.json, without recomputing."""
    from ..pipeline import stage_table, write_report

    name, stages = stage_table(out_dir)
    default_title = f"featx report: {name}" if name else f"featx report: {Path(out_dir).resolve().name}"
    path = write_report(out_dir, title=title or default_title, stages=stages)
    click.echo(f"report: {path}")


COMMANDS = [run, report]
