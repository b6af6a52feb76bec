"""Running a pipeline: plan the stages, reuse what is cached, run the rest, write the report.

Stages, in order: one ``extract`` per backbone (``OUT/features/<backbone>.h5``); one
``head`` stage per (backbone, head, training-set size) on that store
(``OUT/heads/<backbone>/<head>[-pcN]/``); one ``finetune`` stage per (mode, backbone,
size) (``OUT/finetune/<backbone>/<mode>[-pcN]/``); then the report in ``OUT``.

Caching: each stage has a key, a hash of everything its output depends on:

* extract: the source fingerprint (ids, labels, file sizes and mtimes), the
  backbone identity (model, weights and their sha256, pooling), precision, dtype,
  and the layers / views / preprocessing overrides when set;
* head: the feature store's ``store_id`` (its config + source fingerprint), the
  head and its parameters, the training-set size, the seeds, the split options;
* head on a feature set (``feature_sets:``): every store's ``store_id`` and the
  sets taken, then as above;
* finetune: the source fingerprint, the backbone identity, the mode and its
  options, the training-set size, the split options.

``OUT/state.json`` records each finished stage's key. A stage whose key is unchanged
and whose output is still there (for a feature store: complete, every chunk's checksum
read back, no file whose content changed since extraction) is *cached*: it is not run (no forward pass, no
training). A stage whose key changed starts from an empty directory; a stage that
failed or was interrupted keeps its directory, so the next run resumes it (a
partial feature store continues where it stopped, a fine-tune after its last
epoch). A failed stage does not stop the others: stages that need its output are
skipped, everything else runs, and the report is written from what exists, with
the failed and skipped stages listed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..core.errors import FeatxError, FeatxUsageError, StoreDamagedError, StoreMismatchError
from ..core.interrupts import check_interrupt
from ..core.io import remove_stale_temps, write_atomic, write_json_atomic
from ..core.results import RESULTS_FILE
from ._config import Pipeline, check_backbone, load_pipeline
from ._controls import RAW_LABEL
from ._identity import cached_identity, record_identity
from ._report import load_results, write_report
from ._search_run import apply_search, tag_search_rows

__all__ = ["run_pipeline", "plan_pipeline", "Stage", "PipelineRun", "stage_table", "STATE_FILE", "RESOLVED_FILE"]

STATE_FILE = "state.json"
RESOLVED_FILE = "pipeline.resolved.yaml"
_DONE = ("done", "cached")


@dataclass
class Stage:
    """One unit of work. ``status``: to run, cached, done, failed or skipped."""

    id: str
    kind: str
    title: str
    path: Path
    backbone: dict
    head: dict | None = None
    finetune: dict | None = None
    per_class: int | None = None
    after: str | None = None
    inputs: list[str] = field(default_factory=list)  # every extract stage a feature-set head reads
    feature_set: dict | None = None
    key: str | None = None
    status: str = "to run"
    seconds: float | None = None
    error: str | None = None

    def row(self) -> dict:
        return {"stage": self.title, "id": self.id, "status": self.status, "seconds": self.seconds, "error": self.error}


@dataclass
class PipelineRun:
    """What :func:`run_pipeline` did: every stage with its status, the entries and the report path."""

    pipeline: Pipeline
    out: Path
    stages: list[Stage]
    entries: list[dict] = field(default_factory=list)
    report: Path | None = None
    dry_run: bool = False

    @property
    def failed(self) -> list[Stage]:
        return [s for s in self.stages if s.status in ("failed", "skipped")]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for stage in self.stages:
            out[stage.status] = out.get(stage.status, 0) + 1
        return out


def _hash(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _size_tag(per_class: int | None) -> str:
    return "" if per_class is None else f"-pc{per_class}"


def plan_pipeline(pipeline: Pipeline, out: Path) -> list[Stage]:
    """The stages of ``pipeline`` in run order, without keys (those need the data)."""
    stages = []
    for bb in pipeline.backbones:
        label = bb["label"]
        extract_id = f"extract:{label}"
        stages.append(Stage(extract_id, "extract", f"extract {label}", out / "features" / f"{label}.h5", bb))
        for per_class in pipeline.per_class:
            size = "" if per_class is None else f" ({per_class}/class)"
            for head in pipeline.heads:
                stages.append(Stage(
                    f"head:{label}:{head['label']}{_size_tag(per_class)}", "head", f"head {head['label']} on {label}{size}",
                    out / "heads" / label / f"{head['label']}{_size_tag(per_class)}", bb, head=head,
                    per_class=per_class, after=extract_id,
                ))
    stages += _raw_pixel_stages(pipeline, out)
    stages += _feature_set_stages(pipeline, out)
    for entry in pipeline.finetune:
        for bb in (b for b in pipeline.backbones if b["label"] in entry["backbones"]):
            for per_class in pipeline.per_class:
                size = "" if per_class is None else f" ({per_class}/class)"
                stages.append(Stage(
                    f"finetune:{bb['label']}:{entry['mode']}{_size_tag(per_class)}", "finetune",
                    f"finetune {entry['mode']} {bb['label']}{size}",
                    out / "finetune" / bb["label"] / f"{entry['mode']}{_size_tag(per_class)}", bb, finetune=entry,
                    per_class=per_class,
                ))
    return stages


def _raw_pixel_stages(pipeline: Pipeline, out: Path) -> list[Stage]:
    """The raw-pixel control: its store (a ``raw`` stage) and its heads, at every training-set size."""
    if pipeline.raw_pixels is None:
        return []
    control = {"label": RAW_LABEL, "name": "raw pixels", "size": pipeline.raw_pixels["size"], "control": True}
    store_id = f"raw:{RAW_LABEL}"
    stages = [Stage(store_id, "raw", f"raw pixels {control['size']}x{control['size']} (control)",
                    out / "features" / f"{RAW_LABEL}.h5", control)]
    for per_class in pipeline.per_class:
        size = "" if per_class is None else f" ({per_class}/class)"
        for head in pipeline.raw_pixels["heads"]:
            stages.append(Stage(
                f"head:{RAW_LABEL}:{head['label']}{_size_tag(per_class)}", "head",
                f"head {head['label']} on raw pixels (control){size}",
                out / "heads" / RAW_LABEL / f"{head['label']}{_size_tag(per_class)}", control, head=head,
                per_class=per_class, after=store_id,
            ))
    return stages


def _feature_set_stages(pipeline: Pipeline, out: Path) -> list[Stage]:
    """One head stage per (feature set, head, size): heads on concatenated stores or layers."""
    by_label = {b["label"]: b for b in pipeline.backbones}
    stages = []
    for fs in pipeline.feature_sets:
        inputs = [f"extract:{label}" for label in fs["stores"]]
        for per_class in pipeline.per_class:
            size = "" if per_class is None else f" ({per_class}/class)"
            for head in pipeline.heads:
                stages.append(Stage(
                    f"head:{fs['name']}:{head['label']}{_size_tag(per_class)}", "head",
                    f"head {head['label']} on {fs['name']}{size}",
                    out / "heads" / fs["name"] / f"{head['label']}{_size_tag(per_class)}", by_label[fs["stores"][0]],
                    head=head, per_class=per_class, after=inputs[0], inputs=inputs, feature_set=fs,
                ))
    return stages


def _read_state(out: Path) -> dict:
    path = out / STATE_FILE
    if not path.exists():
        return {"stages": {}}
    try:
        state = json.loads(path.read_text())
    except ValueError:
        # A damaged state only costs cache hits; stores and fine-tunes check their own configs.
        return {"stages": {}}
    state.setdefault("stages", {})
    return state


def stage_table(out: str | os.PathLike) -> tuple[str | None, list[dict] | None]:
    """(pipeline name, stage rows for the report) recorded in ``out/state.json``, or (None, None)."""
    state = _read_state(Path(out))
    if not state.get("order"):
        return None, None
    rows = []
    for stage_id in state["order"]:
        record = state["stages"].get(stage_id, {})
        rows.append({"stage": record.get("title", stage_id), "id": stage_id, "status": record.get("status", "not run"),
                     "seconds": record.get("seconds"), "error": record.get("error")})
    return state.get("pipeline"), rows


def _readable(path: Path) -> bool:
    from ..core.errors import StoreInUseError
    from ..store import verify_store

    try:
        return verify_store(path).ok
    except StoreInUseError:
        raise
    except FeatxError:
        return False


class _Runner:
    def __init__(self, pipeline: Pipeline, out: Path, dry_run: bool, quiet: bool):
        self.pipeline, self.out, self.dry_run, self.quiet = pipeline, out, dry_run, quiet
        self.state = _read_state(out)
        self._source = None
        self._fingerprint: str | None = None
        self._specs: dict[str, object] = {}
        self.identities_changed = False
        self.by_id: dict[str, Stage] = {}
        self.split = {k: pipeline.source[k] for k in ("split_seed", "val_fraction", "test_fraction")}

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"featx: {message}", file=sys.stderr, flush=True)

    # -- inputs, computed once and only when a stage needs them

    @property
    def source(self):
        if self._source is None:
            from ..data import open_source

            try:
                # One source for every stage: extract, raw pixels and fine-tunes see the same labels.
                self._source = open_source(self.pipeline.source["path"],
                                           allow_unlabelled=self.pipeline.source.get("allow_unlabelled", False))
            except FeatxUsageError as exc:
                where = self.pipeline.path or "pipeline"
                raise FeatxUsageError(f"{where}: source.path: {exc} (or --set source.path=...)") from None
        return self._source

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = self.source.fingerprint()
        return self._fingerprint

    def spec(self, bb: dict):
        if bb["label"] not in self._specs:
            self._specs[bb["label"]] = check_backbone(bb)
        return self._specs[bb["label"]]

    def identity(self, bb: dict) -> dict:
        """The backbone's identity: recorded by an earlier run when still valid (no timm), else resolved."""
        found = cached_identity(self.state, bb)
        if found is None:
            found = record_identity(self.state, bb, self.spec(bb))
            self.identities_changed = True  # written with the state, under the run's lock
        return found

    def check_backbones(self) -> None:
        """Every backbone's name and weights, before any stage runs (a usage error names its line)."""
        for bb in self.pipeline.backbones:
            self.identity(bb)

    def store_id(self, extract_stage: Stage) -> str | None:
        record = self.state["stages"].get(extract_stage.id, {})
        return record.get("store_id") if extract_stage.status in _DONE else None

    # -- keys and cache checks

    def key(self, stage: Stage, stages: dict[str, Stage]) -> str | None:
        if stage.kind == "raw":
            return _hash({"source": self.fingerprint, "raw_pixels": stage.backbone["size"]})
        identity = None if stage.backbone.get("control") else self.identity(stage.backbone)
        if stage.kind == "extract":
            from ..core.runtime import device_type, resolve_precision

            precision = resolve_precision(stage.backbone["precision"], device_type(self.pipeline.device))
            return _hash({"source": self.fingerprint, "backbone": identity, "precision": precision,
                          "dtype": stage.backbone["dtype"], **_feature_options(stage.backbone), **self._views()})
        if stage.kind == "head" and stage.feature_set is not None:
            store_ids = [self.store_id(stages[i]) for i in stage.inputs]
            if None in store_ids:
                return None
            return _hash({"stores": store_ids, "sets": stage.feature_set["layers"], "head": stage.head["name"],
                          "params": stage.head["params"], "per_class": stage.per_class, "seeds": self.pipeline.seeds,
                          "split": self.split, **self._repeats(), **self._views()})
        if stage.kind == "head":
            store_id = self.store_id(stages[stage.after])
            if store_id is None:
                return None  # known once the store exists
            return _hash({"store": store_id, "head": stage.head["name"], "params": stage.head["params"],
                          "per_class": stage.per_class, "seeds": self.pipeline.seeds, "split": self.split,
                          **self._repeats(), **self._views(stages[stage.after])})
        options = {k: v for k, v in stage.finetune.items() if k != "backbones"}
        return _hash({"source": self.fingerprint, "backbone": identity, "finetune": options,
                      "per_class": stage.per_class, "split": self.split})

    def is_cached(self, stage: Stage) -> bool:
        record = self.state["stages"].get(stage.id, {})
        if stage.key is None or record.get("key") != stage.key or record.get("status") not in _DONE:
            return False
        if stage.kind in ("extract", "raw"):
            from ..store import FeatureStore, verify_store

            try:
                store = FeatureStore(stage.path)
                # Stat data first, hashes only where they changed: an edit that kept size and mtime is caught.
                fresh = store.complete and not store.changed_items(self.source)
                # Every chunk's checksum (one read of the store): damaged bytes mean "rebuild", not "use".
                fresh = fresh and verify_store(stage.path).ok
            except FeatxError:
                return False
            return fresh and store.store_id == record.get("store_id")
        return (stage.path / RESULTS_FILE).exists()

    def record(self, stage: Stage, **extra) -> None:
        self.state["stages"][stage.id] = {
            "title": stage.title, "kind": stage.kind, "key": stage.key, "status": stage.status,
            "seconds": stage.seconds, "error": stage.error, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra,
        }
        if not self.dry_run:
            write_json_atomic(self.out / STATE_FILE, self.state)

    # -- stages

    def run_extract(self, stage: Stage) -> dict:
        from ..extraction import extract

        bb = stage.backbone
        kwargs = dict(batch_size=bb["batch_size"], device=self.pipeline.device, workers=bb["workers"],
                      precision=bb["precision"], dtype=bb["dtype"], quiet=self.quiet,
                      **{k: bb.get(k) for k in ("layers", "views", "img_size", "crop_pct", "interpolation")})
        if stage.path.exists() and not _readable(stage.path):
            # Damaged bytes (a failed checksum, a truncated file): missing, not reusable.
            self.say(f"{stage.path} is damaged; rebuilding it")
            kwargs["overwrite"] = True
        try:
            store = extract(self.source, self.spec(bb), stage.path, **kwargs)
        except (StoreMismatchError, StoreDamagedError) as exc:
            # The pipeline owns this file: a store of an older config, or a damaged one, is not precious.
            why = "is damaged" if isinstance(exc, StoreDamagedError) else "holds features of an older config"
            self.say(f"{stage.path} {why}; rebuilding it")
            store = extract(self.source, self.spec(bb), stage.path, overwrite=True, **kwargs)
        if self.pipeline.views and not bb.get("views"):
            # The heads read the mirror view too: added beside the store (only the mirror pass runs).
            extract(self.source, self.spec(bb), stage.path, **{**kwargs, "views": "hflip", "overwrite": False})
        return {"store_id": store.store_id}

    def run_raw(self, stage: Stage) -> dict:
        from ..extraction import extract_raw_pixels

        try:
            store = extract_raw_pixels(self.source, stage.path, size=stage.backbone["size"], quiet=self.quiet)
        except StoreMismatchError:
            store = extract_raw_pixels(self.source, stage.path, size=stage.backbone["size"], overwrite=True)
        return {"store_id": store.store_id}

    def run_head(self, stage: Stage) -> dict:
        from ..heads import train_heads
        from ..store import FeatureStore

        store = FeatureStore(self.by_id[stage.after].path).require_complete()
        if stage.feature_set is not None:
            from ..heads import FeatureSet

            store = FeatureSet([self.by_id[i].path for i in stage.inputs], stage.feature_set["layers"])
        train_heads(store, heads=[stage.head["name"]], params={stage.head["name"]: stage.head["params"]},
                    per_class=stage.per_class, seeds=self.pipeline.seeds, out=stage.path, quiet=self.quiet,
                    repeats=self.pipeline.repeats, views=self._views(self.by_id[stage.after]).get("views"), **self.split)
        return {}

    def _views(self, store_stage: Stage | None = None) -> dict:
        # Like repeats: in a stage's identity only when used; the raw-pixel control has no views.
        if not self.pipeline.views or (store_stage is not None and store_stage.kind == "raw"):
            return {}
        return {"views": self.pipeline.views}

    def _repeats(self) -> dict:
        # In a head stage's identity only when used, so the stages of earlier runs stay valid.
        return {"repeats": self.pipeline.repeats} if self.pipeline.repeats != 1 else {}

    def run_finetune(self, stage: Stage) -> dict:
        from ..finetuning import finetune

        bb = stage.backbone
        options = {k: v for k, v in stage.finetune.items() if k not in ("mode", "backbones")}
        finetune(self.source, self.spec(bb), stage.path, mode=stage.finetune["mode"], per_class=stage.per_class,
                 device=self.pipeline.device, resume=True, quiet=self.quiet, **self.split, **options)
        return {}

    def execute(self, stages: list[Stage]) -> None:
        self.by_id = by_id = {s.id: s for s in stages}
        self.state["pipeline"] = self.pipeline.name
        self.state["order"] = [s.id for s in stages]
        for number, stage in enumerate(stages, start=1):
            tag = f"[{number}/{len(stages)}] {stage.title}"
            needed = [by_id[i] for i in ([stage.after] if stage.after else []) + stage.inputs]
            missing = next((s for s in needed if s.status in ("failed", "skipped")), None)
            if missing is not None:
                stage.status, stage.error = "skipped", f"needs {missing.title}, which did not finish"
                self.say(f"{tag}: skipped ({stage.error})")
                self.record(stage)
                continue
            stage.key = self.key(stage, by_id)
            if self.is_cached(stage):
                stage.status = "cached"
                stage.seconds = self.state["stages"][stage.id].get("seconds")
                self.say(f"{tag}: cached")
                continue
            if self.dry_run:
                stage.status = "to run"
                continue
            self._run_stage(stage, tag)

    def _run_stage(self, stage: Stage, tag: str) -> None:
        """Run one stage; a failure is recorded with its reason and does not stop the others."""
        check_interrupt()  # a Ctrl-C swallowed inside the previous stage stops the pipeline here
        previous = self.state["stages"].get(stage.id, {})
        if previous.get("key") not in (None, stage.key) and stage.kind not in ("extract", "raw") and stage.path.exists():
            # Inputs changed: old outputs would be refused (or, worse, mixed in).
            shutil.rmtree(stage.path)
        self.say(f"{tag}: running")
        started = time.perf_counter()
        try:
            extra = getattr(self, f"run_{stage.kind}")(stage)
        except Exception as exc:  # noqa: BLE001 - one failed stage must not lose the others
            stage.seconds = round(time.perf_counter() - started, 3)
            stage.status = "failed"
            stage.error = (str(exc).splitlines() or [""])[0] if isinstance(exc, FeatxError) else f"{type(exc).__name__}: {exc}"
            self.say(f"{tag}: FAILED after {stage.seconds:.1f} s: {stage.error}")
            self.record(stage, traceback=traceback.format_exc(limit=20))
            return
        stage.seconds = round(time.perf_counter() - started, 3)
        stage.status = "done"
        self.say(f"{tag}: done in {stage.seconds:.1f} s")
        self.record(stage, **extra)

    # -- results

    def entries(self, stages: list[Stage]) -> list[dict]:
        """Every finished stage's entries, tagged with the dataset and, for heads, their store
        (whose extraction cost and size the report adds)."""
        out = []
        for stage in stages:
            if stage.kind in ("extract", "raw") or stage.status not in _DONE:
                continue
            for entry in load_results(stage.path):
                entry = {**entry, "dataset": self.pipeline.name, "backbone_label": stage.backbone["label"], "stage": stage.id}
                if isinstance(entry.get("model"), str) and not Path(entry["model"]).is_absolute():
                    # The report's results.json sits in OUT: its rows name their model from there
                    # (OUT/heads/<backbone>/<head>/<head>, OUT/finetune/<backbone>/<mode>/model).
                    entry["model"] = os.path.relpath(stage.path / entry["model"], self.out)
                if _sweeps(self.pipeline, stage.backbone):
                    # Same model listed twice (e.g. crop_pct 1.0 vs default): rows need their labels.
                    entry["backbone"] = stage.backbone["label"]
                if stage.kind == "head":
                    entry["source_path"] = self.pipeline.source["path"]  # thumbnails for the report's gallery
                if stage.feature_set is not None:
                    entry.update(_feature_set_fields(stage, self.by_id, entry.get("stores") or []))
                elif stage.kind == "head":
                    entry["store_path"] = str(self.by_id[stage.after].path)
                    if stage.head["label"] != stage.head["name"]:
                        entry["head"] = stage.head["label"]
                    if stage.backbone.get("control"):
                        entry["control"] = "raw_pixels"  # the report labels these rows as a control
                out.append(entry)
        return out


