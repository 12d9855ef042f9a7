"""The pricing table: what each model, tier, tool, container and GB of storage costs, and when.

Prices ship as ``pricing.yaml``, each with the date it takes effect; a user table replaces
it. Money is ``Decimal`` throughout, rounded only for presentation (``costs.usd``). Whatever
the table has no price for (a model, a service tier, a tool, a memory limit, a date before
the first price) is unpriced: the cost functions in ``costs`` return None, never zero.
"""

from __future__ import annotations

import io
from collections.abc import Hashable, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from importlib import resources
from itertools import pairwise
from math import floor
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

# Service tiers billed at the model's own (standard) prices; SPEC `ServiceTier`.
STANDARD_TIERS = frozenset({"default", "auto"})
# SPEC: a request may ask for `fast`; the response reports the tier as `priority`.
TIER_ALIASES = {"fast": "priority"}
# SPEC: a container's `memory_limit` defaults to 1g.
DEFAULT_MEMORY_LIMIT = "1g"
# Responses file_search calls are priced by `tools.file_search_calls.responses`.
FILE_SEARCH_CALL = "file_search_call"


class PricingError(Exception):
    """A pricing table that cannot be used, or a price that is not in it."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Price = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class Period(_Frozen):
    effective: date = Field(alias="from")
    sources: tuple[str, ...] = ()
    note: str | None = None
    unconfirmed: bool = False


class TokenPrice(Period):
    """USD per 1M tokens, in effect from ``effective`` until the model's next period.

    ``cached_input`` and ``cache_write`` price the prompt tokens read from and written to
    the prompt cache; None means no such price, and those tokens cost ``input``.
    """

    input: Price
    cached_input: Price | None = None
    cache_write: Price | None = None
    output: Price

    @model_validator(mode="after")
    def _cached_not_dearer(self) -> TokenPrice:
        if self.cached_input is not None and self.cached_input > self.input:
            raise ValueError("cached_input must not be more than input")
        return self


class CodeInterpreterPrice(Period):
    per_session: Price
    session_seconds: Annotated[int, Field(gt=0)]


class StoragePrice(Period):
    per_gb_day: Price
    free_gb: Price
    gb_bytes: Annotated[int, Field(gt=0)]


class CallPrice(Period):
    per_1000: Price


class TierPrice(Period):
    """A factor on every standard token price (input, cached, cache write, output)."""

    multiplier: Price


class MinutePrice(Period):
    """A container billed per started minute, with a minimum per container."""

    per_minute: Price
    minimum_minutes: Annotated[int, Field(ge=0)]


def _container_billing(value: Any) -> str:
    if isinstance(value, dict):
        return "minute" if "per_minute" in value else "session"
    return "minute" if isinstance(value, MinutePrice) else "session"


# Per session (blocks of ``session_seconds``) or per minute, told apart by the price field.
ContainerPrice = Annotated[
    Annotated[CodeInterpreterPrice, Tag("session")] | Annotated[MinutePrice, Tag("minute")],
    Discriminator(_container_billing),
]

P = TypeVar("P", bound=Period)


def _in_date_order(periods: tuple[P, ...]) -> tuple[P, ...]:
    for before, after in pairwise(period.effective for period in periods):
        if after <= before:
            raise ValueError(f"'from' dates must increase: {after} follows {before}")
    return periods


_Ordered = (Field(min_length=1), AfterValidator(_in_date_order))
TokenPeriods = Annotated[tuple[TokenPrice, ...], *_Ordered]
CodeInterpreterPeriods = Annotated[tuple[CodeInterpreterPrice, ...], *_Ordered]
StoragePeriods = Annotated[tuple[StoragePrice, ...], *_Ordered]
CallPeriods = Annotated[tuple[CallPrice, ...], *_Ordered]
TierPeriods = Annotated[tuple[TierPrice, ...], *_Ordered]
ContainerPeriods = Annotated[tuple[ContainerPrice, ...], *_Ordered]
Names = Annotated[tuple[str, ...], Field(min_length=1)]


def _in_effect(periods: Sequence[P], at: date) -> P | None:
    started = [period for period in periods if period.effective <= at]
    return started[-1] if started else None


class FileSearchCalls(_Frozen):
    assistants: CallPeriods
    responses: CallPeriods


class CallRule(_Frozen):
    """The fee for one kind of call made with these tool versions by these models.

    ``versions`` are tool types as the request declares them; ``models`` are names in
    ``models``. None: any version, or any model (priced or not).
    """

    versions: Names | None = None
    models: Names | None = None
    periods: CallPeriods


class TierRule(_Frozen):
    """A service tier's multiplier for some models."""

    models: Names
    periods: TierPeriods


