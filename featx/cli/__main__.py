"""``python -m featx.cli``: the same as the ``featx`` command."""

from . import main

main()
