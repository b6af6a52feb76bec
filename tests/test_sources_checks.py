"""Tar shards and Parquet files that say what they did: unique ids across folders, repeated keys,
two images, cut shards, missing labels, huge brace ranges, image paths in Parquet, bad ids,
files that are not Parquet, and labels that are one number spelt two ways."""

from __future__ import annotations

import re
import tarfile
import time

import pytest

from featx import extract, open_source
from featx.core.errors import BadImageError, FeatxUsageError
from featx.data import expand_braces

from .test_scale_sources import _add, _png, write_shards


def _tar(path, members):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            _add(tar, name, data)
    return path


def _reasons(src) -> dict[str, str]:
    out = {}
    for i, item in enumerate(src.items):
        try:
            src.load(i)
        except BadImageError as exc:
            out[item.id] = str(exc)
    return out


def test_same_shard_name_in_two_folders_gives_distinct_ids(tmp_path):
    write_shards(tmp_path / "a", n_shards=1)
    write_shards(tmp_path / "b", n_shards=1)
    src = open_source(str(tmp_path / "{a,b}" / "00000.tar"))
    assert len(src) == 6 and len(set(src.ids)) == 6
    assert src.ids[0] == "a/00000/000000000" and src.ids[3] == "b/00000/000000000"
    # One folder: ids as before (the shard name alone), so existing stores keep their ids.
    assert open_source(str(tmp_path / "a" / "00000.tar")).ids[0] == "00000/000000000"


def test_a_shard_listed_twice_is_one_line(tmp_path):
    write_shards(tmp_path / "a", n_shards=1)
    with pytest.raises(FeatxUsageError, match="appears twice"):
        open_source(str(tmp_path / "a" / "{00000,00000}.tar"))


def test_repeated_key_and_second_image_are_skipped_with_reasons(tmp_path):
    shard = _tar(tmp_path / "s" / "0.tar", [
        ("k1.png", _png(1)), ("k1.cls", b"0"),
        ("k2.png", _png(2)), ("k2.cls", b"1"),
        ("k1.png", _png(3)), ("k1.cls", b"1"),  # the key again, after another sample
        ("k3.png", _png(4)), ("k3.jpg", _png(5)), ("k3.cls", b"0"),
        ("k4.png", _png(6)), ("k4.cls", b"1"),
    ])
    src = open_source(str(shard))
    assert src.ids == ["0/k1", "0/k2", "0/k3", "0/k4"]
    reasons = _reasons(src)
    assert set(reasons) == {"0/k1", "0/k3"}
    assert "repeated" in reasons["0/k1"] and "more than one image" in reasons["0/k3"]


@pytest.mark.parametrize("cut", ["inside_header", "at_member_boundary"])
def test_a_shard_that_ends_early_is_refused(tmp_path, cut):
    whole = _tar(tmp_path / "w.tar", [(f"{k}.{ext}", data) for k in range(6)
                                      for ext, data in (("png", _png(k)), ("cls", b"0"))])
    data = whole.read_bytes()
    with tarfile.open(whole) as tar:
        offsets = [m.offset for m in tar.getmembers()]
    end = offsets[6] + (100 if cut == "inside_header" else 0)
    (tmp_path / "cut.tar").write_bytes(data[:end])
    with pytest.raises(FeatxUsageError, match="ends early"):
        open_source(str(tmp_path / "cut.tar"))
    assert len(open_source(str(whole))) == 6  # the whole shard is fine


def test_sample_without_label_is_skipped_never_a_class(tmp_path):
    shard = _tar(tmp_path / "s" / "0.tar", [
        ("a.png", _png(1)), ("a.cls", b"0"),
        ("b.png", _png(2)),  # no label member
        ("c.png", _png(3)), ("c.txt", b"  "),  # an empty label
        ("d.png", _png(4)), ("d.cls", b"1"),
    ])
    src = open_source(str(shard))
    assert src.class_names == ["0", "1"]
    reasons = _reasons(src)
    assert set(reasons) == {"0/b", "0/c"} and all("no label" in r for r in reasons.values())
    store = extract(src, "test_efficientnet", tmp_path / "f.h5", weights="random", quiet=True, workers=0)
    assert store.n_done == 2 and {s["id"] for s in store.skipped} == {"0/b", "0/c"}
    assert store.class_names == ["0", "1"]


