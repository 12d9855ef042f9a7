"""How many tokens a model call may use, read from its request body before it is sent.

The input is counted with the model's own encoding where tollhouse ships it
(``o200k_base``: GPT-4o, GPT-4.1, GPT-4.5, GPT-5, the o-series, gpt-oss), and
estimated as one token per four bytes of UTF-8 otherwise (GPT-4, GPT-3.5 and
unknown models) or past ``exact_limit`` characters, where counting would cost
more than it tells. Each message adds the few tokens of its framing, as in
OpenAI's counting guide; images are counted at a flat high-detail price and files
by their size. The output is what the body allows (``max_output_tokens``,
``max_completion_tokens`` or ``max_tokens``, times ``n`` choices), or a configured
default. This is an estimate to reserve against a token-per-minute budget, to be
settled with the call's reported usage: not a bill.

The encoding's ranks ship as package data (``o200k_base.tiktoken.gz``, the file
OpenAI publishes for tiktoken, checked against tiktoken's own SHA-256 of it at
load), so nothing is fetched at run time.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Literal

import tiktoken
from tiktoken.model import encoding_name_for_model

ENCODING_FILE = "o200k_base.tiktoken.gz"
# tiktoken_ext.openai_public.o200k_base: the file's hash, its pattern, its special tokens
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
O200K_SPECIAL = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}
# gpt-oss's o200k_harmony is o200k_base plus special tokens: the same count for text.
O200K_NAMES = frozenset({"o200k_base", "o200k_harmony"})

BYTES_PER_TOKEN = 4
MESSAGE_TOKENS = 3  # a message's framing: <|start|>{role}<|message|> ... <|end|>
NAME_TOKENS = 1  # a message's name, besides its own tokens
REPLY_TOKENS = 3  # every reply is primed with <|start|>assistant<|message|>
IMAGE_TOKENS = 765  # one 1024 x 1024 image at high detail: 85 + 4 tiles x 170
DEFAULT_OUTPUT_TOKENS = 4096
EXACT_LIMIT = 1_000_000  # characters of one text counted exactly; longer ones by bytes
IMAGE_PARTS = frozenset({"input_image", "image_url", "image"})
FILE_PARTS = frozenset({"input_file", "file"})
# keys whose strings are names of things, not text the model reads
SKIPPED_KEYS = frozenset({"type", "id", "call_id", "status", "detail", "role", "file_id"})

Api = Literal["responses", "chat"]
Count = Callable[[str], int]


class EncodingError(Exception):
    """The shipped encoding file is not the one tiktoken knows (damaged or replaced)."""


@dataclass(frozen=True, slots=True)
class Estimate:
    input_tokens: int
    output_tokens: int
    exact: bool  # the input was counted with the model's encoding, not by bytes

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


def by_bytes(text: str) -> int:
    """One token per four bytes of UTF-8, rounded up."""
    return math.ceil(len(text.encode()) / BYTES_PER_TOKEN)


def load_o200k() -> tiktoken.Encoding:
    """The ``o200k_base`` encoding from the package's own copy (no network)."""
    data = gzip.decompress(files("tollhouse.metering").joinpath(ENCODING_FILE).read_bytes())
    if hashlib.sha256(data).hexdigest() != O200K_SHA256:
        raise EncodingError(f"{ENCODING_FILE} is not tiktoken's o200k_base file")
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(
        "o200k_base", pat_str=O200K_PATTERN, mergeable_ranks=ranks, special_tokens=O200K_SPECIAL
    )