def _sweeps(pipeline: Pipeline, bb: dict) -> bool:
    """Whether another backbone entry uses the same model (a preprocessing or layers sweep)."""
    return sum(b["name"] == bb["name"] for b in pipeline.backbones) > 1


def _feature_options(bb: dict) -> dict:
    """A backbone's feature options for the extract key; none when unused, so older keys stay valid."""
    chosen = {k: bb.get(k) for k in ("layers", "views", "img_size", "crop_pct", "interpolation") if bb.get(k) is not None}
    return {"features": chosen} if chosen else {}


def _feature_set_fields(stage: Stage, by_id: dict, recorded: list[dict]) -> dict:
    """A feature-set row's identity and cost: every store's extraction seconds, and their sum."""
    from ..store import FeatureStore

    stores, total, size = [], 0.0, 0
    for stage_id in stage.inputs:
        path = by_id[stage_id].path
        try:
            store = FeatureStore(path)
            seconds, nbytes = store.run_info.get("extract_seconds_total"), path.stat().st_size
        except (FeatxError, OSError):
            seconds, nbytes = None, None
        total = None if seconds is None or total is None else total + float(seconds)
        size = None if nbytes is None or size is None else size + nbytes
        # What training recorded (store id, sets, dims), with the stores' current cost.
        stores.append({**(recorded[len(stores)] if len(stores) < len(recorded) else {}), "path": str(path),
                       "label": by_id[stage_id].backbone["label"], "extract_seconds": seconds, "store_bytes": nbytes})
    name = stage.feature_set["name"]
    return {"backbone": name, "backbone_label": name, "feature_set": name, "stores": stores,
            "extract_seconds": total, "store_bytes": size, "extract_images_per_second": None}


