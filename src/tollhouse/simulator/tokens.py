"""Deterministic token counts and the simulated model's words."""

from __future__ import annotations

import math
from collections.abc import Iterable

MESSAGE_OVERHEAD = 4
PROMPT_OVERHEAD = 8
TOOL_CALL_OVERHEAD = 5


def count_tokens(text: str) -> int:
    """About four tokens for every three words, as a rough English tokenizer would give."""
    words = len(text.split())
    return math.ceil(words * 4 / 3)


def prompt_tokens(instructions: str, messages: Iterable[str]) -> int:
    return (
        PROMPT_OVERHEAD
        + count_tokens(instructions)
        + sum(MESSAGE_OVERHEAD + count_tokens(text) for text in messages)
    )


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def add_usage(usages: Iterable[dict[str, int] | None]) -> dict[str, int]:
    prompt = completion = 0
    for item in usages:
        if item is not None:
            prompt += item["prompt_tokens"]
            completion += item["completion_tokens"]
    return usage(prompt, completion)


def exceeded_limit(
    total: dict[str, int], max_prompt: int | None, max_completion: int | None
) -> str | None:
    """Which of the run's token limits the usage went past, as ``incomplete_details.reason``."""
    if max_prompt is not None and total["prompt_tokens"] > max_prompt:
        return "max_prompt_tokens"
    if max_completion is not None and total["completion_tokens"] > max_completion:
        return "max_completion_tokens"
    return None


def reply_text(model: str, question: str, notes: Iterable[str]) -> str:
    """The assistant's answer: names the model, quotes the question, adds what tools found."""
    words = question.split()
    quoted = " ".join(words[:12]) + (" ..." if len(words) > 12 else "")
    parts = [
        f"Simulated reply from {model} to: {quoted!r}."
        if quoted
        else f"Simulated reply from {model}."
    ]
    parts.extend(notes)
    return " ".join(parts)


def chunks(text: str, count: int) -> list[str]:
    """Splits text into up to ``count`` pieces at word boundaries; joined they give it back."""
    words = text.split(" ")
    size = max(1, math.ceil(len(words) / count))
    pieces = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [piece if index == 0 else " " + piece for index, piece in enumerate(pieces)]
