"""Reading YAML that may be hostile: bounded depth, no cycles, bounded alias expansion.

PyYAML's composer recurses once per nesting level, so a deeply nested file ends in a
``RecursionError``; an anchor that refers to itself (``a: &x [*x]``) builds a cyclic
object that every later walk (validation, copying, writing the resolved config) follows
forever; and a "billion laughs" file, aliases of aliases, is tiny on disk but expands to
billions of values when walked. A pipeline file needs none of that, so the node graph
is checked *before* any Python object is built:

* nesting deeper than :data:`MAX_DEPTH` levels is refused while composing, with its line;
* a cycle (an alias to an enclosing anchor) is refused, naming the anchor's line;
* a document whose aliases expand to more than :data:`MAX_VALUES` values is refused.

Every refusal is a :class:`~featx.core.errors.FeatxUsageError` naming the file and line.
"""

from __future__ import annotations

import yaml

from ..core.errors import FeatxUsageError

__all__ = ["load_yaml", "MAX_DEPTH", "MAX_VALUES"]

MAX_DEPTH = 64  # a pipeline file is about 4 levels deep
MAX_VALUES = 100_000  # values after alias expansion; a large pipeline has a few hundred


class _TooDeep(yaml.MarkedYAMLError):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses to nest deeper than MAX_DEPTH."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()
                raise _TooDeep(None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expanded_size(root, filename: str) -> int:
    """Values the document expands to (aliases counted at every use); refuses cycles. Iterative, memoised."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            size[key] = min(1 + sum(size[id(c)] for c in _children(node)), MAX_VALUES + 1)
            continue
        if key in size:
            continue
        if key in on_path:
            raise FeatxUsageError(
                f"{filename}:{node.start_mark.line + 1}: this anchor refers to itself through an alias "
                "(a cyclic document); pipeline files cannot contain cycles"
            )
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in size)
    return size[id(root)]


def load_yaml(text: str, filename: str):
    """``(node, data)`` of a single YAML document, or a one-line FeatxUsageError naming file and line."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        if _expanded_size(node, filename) > MAX_VALUES:
            raise FeatxUsageError(
                f"{filename}: aliases expand this document to more than {MAX_VALUES:,} values "
                "(an alias bomb?); write the values out, or use fewer nested aliases"
            )
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark else filename
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise FeatxUsageError(f"{where}: not valid YAML ({problem})") from None
    except RecursionError:  # a construct path the composer's bound did not cover
        raise FeatxUsageError(f"{filename}: nested too deeply to read") from None
    finally:
        loader.dispose()
    return node, data
