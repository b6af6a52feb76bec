"""A Ray-engine extraction of a deliberately slow folder, run in a subprocess the tests SIGKILL."""

from __future__ import annotations

import os
import sys
import time

from featx import ImageFolderSource, extract, resolve_backbone


class SlowFolder(ImageFolderSource):
    def load(self, index):
        time.sleep(0.05)  # slow enough that the test sees the first shard land before the last
        return super().load(index)


if __name__ == "__main__":
    folder, out = sys.argv[1], sys.argv[2]
    spec = resolve_backbone("test_efficientnet", weights="random")
    extract(SlowFolder(folder), spec, out, shard_size=4, batch_size=4, engine="ray", quiet=True,
            ray_options={"address": os.environ.get("RAY_ADDRESS")})  # join the test's instance
