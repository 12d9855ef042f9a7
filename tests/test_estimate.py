"""Estimating a model call's tokens from its body: one table per shape, the real encoding."""

from __future__ import annotations

import base64
import gzip
import hashlib
from typing import Any

import pytest
import tiktoken
import tiktoken_ext.openai_public as openai_public

from tollhouse.metering.estimate import (
    DEFAULT_OUTPUT_TOKENS,
    IMAGE_TOKENS,
    MESSAGE_TOKENS,
    NAME_TOKENS,
    O200K_SHA256,
    REPLY_TOKENS,
    Estimator,
    by_bytes,
    chat_input,
    load_o200k,
    responses_input,
)


@pytest.fixture(scope="module")
def o200k() -> tiktoken.Encoding:
    return load_o200k()


def words(text: str) -> int:
    """A counter anyone can check by eye: one token per word."""
    return len(text.split())


def test_the_shipped_encoding_is_tiktokens_o200k_base(
    o200k: tiktoken.Encoding, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranks = o200k._mergeable_ranks
    # tiktoken's own constructor, fed the shipped ranks instead of a download
    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda *args, **kwargs: ranks)
    reference = openai_public.o200k_base()
    assert o200k._pat_str == reference["pat_str"]
    assert o200k._special_tokens == reference["special_tokens"]
    assert o200k.n_vocab == 200019
    text = "Rate limits, per tenant: 1,000 tokens a minute. ¿Qué tal? 東京 🚀"
    assert o200k.decode(o200k.encode_ordinary(text)) == text


def test_the_shipped_file_is_checked_against_tiktokens_hash() -> None:
    from importlib.resources import files

    data = gzip.decompress(
        files("tollhouse.metering").joinpath("o200k_base.tiktoken.gz").read_bytes()
    )
    assert hashlib.sha256(data).hexdigest() == O200K_SHA256
    first = data.splitlines()[0].split()
    assert (base64.b64decode(first[0]), first[1]) == (b"!", b"0")


@pytest.mark.parametrize(
    ("model", "exact"),
    [
        ("gpt-4o", True),
        ("gpt-4o-mini-2024-07-18", True),
        ("gpt-4.1-nano", True),
        ("gpt-5", True),
        ("gpt-5-mini", True),
        ("o3-mini", True),
        ("o4-mini", True),
        ("gpt-oss-120b", True),  # o200k_harmony: the same ranks
        ("gpt-4", False),  # cl100k_base is not shipped: bytes
        ("gpt-3.5-turbo", False),
        ("some-local-model", False),
        (None, False),
    ],
)
def test_which_models_are_counted_exactly(
    o200k: tiktoken.Encoding, model: str | None, exact: bool
) -> None:
    assert (Estimator(o200k).counter(model) is not None) is exact


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        ({"input": "one two three"}, REPLY_TOKENS + MESSAGE_TOKENS + 3),
        ({"input": "a b", "instructions": "be brief"}, REPLY_TOKENS + MESSAGE_TOKENS + 4),
        (
            {
                "input": [
                    {"role": "user", "content": "one two"},
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "three four five"},
                            {"type": "input_image", "image_url": "https://example.com/a.png"},
                        ],
                    },
                ]
            },
            REPLY_TOKENS + 2 * MESSAGE_TOKENS + 5 + IMAGE_TOKENS,
        ),
        (
            {
                "input": [
                    {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c1", "output": "it is 4 pm"},
                ]
            },
            REPLY_TOKENS + 2 * MESSAGE_TOKENS + 2 + 4,
        ),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_file", "file_data": "A" * 64}]}
                ]
            },
            REPLY_TOKENS + MESSAGE_TOKENS + 12,  # 64 base64 characters: 48 bytes, 12 tokens
        ),
        ({"prompt": {"id": "pmpt_1", "variables": {"city": "New York"}}}, REPLY_TOKENS + 2),
        ({"input": "x", "tools": [{"type": "web_search"}]}, REPLY_TOKENS + MESSAGE_TOKENS + 2),
    ],
)
def test_responses_input(body: dict[str, Any], tokens: int) -> None:
    assert responses_input(body, words) == tokens


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        ({"messages": [{"role": "user", "content": "one two"}]}, REPLY_TOKENS + MESSAGE_TOKENS + 2),
        (
            {
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "name": "ann", "content": "hi"},
                ]
            },
            REPLY_TOKENS + 2 * MESSAGE_TOKENS + 2 + NAME_TOKENS + 1 + 1,
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this"},
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,x"}},
                        ],
                    }
                ]
            },
            REPLY_TOKENS + MESSAGE_TOKENS + 3 + IMAGE_TOKENS,
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{}"},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c", "content": "sunny"},
                ]
            },
            REPLY_TOKENS + 2 * MESSAGE_TOKENS + 2 + 2,  # the tool call id is read as text
        ),
        ({"messages": [], "response_format": {"type": "json_object"}}, REPLY_TOKENS + 1),
        ({"messages": "not a list"}, REPLY_TOKENS),
    ],
)
def test_chat_input(body: dict[str, Any], tokens: int) -> None:
    assert chat_input(body, words) == tokens


