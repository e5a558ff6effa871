"""The per-string count memo: exact counts, bounded size, hot strings kept."""

from __future__ import annotations

import pytest

from code_interpreter.tokens import _text
from code_interpreter.tokens._encoding import get_encoding


@pytest.fixture
def small_generations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_text, "_GENERATION_ENTRIES", 50)
    monkeypatch.setattr(_text, "_GENERATION_CHARS", 2_000)
    _text.clear_memo()


def test_memoized_counts_equal_tiktoken() -> None:
    enc = get_encoding("o200k_base")
    texts = ["hello world", "<|endoftext|> is text here", "x" * 25_000, "données 数据"]
    for _ in range(2):  # the second round is answered by the memo
        for t in texts:
            assert _text.encoded_len("o200k_base", t) == len(enc.encode_ordinary(t))


@pytest.mark.usefixtures("small_generations")
def test_memo_is_bounded_by_entries_and_characters() -> None:
    for i in range(1_000):
        _text.encoded_len("o200k_base", f"message number {i} " * (i % 7 + 1))
    memo = _text._memos["o200k_base"]
    assert len(memo.young) + len(memo.old) <= 2 * 51
    assert sum(map(len, memo.young)) <= 2_000 + 200 and sum(map(len, memo.old)) <= 2_000 + 200


@pytest.mark.usefixtures("small_generations")
def test_a_string_used_every_round_is_never_encoded_again() -> None:
    hot = "the system prompt, sent with every request"
    _text.encoded_len("o200k_base", hot)
    memo = _text._memos["o200k_base"]
    encoded: list[str] = []
    real = memo.encode
    memo.encode = lambda text: encoded.append(text) or real(text)  # type: ignore[func-returns-value]
    for i in range(500):  # ten generations turn over
        _text.encoded_len("o200k_base", hot)
        _text.encoded_len("o200k_base", f"new message {i}")
    assert hot not in encoded
    assert len(encoded) == 500