def run_pipeline(
    pipeline: str | os.PathLike | dict | Pipeline,
    *,
    overrides=(),
    out: str | os.PathLike | None = None,
    dry_run: bool = False,
    quiet: bool = False,
) -> PipelineRun:
    """Run every stage of a pipeline that is not cached, then write the report; return what happened.

    ``dry_run=True`` only plans: each stage comes back ``cached`` or ``to run`` and
    nothing is written. Failed stages do not raise: they come back ``failed`` (and
    the stages that needed them ``skipped``), the report shows what exists, and
    :attr:`PipelineRun.failed` lists them; running again resumes.
    """
    if not isinstance(pipeline, Pipeline):
        # Backbone names are checked by the runner, with timm only where no identity is recorded.
        pipeline = load_pipeline(pipeline, overrides, out=out, resolve_backbones=False)
    elif out is not None:
        pipeline.out = str(out)
    out_dir = Path(pipeline.out)
    search = None
    if pipeline.search is not None and dry_run:
        search = apply_search(pipeline, out_dir, run=False, quiet=True)  # a search not run yet plans nothing
    stages = plan_pipeline(pipeline, out_dir)
    runner = _Runner(pipeline, out_dir, dry_run, quiet or dry_run)
    result = PipelineRun(pipeline, out_dir, stages, dry_run=dry_run)
    runner.source  # noqa: B018 - a missing source is a usage error before anything is written
    runner.check_backbones()
    if dry_run:
        runner.execute(stages)
        return result

    from filelock import FileLock, Timeout

    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out_dir / ".featx-run.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise FeatxError(f"another `featx run` is writing {out_dir}; wait for it or use another --out") from None
    try:
        remove_stale_temps(out_dir)  # what a killed run left (``.state.json.PID.tmp``, ...)
        if pipeline.search is not None:
            # The search picks backbones and a feature set; the stages then run as if they had been listed.
            search = apply_search(pipeline, out_dir, run=True, quiet=quiet)
            result.stages = stages = plan_pipeline(pipeline, out_dir)
        resolved = out_dir / RESOLVED_FILE
        write_atomic(resolved, f"# {pipeline.path or 'pipeline'} as run: overrides and defaults applied\n"
                     + yaml.safe_dump(pipeline.to_dict(), sort_keys=False))
        runner.execute(stages)
        if runner.identities_changed:  # a run with every stage cached records them here
            write_json_atomic(out_dir / STATE_FILE, runner.state)
        result.entries = runner.entries(stages)
        if search is not None and search[0] is not None:
            tag_search_rows(result.entries, *search)
        rows = [s.row() for s in stages]
        result.report = write_report(out_dir, result.entries, title=f"featx report: {pipeline.name}", stages=rows)
    finally:
        lock.release()
    return result
