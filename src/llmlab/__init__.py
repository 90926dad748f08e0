"""llmlab: the small library a language model from scratch is built on, sprint by sprint."""

__version__ = "0.1.0"
