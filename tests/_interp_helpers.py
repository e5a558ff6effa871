"""Starting and dropping a CodeInterpreter in tests that need their own (shared by the interpreter suites)."""

from __future__ import annotations

from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings


async def started(settings: Settings) -> CodeInterpreter:
    """A started interpreter with its zygote up (runtime created if needed): tests time only their work."""
    interp = CodeInterpreter(settings)
    try:
        await interp.start()
        await interp.executor()
    except BaseException:
        await interp.close()  # its database client, the embedded server
        raise
    return interp


async def close_and_drop(interp: CodeInterpreter) -> None:
    """Close ``interp`` and drop its test database."""
    try:
        await interp.db.client.drop_database(interp.settings.database)
    finally:
        await interp.close()
