"""The Ray engine: decode in Ray tasks, embed in an actor pool, one shard per Ray row.

The driver lists the source and owns the manifest (``_extractor``). It turns each
pending shard into one row ``{shard, start, stop}`` of a Ray dataset; a decode task
opens the shard's images and applies the PIL half of timm's eval transform (resize,
centre crop) to uint8 pixels; an actor of the pool (one backbone replica per GPU, or
per ``cpus_per_actor`` CPUs) applies the tensor half (scale, normalise), runs the
model and commits the shard file itself, by atomic rename, on the shared file system.
Only the shard's manifest entry travels back to the driver.

Faults: Ray Data retries a failed decode task and restarts a dead actor, re-running its
shard (``max_task_retries=-1`` by default for actor pools). A shard is always the same
rows, written under a unique temporary name and renamed, so a retry overwrites it with
the same file and never duplicates a row; a killed node costs the shards in flight.
A killed driver loses only manifest entries, which the next run adopts from disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..core.errors import FeatxError, FeatxUsageError, missing_extra

__all__ = ["connect", "join_ray", "run_ray_shards", "RayCluster", "split_eval_transform", "ray_errors",
           "describe_ray_failure"]


@dataclass
class RayCluster:
    """What the driver resolved about the cluster before writing anything."""

    device_type: str
    actors: int
    gpus_per_actor: float
    cpus_per_actor: float
    started_here: bool


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the engine needs Ray Data, not only the core
    except ImportError:
        raise missing_extra("the ray engine needs Ray Data", "ray") from None
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A TCP probe of HOST:PORT first: ``ray.init`` retries an unreachable GCS for minutes."""
    import socket

    if address == "auto":
        return  # Ray finds the local cluster from its session files, and fails at once without one
    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise FeatxUsageError(f"--address {address!r} is not 'auto', HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise FeatxError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc} "
                         "(start one with `ray start --head`, or check the address)") from None


@contextlib.contextmanager
def _quiet_backend() -> Iterator[None]:
    """Ray's C++ side (the driver's core worker, and the raylet and workers it starts) logging only
    fatal lines, unless the user set ``RAY_BACKEND_LOG_LEVEL`` (then theirs is kept, as is its output).

    Its error level is not featx's: every Ray Data actor receives its operator by object-store
    reference, which ``core_worker.cc`` reports on every run as "constructor arguments in the
    object store" (ray-project/ray#53727), whatever the arguments. Real failures still reach
    featx as exceptions (:func:`ray_errors`), and Ray's log files keep everything. The one line
    the core worker prints about the setting itself, while ``ray.init`` starts it, is dropped.
    """
    import sys

    if os.environ.get("RAY_BACKEND_LOG_LEVEL"):
        yield
        return
    os.environ["RAY_BACKEND_LOG_LEVEL"] = "fatal"
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        os.environ.pop("RAY_BACKEND_LOG_LEVEL", None)


