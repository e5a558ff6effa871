"""Runs in the sandbox runtime's interpreter, loaded by file path: zygote, supervisor, child (stdlib only).

Everything here is one program on the runtime side of the sandbox: :mod:`.zygote` (the warm fork
server), :mod:`.supervisor` and :mod:`.watch` (one per execution: feeds and watches the child),
:mod:`.meter` (what each cell used, read from the kernel by the supervisor),
:mod:`.child` (the sandboxed process: sets up isolation, then runs cells), :mod:`.streams` (what the
supervisor reads from the child), :mod:`.sandbox` (the isolation layers), :mod:`.inside` (the code
that runs in the user's process) and :mod:`.protocol` (every frame, declared once), plus
:mod:`.config`. The runtime interpreter does not have ``code_interpreter`` installed: the package is
loaded by path under a private name (:mod:`._bootstrap`), so only the standard library and relative
imports are used here. The host imports :mod:`.protocol` and :mod:`.config` as ordinary modules.
"""
