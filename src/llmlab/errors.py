"""The project error type (every sprint).

Expected failures (missing data, bad configuration, corrupt checkpoint, prompt too long)
raise `LLMLabError` with a message that says what to do. Script entry points turn it into
one line on stderr and a non-zero exit code (see `llmlab.cli.run`); a traceback means a bug.
"""


class LLMLabError(Exception):
    """An expected, user-fixable failure. The message must say what to do next."""