def test_only_unlabelled_samples_is_one_line(tmp_path):
    shard = _tar(tmp_path / "0.tar", [("a.png", _png(1))])
    with pytest.raises(FeatxUsageError, match="no sample has a label"):
        open_source(str(shard))


def test_huge_brace_range_answers_at_once(tmp_path):
    write_shards(tmp_path / "w", n_shards=2)
    started = time.perf_counter()
    with pytest.raises(FeatxUsageError, match=r"file not found: .*w/00002\.tar \(after 2 that exist\)"):
        open_source(str(tmp_path / "w" / "{00000..99999999}.tar"))
    assert time.perf_counter() - started < 5
    with pytest.raises(FeatxUsageError, match="more than 1000"):
        expand_braces("{0..99999999}", limit=1000)


def test_labels_one_number_spelt_two_ways_are_refused(tmp_path):
    shard = _tar(tmp_path / "0.tar", [("a.png", _png(1)), ("a.cls", b"1"), ("b.png", _png(2)), ("b.cls", b"01")])
    with pytest.raises(FeatxUsageError, match="labels '0?1' and '0?1' are the same number"):
        open_source(str(shard))
    (tmp_path / "img").mkdir()
    for k in range(2):
        (tmp_path / "img" / f"{k}.png").write_bytes(_png(k))
    (tmp_path / "m.csv").write_text("path,label\nimg/0.png,7\nimg/1.png,007\n")
    with pytest.raises(FeatxUsageError, match="same number"):
        open_source(str(tmp_path / "m.csv"))


def _parquet(path, **columns):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_image_column_may_hold_paths(tmp_path):
    (tmp_path / "imgs").mkdir()
    for k in range(2):
        (tmp_path / "imgs" / f"{k}.png").write_bytes(_png(k))
    src = open_source(str(_parquet(tmp_path / "p.parquet", image=["imgs/0.png", "imgs/1.png", "imgs/gone.png"],
                                   label=["x", "y", "x"])))
    assert src.load(0).size == (20, 16) and src.load(1).size == (20, 16)
    with pytest.raises(BadImageError, match="cannot read image file"):
        src.load(2)
    hf = open_source(str(_parquet(tmp_path / "hf.parquet", image=[{"bytes": None, "path": "imgs/1.png"}],
                                  label=["x"])))
    assert hf.load(0).size == (20, 16)


def test_parquet_null_label_is_skipped(tmp_path):
    src = open_source(str(_parquet(tmp_path / "p.parquet", image=[_png(0), _png(1)], label=["x", None])))
    assert src.class_names == ["x"]
    assert "no label" in _reasons(src)["p/1"]


@pytest.mark.parametrize(("ids", "message"), [(["a", "b\x00c"], "NUL"), (["a", None], "null"), (["a", "a"], "twice")])
def test_parquet_bad_ids_are_one_line(tmp_path, ids, message):
    path = _parquet(tmp_path / "p.parquet", image=[_png(0), _png(1)], label=["x", "y"], id=ids)
    with pytest.raises(FeatxUsageError, match=message):
        open_source(str(path))


def test_a_file_that_is_not_parquet_is_one_line(tmp_path):
    pytest.importorskip("pyarrow")
    from click.testing import CliRunner

    from featx.cli import cli

    (tmp_path / "x.parquet").write_text("path,label\n")
    with pytest.raises(FeatxUsageError, match="not a readable Parquet file"):
        open_source(str(tmp_path / "x.parquet"))
    result = CliRunner().invoke(cli, ["extract", "--source", str(tmp_path / "x.parquet"), "--out",
                                      str(tmp_path / "o.h5"), "--backbone", "test_efficientnet", "--weights", "random"])
    assert result.exit_code == 2 and "not a readable Parquet file" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--layers", ","], "empty entry"),
    (["--layers", "-1,,-2"], "empty entry"),
    (["--layers", "-1,-1"], "listed twice"),
    (["--views", "hflip,hflip"], "listed twice"),
    (["--img-size", "100000"], "16..4096"),
    (["--img-size", "4"], "16..4096"),
    (["--crop-pct", "0.0001"], r"crop_pct must be in \[0.1, 1\]"),
    (["--crop-pct", "0"], "crop_pct must be in"),
    (["--img-size", "4096", "--crop-pct", "0.2"], "before cropping"),
    (["--backbone", "test_vit", "--img-size", "100"], "not a multiple of test_vit's 16x16 patch"),
])
def test_option_bounds_are_one_line_before_any_model(tmp_path, monkeypatch, args, message):
    from click.testing import CliRunner

    import featx.extraction._extractor as extractor
    from featx.cli import cli

    def no_model(*a, **k):
        raise AssertionError("a model was built")

    monkeypatch.setattr(extractor, "create_backbone", no_model)
    (tmp_path / "img" / "a").mkdir(parents=True)
    (tmp_path / "img" / "a" / "0.png").write_bytes(_png(0))
    base = ["extract", "--source", str(tmp_path / "img"), "--out", str(tmp_path / "o.h5"), "--weights", "random", "-q"]
    if "--backbone" not in args:
        base += ["--backbone", "test_efficientnet"]
    result = CliRunner().invoke(cli, base + args)
    assert result.exit_code == 2, result.output
    assert re.search(message, result.output) and "Traceback" not in result.output
    assert not (tmp_path / "o.h5").exists()