class Tools(_Frozen):
    code_interpreter: CodeInterpreterPeriods
    file_search_storage: StoragePeriods
    file_search_calls: FileSearchCalls
    # Responses API: per-call fees by output item type, and containers by memory limit.
    calls: dict[str, tuple[CallRule, ...]] = {}
    containers: dict[str, ContainerPeriods] = {}


class PricingTable(_Frozen):
    currency: Literal["USD"]
    sources: dict[str, str] = {}
    models: dict[str, TokenPeriods]
    aliases: dict[str, str] = {}
    service_tiers: dict[str, tuple[TierRule, ...]] = {}
    tools: Tools

    @model_validator(mode="after")
    def _consistent(self) -> PricingTable:
        for alias, target in self.aliases.items():
            if alias in self.models:
                raise ValueError(f"aliases.{alias}: is also in models; keep one of the two")
            if target not in self.models:
                raise ValueError(f"aliases.{alias}: points at {target!r}, which is not in models")
        self._check_rules()
        for where, period in self.priced():
            unknown = sorted(set(period.sources) - set(self.sources))
            if unknown:
                raise ValueError(f"{where}.sources: unknown source {unknown[0]!r}")
        return self

    def _check_rules(self) -> None:
        if FILE_SEARCH_CALL in self.tools.calls:
            where = f"tools.calls.{FILE_SEARCH_CALL}"
            raise ValueError(f"{where}: priced by tools.file_search_calls.responses instead")
        listed = [
            (f"service_tiers.{tier}.{i}.models", rule.models)
            for tier, rules in self.service_tiers.items()
            for i, rule in enumerate(rules)
        ] + [
            (f"tools.calls.{kind}.{i}.models", rule.models or ())
            for kind, rules in self.tools.calls.items()
            for i, rule in enumerate(rules)
        ]
        for where, names in listed:
            missing = [name for name in names if name not in self.models]
            if missing:
                raise ValueError(f"{where}: {missing[0]!r} is not in models")
        for tier, rules in self.service_tiers.items():
            if tier in STANDARD_TIERS or tier in TIER_ALIASES:
                billed = repr(TIER_ALIASES[tier]) if tier in TIER_ALIASES else "standard prices"
                raise ValueError(f"service_tiers.{tier}: billed at {billed}; it has no rules")
            each = [name for rule in rules for name in rule.models]
            twice = sorted({name for name in each if each.count(name) > 1})
            if twice:
                raise ValueError(f"service_tiers.{tier}: {twice[0]!r} is in more than one rule")

    def priced(self) -> list[tuple[str, Period]]:
        """Every price period in the table, each with where it is."""
        tools = self.tools
        groups: list[tuple[str, Sequence[Period]]] = [
            *((f"models.{name}", periods) for name, periods in self.models.items()),
            ("tools.code_interpreter", tools.code_interpreter),
            ("tools.file_search_storage", tools.file_search_storage),
            ("tools.file_search_calls.assistants", tools.file_search_calls.assistants),
            ("tools.file_search_calls.responses", tools.file_search_calls.responses),
            *((f"tools.containers.{size}", periods) for size, periods in tools.containers.items()),
            *(
                (f"tools.calls.{kind}.{i}.periods", rule.periods)
                for kind, rules in tools.calls.items()
                for i, rule in enumerate(rules)
            ),
            *(
                (f"service_tiers.{tier}.{i}.periods", rule.periods)
                for tier, rules in self.service_tiers.items()
                for i, rule in enumerate(rules)
            ),
        ]
        return [(f"{where}.{i}", period) for where, ps in groups for i, period in enumerate(ps)]

    def token_price(self, model: str, at: date) -> TokenPrice | None:
        """The model's price on ``at``; None when it is unpriced (unknown model, or too early)."""
        periods = self.models.get(self.aliases.get(model, model))
        return None if periods is None else _in_effect(periods, at)

    def tier_multiplier(self, model: str, tier: str | None, at: date) -> Decimal | None:
        """1 for the standard tiers (None, default, auto); None: the tier is unpriced for
        the model on ``at`` (scale, a tier the table does not list, a model it does not)."""
        if tier is None or tier in STANDARD_TIERS:
            return Decimal(1)
        name = self.aliases.get(model, model)
        for rule in self.service_tiers.get(TIER_ALIASES.get(tier, tier), ()):
            if name in rule.models:
                period = _in_effect(rule.periods, at)
                return None if period is None else period.multiplier
        return None

    def call_price(
        self, kind: str, model: str | None, version: str | None, at: date
    ) -> CallPrice | None:
        """The first rule for ``kind`` that matches the tool version and the model."""
        if kind == FILE_SEARCH_CALL:
            return _in_effect(self.tools.file_search_calls.responses, at)
        name = None if model is None else self.aliases.get(model, model)
        for rule in self.tools.calls.get(kind, ()):
            if rule.versions is not None and version not in rule.versions:
                continue
            if rule.models is None or name in rule.models:
                return _in_effect(rule.periods, at)
        return None

    def container_price(
        self, memory_limit: str | None, at: date
    ) -> CodeInterpreterPrice | MinutePrice | None:
        size = DEFAULT_MEMORY_LIMIT if memory_limit is None else memory_limit
        periods = self.tools.containers.get(size)
        return None if periods is None else _in_effect(periods, at)

    def code_interpreter_session(self, at: date) -> Decimal:
        return _tool(self.tools.code_interpreter, at, "code_interpreter").per_session

    def storage(self, at: date) -> StoragePrice:
        return _tool(self.tools.file_search_storage, at, "file_search_storage")

    def storage_per_gb_day(self, at: date) -> Decimal:
        return self.storage(at).per_gb_day

    def free_storage_bytes(self, at: date) -> int:
        price = self.storage(at)
        return floor(price.free_gb * price.gb_bytes)

    def file_search_call(self, at: date, api: str = "assistants") -> Decimal:
        """The price of one file-search call made through ``api`` (assistants or responses)."""
        if api not in ("assistants", "responses"):
            raise PricingError(f"no file_search_calls prices for api {api!r}")
        periods: Sequence[CallPrice] = getattr(self.tools.file_search_calls, api)
        return _tool(periods, at, f"file_search_calls.{api}").per_1000 / 1000


