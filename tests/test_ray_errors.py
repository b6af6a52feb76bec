"""Ray without surprises: no --address starts a private instance (never a running cluster), --address
auto joins and says which, and every failure that comes out of Ray is one featx line naming its cause,
with Ray Train's storage of a failed run removed."""

from __future__ import annotations

import pytest

from featx.core.errors import FeatxError, FeatxUsageError
from featx.extraction import join_ray, ray_errors
from featx.extraction._ray import describe_ray_failure

pytestmark = pytest.mark.ray


class _Context:
    gcs_address = "10.0.0.5:6379"


class FakeRay:
    """Records how ``ray.init`` was called, without starting anything."""

    def __init__(self):
        self.calls = []

    def is_initialized(self):
        return False

    def init(self, **kwargs):
        self.calls.append(kwargs)

    def cluster_resources(self):
        return {"CPU": 4.0, "GPU": 1.0}

    def nodes(self):
        return [{}, {}]

    def get_runtime_context(self):
        return _Context()


def test_no_address_starts_a_private_instance_and_says_so(monkeypatch, capsys):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # someone's running cluster: not joined
    ray = FakeRay()
    assert join_ray(ray, None) is True
    assert ray.calls[0]["address"] == "local"
    err = capsys.readouterr().err
    assert "started a private local Ray instance (4 CPUs, 1 GPUs)" in err and "RAY_ADDRESS is set but ignored" in err


def test_address_auto_joins_and_names_the_cluster(capsys):
    ray = FakeRay()
    join_ray(ray, "auto")
    assert ray.calls[0]["address"] == "auto"
    assert "joined the Ray cluster at 10.0.0.5:6379 (2 node(s), 4 CPUs, 1 GPUs)" in capsys.readouterr().err


def _task_error(cause: Exception):
    from ray.exceptions import RayTaskError

    return RayTaskError("_decode_shards", "Traceback ...\n" * 30, cause).as_instanceof_cause()


def test_ray_failures_are_one_line_naming_the_cause():
    pytest.importorskip("ray")
    from ray.exceptions import ActorDiedError, OutOfMemoryError
    from ray.train import WorkerGroupError

    task = describe_ray_failure(_task_error(ValueError("cannot identify image\nmore lines")))
    assert task == "a Ray task failed (ValueError: cannot identify image)"
    oom = describe_ray_failure(OutOfMemoryError("Task was killed due to the node running low on memory.\n..."))
    assert oom.startswith("a Ray worker was killed because the node ran out of memory")
    assert describe_ray_failure(ActorDiedError()).startswith("a Ray actor died")
    group = describe_ray_failure(WorkerGroupError("Training failed\n" * 20, {0: MemoryError("xgboost: cannot allocate")}))
    assert group == "a Ray Train worker failed (MemoryError: xgboost: cannot allocate)"
    own = FeatxUsageError("bad --param")
    assert describe_ray_failure(_task_error(own)) is own  # a featx error inside Ray stays itself
    assert describe_ray_failure(KeyError("x")) is None  # not Ray's: not ours to reword


def test_ray_errors_is_one_featx_line_and_removes_its_folder(tmp_path):
    pytest.importorskip("ray")
    storage = tmp_path / "run" / ".ray-train"
    (storage / "checkpoint_000").mkdir(parents=True)
    expected = r"^xgboost on Ray Train failed: a Ray task failed \(ValueError: boom\)$"
    with pytest.raises(FeatxError, match=expected), ray_errors("xgboost on Ray Train", cleanup=storage):
        raise _task_error(ValueError("boom"))
    assert not storage.exists() and (tmp_path / "run").exists()
    with pytest.raises(KeyError), ray_errors("x"):  # anything else passes through unchanged
        raise KeyError("k")