def join_ray(ray, address: str | None) -> bool:
    """Join ``address``, or start a private local Ray; True when this process started it.

    Without an address Ray's own default would join whatever cluster already runs on the
    machine (perhaps another user's), so a private instance is asked for explicitly
    (``address="local"``). Either way one line on stderr says which Ray the work runs on.
    """
    import sys

    if ray.is_initialized():
        return False
    if address:
        _check_reachable(address)
    try:
        with _quiet_backend():
            ray.init(address=address or "local", include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                     configure_logging=True)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError or its own types here
        where = address or "a local Ray instance"
        raise FeatxError(f"cannot connect to the Ray cluster at {where}: {str(exc).splitlines()[0]}") from None
    resources = ray.cluster_resources()
    size = f"{int(resources.get('CPU', 0))} CPUs, {int(resources.get('GPU', 0))} GPUs"
    if address:
        where = ray.get_runtime_context().gcs_address
        print(f"featx: joined the Ray cluster at {where} ({len(ray.nodes())} node(s), {size})", file=sys.stderr)
    else:
        ignored = "; RAY_ADDRESS is set but ignored" if os.environ.get("RAY_ADDRESS") else ""
        print(f"featx: started a private local Ray instance ({size}); --address auto joins a running "
              f"cluster instead{ignored}", file=sys.stderr)
    return True


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception behind it: causes, contexts, a Ray task's cause, Ray Train's worker failures."""
    out, todo, seen = [], [exc], set()
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        out.append(current)
        failures = getattr(current, "worker_failures", None)
        explicit = [getattr(current, "cause", None), current.__cause__,
                    *(failures.values() if isinstance(failures, dict) else ())]
        explicit = [e for e in explicit if isinstance(e, BaseException)]
        # The implicit context only where nothing names a cause: Ray's internals leave unrelated ones.
        todo += explicit or [current.__context__]
    return out


def _is_ray(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] == "ray"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


_KINDS = (  # (Ray exception class names, what a user reads); the first that occurs in the chain wins
    (("OutOfMemoryError",), "a Ray worker was killed because the node ran out of memory; use fewer --actors or "
                            "a smaller --batch-size"),
    (("ObjectStoreFullError", "OutOfDiskError"), "Ray ran out of object-store or disk space"),
    (("ActorDiedError", "RayActorError", "ActorUnavailableError"), "a Ray actor died"),
    (("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "OwnerDiedError"), "a Ray worker or node died"),
    (("WorkerGroupError",), "a Ray Train worker failed"),
    (("TrainingFailedError", "ControllerError"), "Ray Train failed"),
    (("RayTaskError", "UserCodeException", "RayDataUserCodeException"), "a Ray task failed"),
)


def describe_ray_failure(exc: BaseException) -> BaseException | str | None:
    """What a failure that came out of Ray was, in one line; a featx error raised inside Ray is given back
    as is; ``None`` when ``exc`` did not come from Ray."""
    chain = _chain(exc)
    for error in chain:
        if isinstance(error, FeatxError) and not _is_ray(error):  # Ray's wrapper also claims to be one
            return error
    if not any(_is_ray(e) for e in chain):
        return None
    names = {type(e).__name__ for e in chain} | {c.__name__ for e in chain for c in type(e).__mro__}
    what = next((text for kinds, text in _KINDS if names & set(kinds)), f"Ray failed ({type(exc).__name__})")
    # The deepest exception that is not Ray's own names the cause (the user code's error); Ray Data
    # often keeps it only as text in the remote traceback.
    root = next((e for e in reversed(chain) if not _is_ray(e)), None)
    detail = f"{type(root).__name__}: {_first_line(root)}" if root is not None else _cause_in_text(chain)
    return f"{what} ({detail})"


_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*): (\S.*)$", re.M)


def _cause_in_text(chain: list[BaseException]) -> str:
    """The first ``Type: message`` line of a remote traceback that is not Ray's, else Ray's own first line."""
    for error in chain:
        for match in _EXCEPTION_LINE.finditer(getattr(error, "traceback_str", "") or str(error)):
            if match.group(1).split(".")[0] != "ray":
                return f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2).strip()}"
    return _first_line(chain[-1])


@contextlib.contextmanager
def ray_errors(what: str, cleanup: str | os.PathLike | None = None) -> Iterator[None]:
    """Turn any failure that comes out of Ray into one featx line naming the cause.

    ``cleanup`` (a folder featx made for Ray, such as Ray Train's storage) is removed on any
    failure, interrupts included, so a failed run leaves nothing behind.
    """
    try:
        yield
    except BaseException as exc:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        described = describe_ray_failure(exc) if isinstance(exc, Exception) else None
        if described is None or described is exc:
            raise
        if isinstance(described, BaseException):
            raise described from None
        raise FeatxError(f"{what} failed: {described}") from None


def connect(device: str = "auto", address: str | None = None, actors: int | None = None,
            gpus_per_actor: float | None = None, cpus_per_actor: float = 1.0) -> RayCluster:
    """Connect to Ray and resolve the device and pool size; fails in one line before any write."""
    if device not in ("auto", "cpu", "cuda"):
        raise FeatxUsageError(f"with --engine ray, --device is auto, cpu or cuda (the actors pick their GPU); got {device!r}")
    ray = _import_ray()
    started = join_ray(ray, address)
    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    if device == "cuda" and gpus == 0:
        if started:
            ray.shutdown()
        raise FeatxError("--device cuda was asked for but the Ray cluster has no GPUs; use --device cpu or auto")
    use_gpu = gpus > 0 and device != "cpu" and gpus_per_actor != 0
    per_actor = (gpus_per_actor or 1.0) if use_gpu else 0.0
    if actors is None:
        actors = max(1, int(gpus // per_actor)) if use_gpu else 1
    return RayCluster("cuda" if use_gpu else "cpu", int(actors), per_actor, cpus_per_actor, started)


def split_eval_transform(data_config: dict):
    """timm's eval transform cut in two: the PIL part (resize, crop) and the tensor part (normalise).

    Decode tasks ship uint8 pixels (4x smaller than float32); ``to_tensor`` of those pixels
    then equals what the single-process loader computes from the PIL image.
    """
    from ._inputs import make_eval_transform

    steps = list(make_eval_transform(data_config).transforms)
    cut = next(i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__)
    return steps[:cut], steps[cut + 1:]


_SOURCES: dict = {}  # per worker process: the source behind each object-store reference, unpickled once


def _resolve_source(source):
    """The Source behind ``source`` (an object-store reference, or the Source itself)."""
    import ray

    if not isinstance(source, ray.ObjectRef):
        return source
    if source not in _SOURCES:
        _SOURCES.clear()  # one extraction at a time per worker: an earlier run's listing is not kept
        _SOURCES[source] = ray.get(source)
    return _SOURCES[source]


def _decode_shards(batch: dict, source, data_config: dict) -> dict:
    """Ray task: one shard row -> its resized, cropped uint8 pixels, per-item skip reasons and, for
    file items, the content hash and stat data read with the image (as the local loader records)."""
    source = _resolve_source(source)
    pil_steps, _ = split_eval_transform(data_config)
    _, height, width = data_config["input_size"]
    out = {"shard": [], "start": [], "pixels": [], "reasons": [], "ids": [], "records": []}
    for shard, start, stop in zip(batch["shard"], batch["start"], batch["stop"]):
        pixels = np.zeros((int(stop) - int(start), height, width, 3), dtype=np.uint8)
        reasons, records = [], []
        for row, index in enumerate(range(int(start), int(stop))):
            image, reason, record = source.load_item(index)  # the bytes read once: hashed, then decoded
            records.append(None if record is None else [record.digest, list(record.stat)])
            if image is not None:
                for step in pil_steps:
                    image = step(image)
                pixels[row] = np.asarray(image, dtype=np.uint8)
            reasons.append(reason or None)
        out["shard"].append(int(shard))
        out["start"].append(int(start))
        out["pixels"].append(pixels.tobytes())
        out["reasons"].append(json.dumps(reasons))
        out["ids"].append(json.dumps([source.items[i].id for i in range(int(start), int(stop))]))
        out["records"].append(json.dumps(records))
    return {k: np.array(v) if k in ("shard", "start") else np.array(v, dtype=object) for k, v in out.items()}


def _shard_records(records_json: str) -> list:
    """The item records (or None) of a decoded shard's rows, as the local loader hands them over."""
    from ..data import ItemRecord

    return [ItemRecord(tuple(r[1]), r[0]) if r else None for r in json.loads(records_json)]


class _EmbedShards:
    """Ray actor: one backbone replica; embeds a decoded shard and commits it as ``part-NNNNN.h5``."""

    def __init__(self, spec, data_config: dict, device_type: str, precision: str, cpus: float, batch_size: int,
                 out_dir: str, dtype: str, stamp: dict | None = None, records: bool = False):
        import torch

        from ..core.runtime import tune_malloc
        from ._backbones import create_backbone

        # A CPU actor owns `cpus` cores; more torch threads would only spin against its neighbours.
        torch.set_num_threads(max(1, int(cpus)))
        tune_malloc()
        self.device = torch.device(device_type)
        self.model, _ = create_backbone(spec)
        self.model.to(self.device)
        _, self.tensor_steps = split_eval_transform(data_config)
        self.shape = tuple(data_config["input_size"])
        self.precision, self.batch_size = precision, batch_size
        self.out_dir, self.dtype, self.stamp, self.records = out_dir, dtype, stamp, records
        import ray

        self.node = ray.get_runtime_context().get_node_id()

    def _embed(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        from ..core.runtime import autocast_context

        feats = []
        with torch.inference_mode():
            for lo in range(0, len(pixels), self.batch_size):
                x = torch.from_numpy(pixels[lo:lo + self.batch_size]).permute(0, 3, 1, 2).contiguous()
                x = x.to(dtype=torch.get_default_dtype()).div(255)
                for step in self.tensor_steps:
                    x = step(x)
                with autocast_context(self.device, self.precision):
                    out = self.model(x.to(self.device))
                feats.append(out.float().reshape(len(x), -1).cpu().numpy())
        return np.concatenate(feats) if feats else np.zeros((0, 0), dtype=np.float32)

    def __call__(self, batch: dict) -> dict:
        from ..store import write_shard

        entries = []
        for shard, start, blob, reasons_json, ids_json, records_json in zip(
                batch["shard"], batch["start"], batch["pixels"], batch["reasons"], batch["ids"], batch["records"]):
            reasons = json.loads(reasons_json)
            pixels = np.frombuffer(blob, dtype=np.uint8).reshape(len(reasons), self.shape[1], self.shape[2], 3)
            feats = self._embed(pixels)
            feats[[i for i, r in enumerate(reasons) if r]] = 0.0
            # The same shard file as the local engine writes: per-item content hashes when the store keeps them.
            records = _shard_records(records_json) if self.records else None
            entry = write_shard(self.out_dir, int(shard), int(start), json.loads(ids_json), feats, reasons, self.dtype,
                                stamp=self.stamp, records=records)
            entry["node"] = self.node  # which machine wrote it: for the record, and the node-loss test
            entries.append(json.dumps(entry))
        return {"entry": np.array(entries, dtype=object)}


def run_ray_shards(writer, src, spec, data_config: dict, cluster: RayCluster, *, prec: str, dtype: str,
                   batch_size: int, strict: bool, quiet: bool) -> dict:
    """Run the pending shards of ``writer`` on Ray; record each shard in the manifest as it lands."""
    ray = _import_ray()
    from ..core.bars import progress_bar as tqdm  # a bar on a terminal, plain lines in a log

    try:
        pending = writer.pending_shards()
        rows = [dict(zip(("shard", "start", "stop"), (k, *writer.shard_range(k)))) for k in pending]
        total = sum(r["stop"] - r["start"] for r in rows)
        if rows:
            with ray_errors("extraction on Ray"):
                _drive(ray, writer, src, spec, data_config, cluster, rows, prec, dtype, batch_size, strict, quiet, tqdm)
    finally:
        if cluster.started_here:
            ray.shutdown()
    return {"engine": "ray", "device": cluster.device_type, "actors": cluster.actors,
            "gpus_per_actor": cluster.gpus_per_actor, "batch_size": batch_size,
            "shard_size": writer.manifest["shard_size"], "rows_this_run": total}


def _drive(ray, writer, src, spec, data_config, cluster, rows, prec, dtype, batch_size, strict, quiet, tqdm) -> None:
    import logging

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # Ray Data's notes (progress bars off, operator plans) are not the user's business; its errors still raise.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    # Plain dicts travel to the workers. The source listing (every item's path: megabytes for a big
    # source) goes into the object store once, by reference: Ray Data fuses the decode into the
    # actors, so whatever the decode takes by value would be part of every actor's constructor
    # arguments. The actor itself gets names and options only, and builds the model from them.
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds = ds.map_batches(_decode_shards, batch_size=1, fn_kwargs={"source": ray.put(src), "data_config": data_config},
                        num_cpus=1)
    ds = ds.map_batches(
        # A fixed pool of N actors, all started at once. An autoscaling pool (min 1, max N) only
        # grows when work queues, so with shards as fast as decoding it stayed at one actor:
        # --actors 2 wrote every shard from one node.
        _EmbedShards, batch_size=1, compute=ray.data.ActorPoolStrategy(size=cluster.actors),
        num_gpus=cluster.gpus_per_actor or None, num_cpus=cluster.cpus_per_actor,
        fn_constructor_kwargs={
            "spec": spec, "data_config": data_config, "device_type": cluster.device_type, "precision": prec,
            "cpus": cluster.cpus_per_actor, "batch_size": batch_size, "out_dir": os.fspath(writer.path), "stamp": writer.stamp,
            "dtype": dtype, "records": writer.has_records,
        },
    )
    total = sum(r["stop"] - r["start"] for r in rows)
    with tqdm(total=total, unit="img", desc="extract (ray)", disable=quiet, dynamic_ncols=True) as bar:
        for row in ds.iter_rows():
            entry = json.loads(row["entry"])
            writer.record(entry)
            bar.update(entry["rows"])
            if strict and entry["skipped"]:
                row_index, reason = entry["skipped"][0]
                raise FeatxError(f"bad image {src.items[row_index].id}: {reason} (--strict)")
