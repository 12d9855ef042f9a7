"""Who is asking: a request's tenant, from a tollhouse key, a trusted header or the default.

tollhouse keys are random 256-bit tokens; only their SHA-256 is ever stored, and
a lookup compares digests in constant time. In ``keys`` mode the client's key is
replaced by the real upstream key before forwarding, so apps never hold it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from tollhouse.errors import ErrorResponse, TollhouseError
from tollhouse.policy import Policy

KEY_PREFIX = "th-"
Headers = list[tuple[bytes, bytes]]
OTHER = "other"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class UnknownKey(TollhouseError):
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
                "'Authorization: Bearer th-...'."
            )
        return ErrorResponse(
            status=401, message=message, type="invalid_request_error", code="invalid_api_key"
        )


@dataclass(frozen=True, slots=True)
class Identity:
    tenant: str
    label: str  # the tenant as a bounded metrics label


class Tenants:
    """Identifies tenants under one policy; rebuilt when the policy is reloaded."""

    def __init__(self, policy: Policy, upstream_api_key: str | None = None) -> None:
        self._mode = policy.identify.mode
        self._default = policy.identify.default_tenant
        self._header = policy.identify.header.lower().encode()
        self._digests = tuple(
            (key.encode(), name) for name, t in policy.tenants.items() for key in t.keys
        )
        self._known = frozenset(policy.tenants) | {self._default}
        self._authorization = (
            b"Bearer " + upstream_api_key.encode() if upstream_api_key is not None else None
        )

    @property
    def labels(self) -> frozenset[str]:
        return self._known | {OTHER}

    def label(self, tenant: str) -> str:
        return tenant if tenant in self._known else OTHER

    def identify(self, headers: Headers) -> tuple[Identity, Headers]:
        """The tenant of a request and the headers to forward for it.

        Raises ``UnknownKey`` in ``keys`` mode when the bearer token is not a known key.
        """
        if self._mode == "keys":
            tenant = self._tenant_from_key(headers)
            headers = self._without(headers, b"authorization")
            if self._authorization is not None:
                headers.append((b"authorization", self._authorization))
        elif self._mode == "header":
            tenant = self._tenant_from_header(headers)
            headers = self._without(headers, self._header)
            if self._authorization is not None:
                headers = self._without(headers, b"authorization")
                headers.append((b"authorization", self._authorization))
        else:
            tenant = self._default
        return Identity(tenant, self.label(tenant)), headers

    def _tenant_from_key(self, headers: Headers) -> str:
        value = next((v for k, v in headers if k.lower() == b"authorization"), None)
        if value is None or not value[:7].lower() == b"bearer ":
            raise UnknownKey(presented=False)
        presented = hash_key(value[7:].strip().decode("latin-1")).encode()
        tenant = None
        # Every stored digest is compared, in constant time, with no early exit.
        for digest, name in self._digests:
            if hmac.compare_digest(digest, presented):
                tenant = name
        if tenant is None:
            raise UnknownKey(presented=True)
        return tenant

    def _tenant_from_header(self, headers: Headers) -> str:
        for name, value in headers:
            if name.lower() == self._header:
                return value.decode("latin-1").strip() or self._default
        return self._default

    @staticmethod
    def _without(headers: Headers, name: bytes) -> Headers:
        return [(k, v) for k, v in headers if k.lower() != name]
