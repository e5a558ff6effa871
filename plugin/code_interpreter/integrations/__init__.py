"""Adapters for agent frameworks, each an optional extra imported only when asked for.

``.langchain.make_tools`` (LangChain), ``.openai_agents.make_tool`` (the OpenAI Agents SDK),
``.smolagents.SandboxExecutor`` (smolagents' CodeAgent), ``.pydantic_ai.CodeInterpreterToolset``
(pydantic-ai) and ``.mcp`` (an MCP server). Importing this package imports none of them.
"""

__all__: list[str] = []
