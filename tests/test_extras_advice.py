"""A missing optional dependency is one line whose advice works from a checkout (featx is not on a
package index): ``pip install -e '.[EXTRA]'``, never ``pip install 'featx[EXTRA]'``."""

from __future__ import annotations

import sys

import pytest

from featx.core.errors import FeatxError, missing_extra


def test_missing_extra_names_the_checkout_install():
    error = missing_extra("export to Parquet needs pyarrow", "parquet")
    assert isinstance(error, FeatxError) and error.exit_code == 1
    assert str(error) == ("export to Parquet needs pyarrow: install featx's parquet extra "
                          "(in a featx checkout: pip install -e '.[parquet]')")


@pytest.fixture
def no_pyarrow(monkeypatch):
    for name in ("pyarrow", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, name, None)  # `import pyarrow` now raises ImportError


def test_parquet_source_without_pyarrow_gives_the_checkout_advice(no_pyarrow, tmp_path):
    from featx.data import ParquetSource

    with pytest.raises(FeatxError, match=r"pip install -e '\.\[parquet\]'") as caught:
        ParquetSource(str(tmp_path / "x.parquet"))
    assert "featx[" not in str(caught.value)


def test_export_without_pyarrow_gives_the_checkout_advice(no_pyarrow, tmp_path):
    from featx.store import export_store

    with pytest.raises(FeatxError, match=r"pip install -e '\.\[parquet\]'") as caught:
        export_store(tmp_path / "f.h5", tmp_path / "out.parquet")
    assert "featx[" not in str(caught.value)
