"""``featx bench extract`` and ``featx bench finetune`` (issue 11)."""

COMMANDS: list = []