# --------------------------------------------------------------------------- folder walks and CSV aliases


def _folder(root, classes=("cat", "dog"), n=2):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            (root / name / f"{k}.png").write_bytes(_png(10 * c + k))
    return root


def test_link_to_an_ancestor_never_relabels_other_classes(tmp_path):
    root = _folder(tmp_path / "imgs")
    (root / "cat" / "loop").symlink_to("..")
    src = open_source(str(root))
    assert [i.id for i in src.items if src.class_names[i.label] == "cat" and "dog" in i.id] == []
    reasons = _reasons(src)
    assert reasons == {"cat/loop/": "symbolic link loop (points to a folder above it)"}
    assert len(src) == 5


def test_links_into_the_tree_are_skipped_and_real_folders_walked_once(tmp_path):
    root = _folder(tmp_path / "imgs")
    outside = _folder(tmp_path / "elsewhere", classes=("extra",))
    (root / "cat" / "dogs").symlink_to(root / "dog")  # a folder of the tree under a second label
    (root / "cat" / "x.png").symlink_to(root / "dog" / "0.png")  # one file of the tree, relabelled
    (root / "cat" / "ext1").symlink_to(outside / "extra")  # leaves the tree: followed, once
    (root / "dog" / "ext2").symlink_to(outside / "extra")
    src = open_source(str(root))
    reasons = _reasons(src)
    assert "inside the source folder" in reasons["cat/dogs/"] and "inside the source folder" in reasons["cat/x.png"]
    assert reasons["dog/ext2/"] == "folder already listed under another name"
    usable = [i.id for n, i in enumerate(src.items) if i.id not in reasons]
    assert sorted(usable) == ["cat/0.png", "cat/1.png", "cat/ext1/0.png", "cat/ext1/1.png", "dog/0.png", "dog/1.png"]


def test_hard_link_aliases_in_a_csv_are_refused(tmp_path):
    import os

    root = _folder(tmp_path / "imgs")
    os.link(root / "cat" / "0.png", root / "dog" / "alias.png")
    (tmp_path / "m.csv").write_text("path,label\nimgs/cat/0.png,cat\nimgs/dog/1.png,dog\nimgs/dog/alias.png,dog\n")
    with pytest.raises(FeatxUsageError, match=r"hard links to one file.*different labels \('cat' and 'dog'\)"):
        open_source(str(tmp_path / "m.csv"))


def test_hard_link_in_an_image_folder_is_skipped_with_the_reason(tmp_path):
    import os

    root = _folder(tmp_path / "imgs")
    os.link(root / "cat" / "0.png", root / "dog" / "same.png")
    src = open_source(str(root))
    assert _reasons(src) == {"dog/same.png": "hard link to 'cat/0.png' (the same file, listed there); skipped so "
                                            "one image is never two items"}


def test_members_of_one_key_may_lie_apart(tmp_path):
    # `tar cf x.tar *.png *.cls` groups by extension: still one sample per key, nothing skipped.
    shard = _tar(tmp_path / "0.tar", [("a.png", _png(1)), ("b.png", _png(2)), ("a.cls", b"0"), ("b.cls", b"1")])
    src = open_source(str(shard))
    assert src.ids == ["0/a", "0/b"] and src.labels.tolist() == [0, 1] and _reasons(src) == {}
