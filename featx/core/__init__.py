"""Foundations every stage shares: errors, atomic file writes, device and precision
resolution, library versions, metrics and the fields of a results row.

Modules here import nothing else from featx, so any stage (data, extraction, heads,
finetuning, pipeline, cli) may import them without creating a cycle.
"""
