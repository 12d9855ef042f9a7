"""The policy file: tenants, their keys, their limits, the organisation's limits, shaping,
and what the stale-resource cleaner may delete.

Validated into frozen objects; every mistake is reported with the file and the
field it is in, so ``tollhouse check-policy`` can be run in CI before a deploy.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    AfterValidator,
    AliasPath,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from tollhouse.api.classify import RequestClass

UNIT_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
# The organisation's published Assistants limits, per minute.
PUBLISHED_LIMITS = {
    RequestClass.GET: 1000,
    RequestClass.POST: 300,
    RequestClass.RUN_CREATE: 200,
    RequestClass.DELETE: 300,
}
KEY_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
RESERVED_TENANTS = frozenset({"_org", "_tollhouse", "other"})
UPSTREAM_ORGANIZATION = re.compile(r"org-[A-Za-z0-9_-]{1,64}")
UPSTREAM_PROJECT = re.compile(r"proj_[A-Za-z0-9_-]{1,64}")


class PolicyError(Exception):
    """A policy file that cannot be used; the message names the file and the field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RateLimit(_Frozen):
    """``requests_per_unit`` per ``unit``, bursting to ``burst``; or ``unlimited``."""

    requests_per_unit: Annotated[int, Field(gt=0)] | None = None
    unit: Literal["second", "minute", "hour", "day"] = "minute"
    burst: Annotated[int, Field(gt=0)] | None = None
    unlimited: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> RateLimit:
        if self.unlimited and self.requests_per_unit is not None:
            raise ValueError("set either unlimited: true or requests_per_unit, not both")
        if not self.unlimited and self.requests_per_unit is None:
            raise ValueError("requests_per_unit is required unless unlimited: true")
        return self

    @property
    def per_second(self) -> float | None:
        """Requests a second this limit refills; None when unlimited."""
        if self.requests_per_unit is None:
            return None
        return self.requests_per_unit / UNIT_SECONDS[self.unit]


TOKENS = "tokens"  # the section of a limits mapping that limits model tokens, by model


def _class_limits(value: object) -> object:
    """A limits mapping without its ``tokens`` section (read into a field of its own)."""
    if isinstance(value, dict) and TOKENS in value:
        return {key: rule for key, rule in value.items() if key != TOKENS}
    return value


Limits = Annotated[dict[RequestClass, RateLimit], BeforeValidator(_class_limits)]


# -- model tokens per unit ---------------------------------------------------------------------

DEFAULT_MODEL = "default"  # the limit shared by every model a tokens section does not list
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")
SNAPSHOT = re.compile(r"^(?P<base>.+)-\d{4}-\d{2}-\d{2}$")  # gpt-4o-2024-08-06 -> gpt-4o


class TokenRate(_Frozen):
    """``tokens_per_unit`` model tokens per ``unit``, bursting to ``burst``; or ``unlimited``."""

    tokens_per_unit: Annotated[int, Field(gt=0)] | None = None
    unit: Literal["second", "minute", "hour", "day"] = "minute"
    burst: Annotated[int, Field(gt=0)] | None = None
    unlimited: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> TokenRate:
        if self.unlimited and self.tokens_per_unit is not None:
            raise ValueError("set either unlimited: true or tokens_per_unit, not both")
        if not self.unlimited and self.tokens_per_unit is None:
            raise ValueError("tokens_per_unit is required unless unlimited: true")
        return self

    @property
    def per_second(self) -> float | None:
        """Tokens a second this limit refills; None when unlimited."""
        if self.tokens_per_unit is None:
            return None
        return self.tokens_per_unit / UNIT_SECONDS[self.unit]


def _model_name(value: str) -> str:
    if not MODEL_NAME.match(value):
        raise ValueError(
            "not a model name: letters, digits and _ . : / - (up to 128), like 'gpt-4o', "
            "or 'default' for every model not listed"
        )
    return value


# model name (or ``default``) -> its limit; read from ``tokens`` under a limits mapping
TokenLimits = dict[Annotated[str, AfterValidator(_model_name)], TokenRate]


def _tokens_of(section: str) -> Any:
    """The ``tokens`` mapping under ``section`` (``limits``, ``organization``...)."""
    return Field(default_factory=dict, validation_alias=AliasPath(section, TOKENS))


