"""YAML pipelines: the config and its validation, the stage runner with its cache keys,
and the HTML/Markdown report.
"""

from __future__ import annotations

from ._config import SPLIT_DEFAULTS, Pipeline, load_pipeline, parse_overrides
from ._report import REPORT_FILES, load_results, recommend, total_seconds, write_report
from ._report_decide import RULE, compare_rows
from ._runner import RESOLVED_FILE, STATE_FILE, PipelineRun, Stage, plan_pipeline, run_pipeline, stage_table
from ._search import SEARCH_FILE, run_search
from ._search_run import SearchFit, search_and_fit
from ._search_space import SearchSpec, parse_search

__all__ = [
    "Pipeline",
    "load_pipeline",
    "parse_overrides",
    "SPLIT_DEFAULTS",
    "write_report",
    "load_results",
    "total_seconds",
    "recommend",
    "compare_rows",
    "RULE",
    "REPORT_FILES",
    "run_pipeline",
    "plan_pipeline",
    "Stage",
    "PipelineRun",
    "stage_table",
    "STATE_FILE",
    "RESOLVED_FILE",
    "run_search",
    "search_and_fit",
    "SearchFit",
    "SearchSpec",
    "parse_search",
    "SEARCH_FILE",
]
