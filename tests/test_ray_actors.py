"""``--actors N`` means N concurrent actors: on a 2-node cluster both nodes write shards."""

from __future__ import annotations

import json

import pytest

from featx import extract

from .conftest import write_image_folder

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_two_actors_on_two_nodes_both_write_shards(tiny_spec, tmp_path):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    folder = write_image_folder(tmp_path / "imgs", n_per_class=8, classes=("a", "b"))
    # Each node fits one 2-CPU actor and one decode task: a pool of 2 actors needs both nodes.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=3), cluster.add_node(num_cpus=3)]
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        store = extract(folder, tiny_spec, tmp_path / "out", engine="ray", shard_size=2, quiet=True,
                        ray_options={"actors": 2, "cpus_per_actor": 2})
        manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
        writers = {entry["node"] for entry in manifest["shards"].values()}
        assert store.complete and store.run_info["actors"] == 2
        assert writers == {node.node_id for node in nodes}, writers
    finally:
        ray.shutdown()
        cluster.shutdown()
