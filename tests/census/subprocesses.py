"""Subprocesses: python (the runtime's), sys.executable, a shell pipeline, asyncio subprocesses."""

import asyncio
import subprocess
import sys

print(
    subprocess.run(
        ["python", "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
)
print(
    subprocess.run(
        ["python3", "-c", "import numpy; print(numpy.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
)
print(subprocess.check_output([sys.executable, "-c", "print(6 * 7)"], text=True).strip())
print(subprocess.run("echo a b c | wc -w", shell=True, capture_output=True, text=True).stdout.strip())
with open("script.py", "w") as fh:
    fh.write("import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))\n")
print(subprocess.run([sys.executable, "script.py"], input="1 2 3", capture_output=True, text=True).stdout)


async def main() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "print('async child')", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    print(out.decode().strip(), proc.returncode)


asyncio.run(main())
