"""Property-based tests of the pipeline loader: any YAML gives a Pipeline or one FeatxUsageError line.

Documents are random trees over the pipeline's own keys and values (so many get deep
into validation), dumped with shared and self-referencing parts (PyYAML writes those
as anchors and aliases), plus raw text built from YAML's punctuation. Whatever the
input, :func:`featx.load_pipeline` must return a :class:`Pipeline` or raise
:class:`FeatxUsageError` whose message starts with the file (and usually the line);
any other exception (RecursionError, TypeError, ...) is a bug.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featx import FeatxUsageError
from featx.pipeline import Pipeline, load_pipeline

KEYS = ["name", "source", "path", "backbones", "heads", "finetune", "per_class", "seeds", "device", "out", "label",
        "weights", "pooling", "batch_size", "params", "mode", "epochs", "val_fraction", "split_seed", "n_neighbors",
        "test_fraction", "dtype", "precision", "workers", "backbones", "bogus", 1, None, True]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**12), st.floats(allow_nan=True),
                    st.sampled_from(["digits", "logreg", "knn", "test_efficientnet", "linear", "all", "avg", "",
                                     "random", "cpu", "float16", "runs/x", "..", "a b"]),
                    st.text(max_size=6))
TREES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
                     max_leaves=25)
DOCS = st.fixed_dictionaries({}, optional={k: TREES for k in ["name", "source", "backbones", "heads", "finetune",
                                                               "per_class", "seeds", "device", "out", "bogus"]})
_DIR = Path(tempfile.mkdtemp(prefix="featx-yaml-"))
# database=None: no .hypothesis folder written into the checkout.
SETTINGS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _check(text: str) -> None:
    path = _DIR / "p.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        result = load_pipeline(path)
    except FeatxUsageError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and "\n" not in message, message
        return
    assert isinstance(result, Pipeline)


def _share(doc: dict, data) -> dict:
    """Reuse one sub-tree in another place, or make it contain itself: anchors and aliases once dumped."""
    holders = [v for v in doc.values() if isinstance(v, (list, dict))]
    if holders:
        holder = data.draw(st.sampled_from(holders))
        target = data.draw(st.sampled_from([*holders, doc]))
        if isinstance(holder, list):
            holder.append(target)
        else:
            holder[data.draw(st.sampled_from(KEYS))] = target
    return doc


@SETTINGS
@given(DOCS, st.data())
def test_random_documents_give_a_pipeline_or_one_usage_line(doc, data):
    if data.draw(st.booleans()):
        doc = _share(doc, data)
    _check(yaml.safe_dump(doc, default_flow_style=data.draw(st.booleans()), allow_unicode=True))


@SETTINGS
@given(st.lists(st.sampled_from(["&a ", "*a", "&b ", "*b", "[", "]", "{", "}", ": ", "- ", "\n", "  ", ",", "x", "1",
                                 "heads", "source: digits", "backbones: [test_efficientnet]", "heads: [logreg]",
                                 "!!python/object:os.system", "'", '"', "? ", "<<: *a", "%YAML 1.1\n", "---\n", "\t"]),
                max_size=40))
def test_random_yaml_text_gives_a_pipeline_or_one_usage_line(parts):
    _check("".join(parts))


def test_bombs_are_one_line_with_the_file():
    depth = "name: x\nsource: digits\nbackbones: " + "[" * 3000 + "]" * 3000 + "\nheads: [logreg]\n"
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8))
    cases = {"source: digits\nbackbones: &a [*a]\nheads: [logreg]\n": ":2: this anchor refers to itself",
             "a: &a {b: {c: *a}}\n": ":1: this anchor refers to itself",
             depth: ":3: not valid YAML (nested more than", laughs: "aliases expand this document"}
    for text, expected in cases.items():
        path = _DIR / "bomb.yaml"
        path.write_text(text)
        try:
            load_pipeline(path)
        except FeatxUsageError as exc:
            assert str(exc).startswith(str(path)) and expected in str(exc), str(exc)
        else:
            raise AssertionError(f"accepted {text[:40]!r}")
    path.write_text("source: digits\nbackbones: [test_efficientnet]\nheads: [logreg]\n")
    assert load_pipeline(path).heads[0]["name"] == "logreg"
    try:
        load_pipeline(path, overrides=["heads=&h [*h]"])
    except FeatxUsageError as exc:
        assert "--set" in str(exc) and "refers to itself" in str(exc)
    else:
        raise AssertionError("a self-referencing --set value was accepted")
