"""The seccomp census's corpus: realistic data-science scripts, each self-contained (it makes its own data).

``python -m code_interpreter.executor.census`` runs them (and the benchmarks' jobs) in the sandbox in
census mode and prints which system calls each needed; ``tests/test_seccomp.py`` runs them under the
enforced allowlist and expects no call refused.
"""
