"""Adapters for agent frameworks: ``code_interpreter.integrations.langchain.make_tools``."""

__all__: list[str] = []