@pytest.mark.parametrize(
    ("api", "body", "output"),
    [
        ("responses", {"model": "gpt-4o", "input": "hi", "max_output_tokens": 500}, 500),
        ("responses", {"model": "gpt-4o", "input": "hi"}, DEFAULT_OUTPUT_TOKENS),
        ("chat", {"model": "gpt-4o", "messages": [], "max_completion_tokens": 200}, 200),
        ("chat", {"model": "gpt-4o", "messages": [], "max_tokens": 300}, 300),  # the old name
        ("chat", {"model": "gpt-4o", "messages": [], "max_tokens": 300, "n": 3}, 900),
        ("chat", {"model": "gpt-4o", "messages": [], "n": 2}, 2 * DEFAULT_OUTPUT_TOKENS),
        ("chat", {"model": "gpt-4o", "messages": [], "max_tokens": True}, DEFAULT_OUTPUT_TOKENS),
        ("responses", {"model": "gpt-4o", "max_output_tokens": -1}, DEFAULT_OUTPUT_TOKENS),
    ],
)
def test_output_is_the_bodys_cap_or_the_default(
    o200k: tiktoken.Encoding, api: Any, body: dict[str, Any], output: int
) -> None:
    assert Estimator(o200k).estimate(body, api).output_tokens == output


def test_a_configured_default_output() -> None:
    estimate = Estimator(None, default_output_tokens=256).estimate({"input": "hi"}, "responses")
    assert estimate.output_tokens == 256


def test_the_encoding_counts_what_bytes_would_guess(o200k: tiktoken.Encoding) -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 40
    body = {"model": "gpt-4o", "input": text, "max_output_tokens": 100}
    exact = Estimator(o200k).estimate(body, "responses")
    guessed = Estimator(None).estimate(body, "responses")
    assert exact.exact
    assert not guessed.exact
    assert exact.input_tokens == REPLY_TOKENS + MESSAGE_TOKENS + len(o200k.encode(text))
    assert exact.input_tokens == REPLY_TOKENS + MESSAGE_TOKENS + 401  # 10 tokens a sentence + 1
    assert guessed.input_tokens == REPLY_TOKENS + MESSAGE_TOKENS + by_bytes(text)
    assert exact.total == exact.input_tokens + 100


def test_special_token_text_is_counted_as_text(o200k: tiktoken.Encoding) -> None:
    body = {"model": "gpt-5", "input": "<|endoftext|>"}
    assert Estimator(o200k).estimate(body, "responses").input_tokens > REPLY_TOKENS + 1


def test_text_past_the_exact_limit_is_counted_by_bytes(o200k: tiktoken.Encoding) -> None:
    text = "word " * 1000
    body = {"model": "gpt-4o", "input": text}
    capped = Estimator(o200k, exact_limit=100).estimate(body, "responses")
    assert capped.input_tokens == REPLY_TOKENS + MESSAGE_TOKENS + by_bytes(text)
    assert capped.exact  # the model's encoding is known; only this text was too long


@pytest.mark.parametrize(("text", "tokens"), [("", 0), ("abcd", 1), ("abcde", 2), ("é", 1)])
def test_by_bytes(text: str, tokens: int) -> None:
    assert by_bytes(text) == tokens