def token_rule(rules: TokenLimits, model: str) -> tuple[str, TokenRate] | None:
    """The bucket name and limit for ``model``: its own entry (a dated snapshot takes its
    model's), else ``default``, shared by every model not listed; None: no limit."""
    if model in rules:
        return model, rules[model]
    snapshot = SNAPSHOT.match(model)
    if snapshot is not None and snapshot["base"] in rules:
        return snapshot["base"], rules[snapshot["base"]]
    if DEFAULT_MODEL in rules:
        return DEFAULT_MODEL, rules[DEFAULT_MODEL]
    return None


class TokenEstimates(_Frozen):
    """How a request's tokens are estimated before it is sent."""

    # the output reserved for a call whose body sets no max_output_tokens / max_tokens
    default_output_tokens: Annotated[int, Field(gt=0)] = 4096


def _key_hash(value: str) -> str:
    if not KEY_HASH.match(value):
        raise ValueError(
            "must be a key hash like 'sha256:<64 hex digits>', as printed by "
            "'tollhouse keys create'; never the key itself"
        )
    return value


def _organization_id(value: str) -> str:
    if not UPSTREAM_ORGANIZATION.fullmatch(value):
        raise ValueError("must be an organization id like 'org-abc123', not its name")
    return value


def _project_id(value: str) -> str:
    if not UPSTREAM_PROJECT.fullmatch(value):
        raise ValueError("must be a project id like 'proj_abc123', not its name")
    return value


class Upstream(_Frozen):
    """The ``OpenAI-Organization`` / ``OpenAI-Project`` sent for a tenant's requests.

    Used whenever tollhouse sends its own upstream key; what a tenant sends itself
    is then replaced, so a tenant cannot bill another project with that key.
    """

    organization: Annotated[str, AfterValidator(_organization_id)] | None = None
    project: Annotated[str, AfterValidator(_project_id)] | None = None


class Tenant(_Frozen):
    keys: tuple[Annotated[str, AfterValidator(_key_hash)], ...] = ()
    limits: Limits = {}
    tokens: TokenLimits = _tokens_of("limits")
    shadow_mode: bool = False
    admin: bool = False  # reaches every tenant's objects, and objects with no owner
    upstream: Upstream = Upstream()


class Isolation(_Frozen):
    """What ordinary tenants get for an object tollhouse has no owner for.

    ``deny`` (the default) answers as for a missing object; ``allow`` opens such
    objects to every tenant, for a migration window before ``tollhouse adopt`` ran.
    """

    unowned: Literal["deny", "allow"] = "deny"


class Shaping(_Frozen):
    max_wait: Annotated[float, Field(gt=0, le=60)]
    max_queue: Annotated[int, Field(gt=0)] = 1000


class Retries(_Frozen):
    """What a refused client is told about when to retry.

    With ``spread`` (the default), clients refused in the same moment are each
    given a retry time of their own, one refill apart, so that clients which wait
    exactly the time they are told (the official ones do, without jitter) do not
    all come back at once; no time handed out is more than ``max_retry_after``
    seconds ahead (the official clients honour up to 120). With ``spread: false``
    every refused client is told the time until the next token.
    """

    spread: bool = True
    max_retry_after: Annotated[float, Field(gt=0, le=120)] = 60.0

    @property
    def spread_seconds(self) -> float:
        """How far ahead retry times are spread; 0: not at all."""
        return self.max_retry_after if self.spread else 0.0


class Identify(_Frozen):
    """How a request's tenant is found."""

    mode: Literal["keys", "header", "default"] = "default"
    header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+$")] = "X-Tollhouse-Tenant"
    default_tenant: str = "default"
    # header mode: a tenant the policy does not list is refused (deny), or served with
    # default_limits if its name is a usable tenant name (allow).
    unlisted: Literal["deny", "allow"] = "deny"

    @model_validator(mode="after")
    def _unlisted_in_header_mode(self) -> Identify:
        if self.unlisted == "allow" and self.mode != "header":
            raise ValueError(
                f"unlisted: allow applies only to mode: header (mode is {self.mode!r}), "
                "where a trusted app names the tenant"
            )
        return self


DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# The object kinds the cleaner deletes, as named in the policy.
CleanupKind = Literal[
    "threads",
    "vector_stores",
    "files",
    "assistants",
    "conversations",
    "containers",
    "responses",
    "chat_completions",
]