class Estimator:
    """Estimates a request's tokens; ``o200k`` is the loaded encoding, or None to count bytes."""

    def __init__(
        self,
        o200k: tiktoken.Encoding | None,
        default_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
        exact_limit: int = EXACT_LIMIT,
    ) -> None:
        self._o200k = o200k
        self._default_output = default_output_tokens
        self._exact_limit = exact_limit

    def counter(self, model: object) -> Count | None:
        """The exact counter for ``model``'s encoding, if tollhouse has it."""
        if self._o200k is None or not isinstance(model, str):
            return None
        try:
            name = encoding_name_for_model(model)
        except KeyError:
            return None
        if name not in O200K_NAMES:
            return None
        encode, limit = self._o200k.encode_ordinary, self._exact_limit

        def count(text: str) -> int:
            return len(encode(text)) if len(text) <= limit else by_bytes(text)

        return count

    def estimate(self, body: Mapping[str, Any], api: Api) -> Estimate:
        """The tokens a Responses (``responses``) or Chat Completions (``chat``) body may use."""
        exact = self.counter(body.get("model"))
        count = exact or by_bytes
        if api == "responses":
            tokens = responses_input(body, count)
            output = _positive(body.get("max_output_tokens"))
        else:
            tokens = chat_input(body, count)
            output = _positive(body.get("max_completion_tokens"))
            output = output or _positive(body.get("max_tokens"))
            output = (output or self._default_output) * (_positive(body.get("n")) or 1)
        return Estimate(tokens, output or self._default_output, exact is not None)


def responses_input(body: Mapping[str, Any], count: Count) -> int:
    """Input tokens of a Responses body: instructions, input items, tools, output schema."""
    tokens = REPLY_TOKENS + _text(body.get("instructions"), count)
    given = body.get("input")
    if isinstance(given, str):
        tokens += MESSAGE_TOKENS + count(given)
    elif isinstance(given, list):
        tokens += sum(_message(item, count) for item in given)
    prompt = body.get("prompt")  # a stored prompt's variables are text too
    if isinstance(prompt, Mapping):
        tokens += _content(prompt.get("variables"), count)
    return tokens + _definitions(body.get("tools"), body.get("text"), count=count)


def chat_input(body: Mapping[str, Any], count: Count) -> int:
    """Input tokens of a Chat Completions body: messages, tools, response format."""
    messages = body.get("messages")
    tokens = REPLY_TOKENS
    if isinstance(messages, list):
        tokens += sum(_message(message, count) for message in messages)
    definitions = (body.get("tools"), body.get("functions"), body.get("response_format"))
    return tokens + _definitions(*definitions, count=count)


def _message(item: object, count: Count) -> int:
    if not isinstance(item, Mapping):
        return 0
    tokens = MESSAGE_TOKENS + _content(item, count)
    name = item.get("name")
    if isinstance(name, str) and item.get("type") in (None, "message"):
        tokens += NAME_TOKENS
    return tokens


def _content(value: object, count: Count) -> int:
    """Every string a model reads in ``value``; images and files at their estimated cost."""
    if isinstance(value, str):
        return _text(value, count)
    if isinstance(value, list):
        return sum(_content(part, count) for part in value)
    if not isinstance(value, Mapping):
        return 0
    kind = value.get("type")
    if kind in IMAGE_PARTS:
        return IMAGE_TOKENS
    if kind in FILE_PARTS:
        return _file(value)
    return sum(_content(v, count) for k, v in value.items() if k not in SKIPPED_KEYS)


def _file(part: Mapping[str, Any]) -> int:
    """A file sent inline counts by its decoded size; one sent by reference is not known here."""
    inner = part.get("file") if isinstance(part.get("file"), Mapping) else part
    data = inner.get("file_data") if isinstance(inner, Mapping) else None
    if isinstance(data, str):
        encoded = data.split(",", 1)[-1]
        return math.ceil(len(encoded) * 3 / 4 / BYTES_PER_TOKEN)
    return 0


def _definitions(*values: object, count: Count) -> int:
    """Tools, functions and schemas reach the model as text: their JSON, counted."""
    texts = (json.dumps(v, separators=(",", ":")) for v in values if v)
    return sum(count(text) for text in texts)


def _text(value: object, count: Count) -> int:
    return count(value) if isinstance(value, str) and value else 0


def _positive(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None
