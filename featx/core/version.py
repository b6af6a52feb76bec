"""featx's version, here in ``core`` so that core modules (which record it next to every
output) need not import the ``featx`` package above them."""

__version__ = "0.1.0"
