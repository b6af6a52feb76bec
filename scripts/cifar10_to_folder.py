"""Convert CIFAR-10's official archive into the image folder featx reads.

    curl -O https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz
    python scripts/cifar10_to_folder.py cifar-10-python.tar.gz data/cifar10

writes ``data/cifar10/{train,test}/<class>/<NNNNN>.png`` (50,000 + 10,000 lossless PNGs,
numbered in the order of the official batches). The archive's batches are Python
pickles; they are read with an unpickler that accepts only the numpy array types they
contain, so a tampered archive cannot run code.
"""

from __future__ import annotations

import argparse
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
TEST = ["test_batch"]
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar")}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the archive")
        return super().find_class(module, name)


def _load(archive: tarfile.TarFile, name: str) -> dict:
    member = next((m for m in archive.getmembers() if m.isfile() and Path(m.name).name == name), None)
    if member is None:
        raise SystemExit(f"{name} is not in the archive: expected the official cifar-10-python.tar.gz")
    return _Unpickler(io.BytesIO(archive.extractfile(member).read()), encoding="bytes").load()


def convert(archive_path: Path, out: Path) -> int:
    written = 0
    with tarfile.open(archive_path, "r:*") as archive:
        classes = [c.decode() for c in _load(archive, "batches.meta")[b"label_names"]]
        for split, batches in (("train", TRAIN), ("test", TEST)):
            index = 0
            for batch in batches:
                data = _load(archive, batch)
                pixels = np.asarray(data[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
                for image, label in zip(pixels, data[b"labels"]):
                    target = out / split / classes[label] / f"{index:05d}.png"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(image).save(target)
                    index += 1
                    written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path, help="cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html")
    parser.add_argument("out", type=Path, help="output folder, e.g. data/cifar10")
    args = parser.parse_args()
    print(f"{convert(args.archive, args.out)} images written under {args.out}")


if __name__ == "__main__":
    main()