def _seconds(value: object) -> object:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or a number of seconds."""
    if isinstance(value, str):
        match = DURATION.match(value)
        if match is None:
            raise ValueError(
                f"{value!r} is not a duration: write a whole number and a unit (s, m, h, d, w) "
                "like '30d', a number of seconds, or null to turn it off"
            )
        return int(match.group(1)) * DURATION_SECONDS[match.group(2)]
    return value


Seconds = Annotated[int, BeforeValidator(_seconds), Field(gt=0)]
# A time-to-live per kind; null turns the cleaner off for that kind.
Ttls = dict[CleanupKind, Seconds | None]
DEFAULT_TTLS: Ttls = {
    "threads": 30 * 86400,
    "vector_stores": 7 * 86400,
    "files": 30 * 86400,
    "assistants": None,
    "conversations": 30 * 86400,
    # A container stops on its own once idle past its expires_after (20 minutes by default);
    # one idle for a day is deleted with its files.
    "containers": 86400,
    # Stored responses and chat completions are the record of what was asked and answered
    # (and later responses chain to them): never deleted unless a policy says so.
    "responses": None,
    "chat_completions": None,
}


def _crontab(value: str) -> str:
    try:
        CronTrigger.from_crontab(value, timezone="UTC")
    except ValueError as exc:
        raise ValueError(f"not a crontab expression like '0 3 * * *': {exc}") from None
    return value


class KeepMarker(_Frozen):
    """``metadata[key] == value`` on an object protects it from the cleaner."""

    key: Annotated[str, Field(min_length=1, max_length=64)] = "tollhouse_keep"
    value: Annotated[str, Field(min_length=1, max_length=512)] = "true"


class CleanupTenant(_Frozen):
    ttl: Ttls = {}


class Cleanup(_Frozen):
    """What the stale-resource cleaner deletes, when, and how much of the DELETE budget."""

    enabled: bool = True
    schedule: Annotated[str, AfterValidator(_crontab)] = "0 3 * * *"  # UTC
    ttl: Ttls = {}
    tenants: dict[str, CleanupTenant] = {}
    keep_marker: KeepMarker = KeepMarker()
    delete_share: Annotated[float, Field(gt=0, le=1)] = 0.5

    @model_validator(mode="after")
    def _consistent(self) -> Cleanup:
        for name in self.tenants:
            if not TENANT_NAME.match(name) or name in RESERVED_TENANTS:
                raise ValueError(f"tenants.{name}: not a usable tenant name")
        # Kinds not given keep their defaults; null is kept as "off".
        object.__setattr__(self, "ttl", {**DEFAULT_TTLS, **self.ttl})
        return self

    def ttl_for(self, tenant: str, kind: CleanupKind) -> int | None:
        """Seconds an object of ``kind`` may go untouched; None: it is never deleted."""
        own = self.tenants.get(tenant)
        if own is not None and kind in own.ttl:
            return own.ttl[kind]
        return self.ttl.get(kind)


# -- spend budgets --------------------------------------------------------------------

# The operations that create cost, and the worst case each is reserved at when its body
# does not say more (a model call naming its model and output limit is priced from them).
DEFAULT_WORST_CASE_USD: dict[str, Decimal] = {
    "threads.runs.create": Decimal("0.50"),
    "threads.create_and_run": Decimal("0.50"),
    "responses.create": Decimal("0.50"),
    "chat.completions.create": Decimal("0.50"),
    "containers.create": Decimal("0.03"),
    "vector_stores.files.create": Decimal("0.01"),
    "vector_stores.file_batches.create": Decimal("0.01"),
}
CostingOperation = Literal[
    "threads.runs.create",
    "threads.create_and_run",
    "responses.create",
    "chat.completions.create",
    "containers.create",
    "vector_stores.files.create",
    "vector_stores.file_batches.create",
]
Usd = Annotated[Decimal, Field(gt=0, max_digits=14, decimal_places=6)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not an IANA time zone like 'UTC' or 'Europe/Berlin'"
        ) from None
    return value


def _ascending(value: tuple[float, ...]) -> tuple[float, ...]:
    if list(value) != sorted(set(value)):
        raise ValueError(
            "soft thresholds must be distinct and in ascending order, like [0.8, 0.95]"
        )
    return value


Thresholds = Annotated[tuple[Fraction, ...], AfterValidator(_ascending)]


class TenantBudget(_Frozen):
    """A tenant's hard limits in USD per calendar day and month (either may be left out)."""

    daily_usd: Usd | None = None
    monthly_usd: Usd | None = None
    soft: Thresholds | None = None  # fractions of the hard limit; None: the budgets' own

    @model_validator(mode="after")
    def _some_limit(self) -> TenantBudget:
        if self.daily_usd is None and self.monthly_usd is None:
            raise ValueError("give daily_usd, monthly_usd or both")
        return self


