"""``python -m code_interpreter.cli``: the same as the ``code-interpreter`` command."""

import sys

from .main import main

sys.exit(main())
