"""The pricing table, and what tokens, tool sessions and storage cost under it.

Prices ship as ``pricing.yaml``, each with the date it takes effect; a user table replaces
it. Money is ``Decimal`` throughout, rounded only for presentation (:func:`usd`).
"""

from __future__ import annotations

import io
from collections.abc import Hashable, Mapping, Sequence
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from fractions import Fraction
from importlib import resources
from itertools import pairwise
from math import floor
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

GIB = 2**30
# Storage shares are carried to 1e-10 USD so that they sum exactly to the org total.
STORAGE_PLACES = 10


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
    """USD per 1M tokens, in effect from ``effective`` until the model's next period."""

    input: Price
    cached_input: Price | None = None
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


def _in_effect(periods: Sequence[P], at: date) -> P | None:
    started = [period for period in periods if period.effective <= at]
    return started[-1] if started else None


class FileSearchCalls(_Frozen):
    assistants: CallPeriods
    responses: CallPeriods


class Tools(_Frozen):
    code_interpreter: CodeInterpreterPeriods
    file_search_storage: StoragePeriods
    file_search_calls: FileSearchCalls


class PricingTable(_Frozen):
    currency: Literal["USD"]
    sources: dict[str, str] = {}
    models: dict[str, TokenPeriods]
    aliases: dict[str, str] = {}
    tools: Tools

    @model_validator(mode="after")
    def _consistent(self) -> PricingTable:
        for alias, target in self.aliases.items():
            if alias in self.models:
                raise ValueError(f"aliases.{alias}: is also in models; keep one of the two")
            if target not in self.models:
                raise ValueError(f"aliases.{alias}: points at {target!r}, which is not in models")
        priced: list[tuple[str, Sequence[Period]]] = [
            *((f"models.{name}", periods) for name, periods in self.models.items()),
            ("tools.code_interpreter", self.tools.code_interpreter),
            ("tools.file_search_storage", self.tools.file_search_storage),
            ("tools.file_search_calls.assistants", self.tools.file_search_calls.assistants),
            ("tools.file_search_calls.responses", self.tools.file_search_calls.responses),
        ]
        for where, periods in priced:
            for index, period in enumerate(periods):
                unknown = sorted(set(period.sources) - set(self.sources))
                if unknown:
                    raise ValueError(f"{where}.{index}.sources: unknown source {unknown[0]!r}")
        return self

    def token_price(self, model: str, at: date) -> TokenPrice | None:
        """The model's price on ``at``; None when it is unpriced (unknown model, or too early)."""
        periods = self.models.get(self.aliases.get(model, model))
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
        shipped = resources.files("tollhouse") / "pricing.yaml"
        return parse_pricing(shipped.read_text(encoding="utf-8"), str(shipped))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PricingError(f"{path}: cannot read the pricing table: {exc.strerror}") from None
    return parse_pricing(text, str(path))


def token_cost(
    table: PricingTable, model: str | None, prompt_tokens: int, completion_tokens: int, at: date
) -> Decimal | None:
    """What a run's tokens cost, all prompt tokens at the full input rate (run usage has
    no cached split). None when the model is unpriced: metered, never priced at zero."""
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError("token counts cannot be negative")
    price = None if model is None else table.token_price(model, at)
    if price is None:
        return None
    return (prompt_tokens * price.input + completion_tokens * price.output).scaleb(-6)


def storage_costs(
    table: PricingTable, bytes_by_tenant: Mapping[str, float], day: date
) -> dict[str, Decimal]:
    """One day's File Search storage cost per tenant, from each tenant's average bytes.

    The free allowance is organisation-wide: it is subtracted once from the total, and
    the organisation's cost is shared in proportion to each tenant's bytes (so each
    tenant gets the same fraction of the free GB as of the bytes). Shares are carried to
    1e-10 USD, leftover units going to the largest remainders, so they add up exactly.
    """
    price = table.storage(day)
    amounts = {tenant: Fraction(str(b)) for tenant, b in bytes_by_tenant.items()}
    if any(amount < 0 for amount in amounts.values()):
        raise ValueError("stored bytes cannot be negative")
    total = sum(amounts.values(), Fraction(0))
    billable = max(total - Fraction(price.free_gb) * price.gb_bytes, Fraction(0))
    org_cost = billable / price.gb_bytes * Fraction(price.per_gb_day)
    org_units = floor(org_cost * 10**STORAGE_PLACES + Fraction(1, 2))
    if org_units == 0:
        return {tenant: Decimal(0) for tenant in amounts}
    exact = {tenant: org_units * amount / total for tenant, amount in amounts.items()}
    units = {tenant: floor(share) for tenant, share in exact.items()}
    leftover = org_units - sum(units.values())
    by_remainder = sorted(exact, key=lambda t: (units[t] - exact[t], t))
    for tenant in by_remainder[:leftover]:
        units[tenant] += 1
    return {tenant: Decimal(n).scaleb(-STORAGE_PLACES) for tenant, n in units.items()}


def gb_days(samples: Sequence[tuple[float, int]], start: float, end: float) -> float:
    """Integrate ``(unix seconds, bytes)`` samples over ``[start, end)`` into binary GB-days.

    Usage is a step function: each sample's bytes hold until the next sample (the last
    one until ``end``); before the first sample usage is 0. Of samples with the same
    time, the last one given wins.
    """
    if end < start:
        raise ValueError("end is before start")
    ordered = sorted(samples, key=lambda sample: sample[0])
    byte_seconds = 0.0
    for index, (at, size) in enumerate(ordered):
        if size < 0:
            raise ValueError("stored bytes cannot be negative")
        until = ordered[index + 1][0] if index + 1 < len(ordered) else end
        held = min(until, end) - max(at, start)
        if held > 0:
            byte_seconds += size * held
    return byte_seconds / (GIB * 86_400)


def usd(value: Decimal) -> str:
    """Money for people: dollars to 4 decimal places, half up (a run can cost < 1 cent)."""
    rounded = value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    return f"-${-rounded}" if rounded < 0 else f"${abs(rounded)}"
