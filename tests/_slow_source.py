"""A deliberately slow image folder, run in a subprocess that the tests SIGKILL mid-extraction."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from featx import ImageFolderSource, extract, resolve_backbone


class SlowFolder(ImageFolderSource):
    def __init__(self, root, marker: Path, mark_after: int):
        super().__init__(root)
        self.marker, self.mark_after, self.loaded = marker, mark_after, 0

    delay = 0.03

    def load_item(self, index):
        time.sleep(self.delay)
        self.loaded += 1
        if self.loaded == self.mark_after:
            self.marker.write_text("ready")
        return super().load_item(index)


if __name__ == "__main__":
    folder, out, marker, mark_after = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    workers = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    SlowFolder.delay = float(sys.argv[6]) if len(sys.argv) > 6 else SlowFolder.delay
    spec = resolve_backbone("test_efficientnet", weights="random")
    extract(SlowFolder(folder, marker, mark_after), spec, out, batch_size=4, workers=workers, quiet=True)