def _tool(periods: Sequence[P], at: date, name: str) -> P:
    period = _in_effect(periods, at)
    if period is None:
        raise PricingError(f"tools.{name}: no price in effect on {at}")
    return period


class _Loader(yaml.SafeLoader):
    """Safe YAML with exact decimals, dates left to the schema, and repeated keys refused."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def _decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    text = str(loader.construct_scalar(node))
    try:
        return Decimal(text.replace("_", ""))
    except InvalidOperation:
        return loader.construct_yaml_float(node)


_Loader.add_constructor("tag:yaml.org,2002:float", _decimal)
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _problem(source: str, error: ErrorDetails) -> str:
    where = ".".join(map(str, error["loc"]))
    message = error["msg"].removeprefix("Value error, ")
    return f"{source}: {where}: {message}" if where else f"{source}: {message}"


def parse_pricing(text: str, source: str) -> PricingTable:
    try:
        stream = io.StringIO(text)
        stream.name = source  # so YAML errors point into the file
        data = yaml.load(stream, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PricingError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PricingError(f"{source}: the pricing table must be a mapping")
    try:
        return PricingTable.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(source, error) for error in exc.errors()]
        raise PricingError("\n".join(problems)) from None


def load_pricing(path: Path | None = None) -> PricingTable:
    """The table at ``path``, which replaces the shipped one; None: the shipped table."""
    if path is None:
        shipped = resources.files("tollhouse.metering") / "pricing.yaml"
        return parse_pricing(shipped.read_text(encoding="utf-8"), str(shipped))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PricingError(f"{path}: cannot read the pricing table: {exc.strerror}") from None
    return parse_pricing(text, str(path))