class Budgets(_Frozen):
    """Spend budgets: calendar periods in ``time_zone``, soft thresholds for alerts, and
    the worst case a cost-creating request is reserved at when its body does not say."""

    time_zone: Annotated[str, AfterValidator(_time_zone)] = "UTC"
    soft: Thresholds = (0.8, 0.95)
    tenants: dict[str, TenantBudget] = {}
    worst_case_usd: dict[CostingOperation, Usd] = {}
    default_output_tokens: Annotated[int, Field(gt=0)] = 4096

    @model_validator(mode="after")
    def _consistent(self) -> Budgets:
        for name in self.tenants:
            if not TENANT_NAME.match(name) or name in RESERVED_TENANTS:
                raise ValueError(f"tenants.{name}: not a usable tenant name")
        object.__setattr__(
            self, "worst_case_usd", {**DEFAULT_WORST_CASE_USD, **self.worst_case_usd}
        )
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def thresholds(self, tenant: str) -> tuple[float, ...]:
        own = self.tenants.get(tenant)
        return own.soft if own is not None and own.soft is not None else self.soft


def _published() -> Limits:
    return {cls: RateLimit(requests_per_unit=n) for cls, n in PUBLISHED_LIMITS.items()}


class Policy(_Frozen):
    identify: Identify = Identify()
    tenants: dict[str, Tenant] = {}
    default_limits: Limits = {}
    default_tokens: TokenLimits = _tokens_of("default_limits")
    organization: Limits = Field(default_factory=_published)
    organization_tokens: TokenLimits = _tokens_of("organization")
    token_estimates: TokenEstimates = TokenEstimates()
    shaping: dict[RequestClass, Shaping] = {}
    retries: Retries = Retries()
    shadow_mode: bool = False
    cleanup: Cleanup = Cleanup()
    isolation: Isolation = Isolation()
    budgets: Budgets = Budgets()

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        seen: dict[str, str] = {}
        for name, tenant in self.tenants.items():
            if not TENANT_NAME.match(name) or name in RESERVED_TENANTS:
                raise ValueError(f"tenants.{name}: not a usable tenant name")
            for key in tenant.keys:
                if key in seen:
                    raise ValueError(f"tenants.{name}.keys: key also belongs to {seen[key]}")
                seen[key] = name
        if self.identify.mode == "keys" and not seen:
            raise ValueError("identify.mode is 'keys' but no tenant has a key")
        # Organisation limits not given keep their published values.
        merged = {**_published(), **self.organization}
        object.__setattr__(self, "organization", merged)
        return self

    def tenant_limit(self, tenant: str, request_class: RequestClass) -> RateLimit | None:
        """The tenant's own limit for a class, else the default one; None: no tenant limit."""
        own = self.tenants.get(tenant)
        if own is not None and request_class in own.limits:
            return own.limits[request_class]
        return self.default_limits.get(request_class)

    def tenant_tokens(self, tenant: str, model: str) -> tuple[str, TokenRate] | None:
        """The tenant's own token limit for ``model``, else the default one; None: none."""
        own = self.tenants.get(tenant)
        found = token_rule(own.tokens, model) if own is not None else None
        return found if found is not None else token_rule(self.default_tokens, model)

    def organization_token_limit(self, model: str) -> tuple[str, TokenRate] | None:
        return token_rule(self.organization_tokens, model)

    @property
    def token_limited(self) -> bool:
        """Whether any model call may meet a token limit under this policy."""
        tenants = self.tenants.values()
        return bool(self.organization_tokens or self.default_tokens) or any(
            tenant.tokens for tenant in tenants
        )

    def limits_tokens(self, tenant: str) -> bool:
        """Whether a model call of ``tenant`` may meet a token limit (its body is read then)."""
        own = self.tenants.get(tenant)
        return bool(
            self.organization_tokens or self.default_tokens or (own is not None and own.tokens)
        )

    def reaches_all(self, tenant: str) -> bool:
        """Whether ``tenant`` is exempt from isolation: an admin, or the only tenant there is."""
        if self.identify.mode == "default":
            return True
        own = self.tenants.get(tenant)
        return own is not None and own.admin

    def in_shadow_mode(self, tenant: str) -> bool:
        own = self.tenants.get(tenant)
        return self.shadow_mode or (own is not None and own.shadow_mode)


def _problem(source: str, error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]).replace(".[key]", " (as a key)")
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{source}: {where}: {message}" if where else f"{source}: {message}"


def parse_policy(data: Any, source: str) -> Policy:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: the policy must be a mapping, not {type(data).__name__}")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(source, error) for error in exc.errors()]
        raise PolicyError("\n".join(problems)) from None


def load_policy(path: Path) -> Policy:
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from None
    return parse_policy(data, str(path))
