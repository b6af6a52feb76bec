"""Lazy package namespaces: a package's public names imported from their module on first use.

``featx.extraction`` and ``featx.heads`` re-export names from modules that import torch,
timm or scikit-learn. Loaded eagerly, asking either package for a constant (a pipeline's
config check wants ``FEATURE_DTYPES`` or the list of heads) pays for all of them; with
:func:`lazy_namespace` (module ``__getattr__``, PEP 562, as scikit-learn and timm do) it
pays only for the module that defines the name.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping

__all__ = ["lazy_namespace"]


def lazy_namespace(package: str, table: Mapping[str, str], subpackages: frozenset[str] = frozenset(),
                   ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``table`` maps each public name to its module
    (relative, e.g. ``"._backbones"``); a name is imported once, then kept in the package.
    ``subpackages`` are answered with the subpackage itself (``featx.heads``)."""

    def __getattr__(name: str):
        if name in subpackages:
            return importlib.import_module(f".{name}", package)
        try:
            module = table[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(table) | set(subpackages) | set(vars(sys.modules[package])))

    return __getattr__, __dir__
