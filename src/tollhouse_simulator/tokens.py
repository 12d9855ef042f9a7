"""Deterministic token counts and the simulated model's words."""

from __future__ import annotations

import math
import re
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


# Reasoning tokens per token of the question, by effort; a floor keeps short questions visible.
REASONING_PER_QUESTION_TOKEN = {
    "none": 0,
    "minimal": 1,
    "low": 2,
    "medium": 4,
    "high": 8,
    "xhigh": 12,
    "max": 16,
}
REASONING_FLOOR = 8
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")


def is_reasoning_model(model: str) -> bool:
    """o-series and gpt-5 family models think before answering; their chat variants do not."""
    return bool(_REASONING_MODEL.match(model)) and "-chat" not in model


def reasoning_tokens(model: str, effort: str | None, question: str) -> int:
    if not is_reasoning_model(model):
        return 0
    per_token = REASONING_PER_QUESTION_TOKEN.get(effort or "medium", 4)
    return per_token * max(REASONING_FLOOR, count_tokens(question))


def truncate(text: str, max_tokens: int) -> str:
    """The longest word prefix of ``text`` that count_tokens keeps within ``max_tokens``."""
    words = text.split(" ")
    keep = len(words)
    while keep and count_tokens(" ".join(words[:keep])) > max_tokens:
        keep -= 1
    return " ".join(words[:keep])
