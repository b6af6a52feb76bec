"""Property-based tests (hypothesis) for what featx reads from disk: folder listings with
arbitrary file names (bytes that are not UTF-8 included) and CSV manifests with arbitrary
contents. Whatever the input, a source either lists every file losslessly or refuses with
a FeatxUsageError; never another exception."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featx import CsvSource, FeatxUsageError, ImageFolderSource
from featx.data import safe_id

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any byte but "/" and NUL; not hidden (a leading dot is ignored on purpose); short.
name_bytes = st.binary(min_size=1, max_size=12).map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"_")).filter(
    lambda b: not b.startswith(b"."))


@SETTINGS
@given(st.lists(name_bytes, min_size=1, max_size=8, unique=True))
def test_any_file_names_are_listed_losslessly(names):
    with tempfile.TemporaryDirectory() as tmp:
        cls = os.path.join(os.fsencode(tmp), b"cls")
        os.mkdir(cls)
        for name in names:
            with open(os.path.join(cls, name), "wb") as handle:
                handle.write(name)
        src = ImageFolderSource(tmp)
        assert len(src) == len(names)
        # Every id is valid UTF-8 and distinct; every item leads back to its own file.
        for i, item in enumerate(src.items):
            item.id.encode("utf-8")
            assert src.path_of(i).read_bytes() == os.fsencode(src.path_of(i).name)
        assert len({item.id for item in src.items}) == len(names)
        # What a store writes: ids as HDF5 UTF-8 strings, and the fingerprints.
        with h5py.File(io.BytesIO(), "w") as h5:
            h5.create_dataset("ids", data=np.asarray(src.ids, dtype=object), dtype=h5py.string_dtype())
            assert list(h5["ids"].asstr()[:]) == src.ids
        assert src.fingerprint() and src.structure_fingerprint()


@SETTINGS
@given(st.lists(st.binary(min_size=1, max_size=10).filter(lambda b: b"\\" not in b), min_size=2, max_size=6,
                unique=True))
def test_safe_id_is_utf8_and_injective_without_backslashes(raw):
    ids = [safe_id(os.fsdecode(b)) for b in raw]
    for text in ids:
        text.encode("utf-8")
    assert len(set(ids)) == len(ids)


@SETTINGS
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_any_csv_text_gives_a_source_or_a_usage_error(text):
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "m.csv"
        manifest.write_text(text, encoding="utf-8")
        try:
            src = CsvSource(manifest)
        except FeatxUsageError:
            return
        assert len(src) >= 1 and len({item.id for item in src.items}) == len(src)


safe_part = st.text(alphabet="abcdefghij0123456789_-", min_size=1, max_size=6)


@SETTINGS
@given(st.lists(st.tuples(st.lists(safe_part, min_size=1, max_size=3), st.sampled_from(["cat", "dog", "x,y", 'q"t'])),
                min_size=1, max_size=10, unique_by=lambda row: "/".join(row[0])),
       st.data())
def test_csv_rows_round_trip_and_any_alias_is_refused(rows, data):
    with tempfile.TemporaryDirectory() as tmp:
        paths = ["/".join(parts) + ".png" for parts, _ in rows]
        if len({p.lower() for p in paths}) != len(paths) or any(
                a != b and b.startswith(a[:-4] + "/") for a in paths for b in paths):
            return  # a file and a folder of one name cannot both exist
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["path", "label"])
        writer.writerows([(p, label) for p, (_, label) in zip(paths, rows)])
        manifest = Path(tmp) / "m.csv"
        manifest.write_text(buffer.getvalue())
        src = CsvSource(manifest)
        assert src.ids == paths
        assert [src.class_names[i.label] for i in src.items] == [label for _, label in rows]
        # The same image again under another spelling: always refused, naming both lines.
        i = data.draw(st.integers(0, len(paths) - 1))
        alias = data.draw(st.sampled_from([f"./{paths[i]}", f"{Path(tmp) / paths[i]}",
                                           f"{paths[i].split('/')[0]}/../{paths[i]}"]))
        writer.writerow([alias, data.draw(st.sampled_from(["cat", "dog"]))])
        manifest.write_text(buffer.getvalue())
        try:
            CsvSource(manifest)
        except FeatxUsageError as exc:
            assert "listed twice" in str(exc) and f"line {i + 2}" in str(exc)
        else:
            raise AssertionError(f"alias {alias!r} of {paths[i]!r} was accepted")
