"""Who is asking: a request's tenant, from a tollhouse key, a trusted header or the default.

tollhouse keys are random 256-bit tokens; only their SHA-256 is ever stored, and
a lookup compares digests in constant time. A key comes as a bearer token, or in
Azure OpenAI's ``api-key`` header. In ``keys`` mode the client's key is replaced by
the real upstream key, in the same header, before forwarding, so apps never hold it; so are
``OpenAI-Organization`` and ``OpenAI-Project``, by the tenant's own from the policy.
In ``header`` mode only the tenants the policy lists are accepted, unless it says
``identify.unlisted: allow``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

from tollhouse.api.errors import ErrorResponse, TollhouseError
from tollhouse.config.policy import RESERVED_TENANTS, TENANT_NAME, Policy, Upstream

log = logging.getLogger(__name__)

KEY_PREFIX = "th-"
Headers = list[tuple[bytes, bytes]]
OTHER = "other"
AUTHORIZATION = b"authorization"
API_KEY = b"api-key"  # Azure OpenAI's key header
ORGANIZATION = b"openai-organization"
PROJECT = b"openai-project"
# At most this much of an unknown tenant header's value is ever echoed or logged.
SHOWN_CHARS = 64


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class IdentityRefused(TollhouseError):
    """A request whose tenant cannot be established: refused, never forwarded."""


class UnknownKey(IdentityRefused):
    def __init__(self, presented: bool) -> None:
        super().__init__("unknown key" if presented else "missing key")
        self.presented = presented

    def response(self) -> ErrorResponse:
        if self.presented:
            message = (
                "Incorrect API key provided. This tollhouse accepts only the keys it issued "
                "('tollhouse keys create --tenant NAME'); ask your platform team for one."
            )
        else:
            message = (
                "You didn't provide an API key. Send a tollhouse-issued key as "
                "'Authorization: Bearer th-...' (or, from an Azure OpenAI client, as "
                "'api-key: th-...')."
            )
        return ErrorResponse(
            status=401, message=message, type="invalid_request_error", code="invalid_api_key"
        )


class AmbiguousKey(IdentityRefused):
    """Two different keys in one request: which one names the tenant is not clear."""

    def __init__(self) -> None:
        super().__init__("two different keys")

    def response(self) -> ErrorResponse:
        return ErrorResponse(
            status=401,
            message=(
                "Two different API keys were sent (in 'Authorization' and 'api-key', or one "
                "of them twice). Send one tollhouse-issued key, in one header."
            ),
            type="invalid_request_error",
            code="invalid_api_key",
        )


class UnknownTenant(IdentityRefused):
    """A tenant header naming a tenant the policy does not accept."""

    def __init__(self, header: str, value: str, unlisted_allowed: bool) -> None:
        shown = repr(value[:SHOWN_CHARS]) + ("..." if len(value) > SHOWN_CHARS else "")
        super().__init__(f"tenant {shown} named in {header} is not in the policy")
        self.header = header
        self.shown = shown
        self.unlisted_allowed = unlisted_allowed

    def response(self) -> ErrorResponse:
        if self.unlisted_allowed:
            why = (
                "which is not a usable tenant name (up to 63 letters, digits, '_', '.' "
                "or '-', starting with a letter or digit; not a reserved name)"
            )
        else:
            why = "which is not in this tollhouse's policy"
        message = (
            f"The {self.header} header names tenant {self.shown}, {why}. Name a tenant the "
            "policy lists under 'tenants' (or leave the header out for the default "
            "tenant), or ask your platform team to add it."
        )
        return ErrorResponse(
            status=403, message=message, type="invalid_request_error", code="unknown_tenant"
        )


class RepeatedTenantHeader(IdentityRefused):
    """The tenant header sent more than once."""

    def __init__(self, header: str) -> None:
        super().__init__(f"{header} sent more than once")
        self.header = header

    def response(self) -> ErrorResponse:
        return ErrorResponse(
            status=400,
            message=f"The {self.header} header was sent more than once; send it once.",
            type="invalid_request_error",
            code="ambiguous_tenant",
        )


@dataclass(frozen=True, slots=True)
class _Rewrite:
    """The request headers identification removes, and the ones it adds in their place."""

    drop: frozenset[bytes]
    add: tuple[tuple[bytes, bytes], ...]
    key: bytes | None = None  # the upstream key, sent in place of the client's

    def applied(self, headers: Headers) -> Headers:
        kept = [(k, v) for k, v in headers if k.lower() not in self.drop]
        kept.extend(self.add)
        if self.key is not None:
            kept.extend(_key_headers(headers, self.key))
        return kept


def _key_headers(sent: Headers, key: bytes) -> list[tuple[bytes, bytes]]:
    """The upstream key in each header the client sent its own in; a bearer token by default."""
    names = {name.lower() for name, _ in sent}
    headers = [(API_KEY, key)] if API_KEY in names else []
    if AUTHORIZATION in names or not headers:
        headers.append((AUTHORIZATION, b"Bearer " + key))
    return headers


def _upstream_headers(upstream: Upstream) -> tuple[tuple[bytes, bytes], ...]:
    found = ((ORGANIZATION, upstream.organization), (PROJECT, upstream.project))
    return tuple((name, value.encode()) for name, value in found if value is not None)


@dataclass(frozen=True, slots=True)
class Identity:
    tenant: str
    label: str  # the tenant as a bounded metrics label


class Tenants:
    """Identifies tenants under one policy; rebuilt when the policy is reloaded."""

    def __init__(self, policy: Policy, upstream_api_key: str | None = None) -> None:
        identify = policy.identify
        self._mode = identify.mode
        self._default = identify.default_tenant
        self._header_name = identify.header
        self._header = identify.header.lower().encode()
        self._unlisted = identify.unlisted == "allow"
        self._digests = tuple(
            (key.encode(), name) for name, t in policy.tenants.items() for key in t.keys
        )
        self._known = frozenset(policy.tenants) | {self._default}
        key = upstream_api_key.encode() if upstream_api_key is not None else None
        self._rewrite = self._rewrite_for((), key)
        self._rewrites = {
            name: self._rewrite_for(added, key)
            for name, tenant in policy.tenants.items()
            if (added := _upstream_headers(tenant.upstream))
        }
        substitutes_key = self._mode == "keys" or (self._mode == "header" and key is not None)
        if self._rewrites and not substitutes_key:
            log.warning(
                "tenants %s: upstream organization/project are sent only when tollhouse "
                "sends its own upstream key (keys mode, or header mode with "
                "TOLLHOUSE_UPSTREAM_API_KEY set); ignored",
                ", ".join(sorted(self._rewrites)),
            )

    def _rewrite_for(self, added: tuple[tuple[bytes, bytes], ...], key: bytes | None) -> _Rewrite:
        if self._mode == "keys":
            # The tenant's key, organisation and project are never forwarded: the
            # organisation's key would otherwise act for whichever project they name.
            drop = frozenset({AUTHORIZATION, API_KEY, ORGANIZATION, PROJECT})
            return _Rewrite(drop, added, key)
        if self._mode == "header" and key is not None:
            drop = frozenset({self._header, AUTHORIZATION, API_KEY, *(name for name, _ in added)})
            return _Rewrite(drop, added, key)
        if self._mode == "header":  # the app's own key, organisation and project
            return _Rewrite(frozenset({self._header}), ())
        return _Rewrite(frozenset(), ())

    @property
    def labels(self) -> frozenset[str]:
        return self._known | {OTHER}

    def label(self, tenant: str) -> str:
        return tenant if tenant in self._known else OTHER

    def identify(self, headers: Headers) -> tuple[Identity, Headers]:
        """The tenant of a request and the headers to forward for it.

        Raises ``UnknownKey`` in ``keys`` mode when the bearer token is not a known key,
        and ``UnknownTenant`` in ``header`` mode when the header names a tenant the
        policy does not accept; both are ``IdentityRefused``.
        """
        if self._mode == "keys":
            tenant = self._tenant_from_key(headers)
        elif self._mode == "header":
            tenant = self._tenant_from_header(headers)
        else:
            return Identity(self._default, self.label(self._default)), headers
        rewrite = self._rewrites.get(tenant, self._rewrite)
        return Identity(tenant, self.label(tenant)), rewrite.applied(headers)

    def _tenant_from_key(self, headers: Headers) -> str:
        keys = presented_keys(headers)
        if not keys:
            raise UnknownKey(presented=False)
        if len(keys) > 1:
            raise AmbiguousKey()
        presented = hash_key(keys.pop().decode("latin-1")).encode()
        tenant = None
        # Every stored digest is compared, in constant time, with no early exit.
        for digest, name in self._digests:
            if hmac.compare_digest(digest, presented):
                tenant = name
        if tenant is None:
            raise UnknownKey(presented=True)
        return tenant

    def _tenant_from_header(self, headers: Headers) -> str:
        values = [value for name, value in headers if name.lower() == self._header]
        if not values:
            return self._default
        if len(values) > 1:
            # A gateway that appends its header instead of replacing it would let the
            # client choose: which one counts is ambiguous, so neither does.
            raise RepeatedTenantHeader(self._header_name)
        tenant = values[0].decode("latin-1").strip()
        if not tenant:
            return self._default
        if tenant in self._known or (self._unlisted and _usable(tenant)):
            return tenant
        raise UnknownTenant(self._header_name, tenant, self._unlisted)


def presented_keys(headers: Headers) -> set[bytes]:
    """The keys a request carries: bearer tokens and ``api-key`` values, blanks left out."""
    keys: set[bytes] = set()
    for name, value in headers:
        name = name.lower()
        if name == AUTHORIZATION and value[:7].lower() == b"bearer ":
            keys.add(value[7:].strip())
        elif name == API_KEY:
            keys.add(value.strip())
    keys.discard(b"")
    return keys


def _usable(tenant: str) -> bool:
    return TENANT_NAME.fullmatch(tenant) is not None and tenant not in RESERVED_TENANTS
