"""``featx bench logreg`` (issue 12)."""

COMMANDS: list = []
