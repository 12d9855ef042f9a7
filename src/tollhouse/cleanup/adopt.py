"""``tollhouse adopt``: attributing objects that existed upstream before tollhouse to tenants."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from sqlalchemy import Engine, inspect

from tollhouse.api.classify import Kind, RequestClass
from tollhouse.cleanup.pacing import MIN_WAIT, PAGE, Answer, PacedClient, Sleep, share_limit
from tollhouse.cleanup.stale import protected
from tollhouse.config.policy import (
    PUBLISHED_LIMITS,
    RESERVED_TENANTS,
    TENANT_NAME,
    KeepMarker,
    RateLimit,
)
from tollhouse.ledger import store as ledger
from tollhouse.ledger.models import OwnedObject
from tollhouse.ledger.store import Owned
from tollhouse.metering.meter import ObjectSeen
from tollhouse.quota.admission import Quota
from tollhouse.upstream.forward import Forwarder, UpstreamError

log = logging.getLogger(__name__)

ADOPT_TENANT: Final = "_tollhouse_adopt"
METADATA_KEY: Final = "tollhouse_tenant"
# What the upstream can list, in the order a run goes through it; threads come last.
LISTED: Final = (
    (Kind.ASSISTANT, "/v1/assistants"),
    (Kind.VECTOR_STORE, "/v1/vector_stores"),
    (Kind.FILE, "/v1/files"),
)
KINDS: Final = (Kind.ASSISTANT, Kind.VECTOR_STORE, Kind.FILE, Kind.THREAD)
# Ids go into request paths: nothing that could step out of /v1/threads/.
OBJECT_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
CHECKPOINT_VERSION: Final = 1


class AdoptError(Exception):
    """A run that cannot start or go on; the message says what to do about it."""


@dataclass(frozen=True, slots=True)
class ThreadLine:
    """A line of the threads file: a thread id and, optionally, its tenant."""

    line: int
    id: str
    tenant: str | None = None


def parse_threads(text: str, source: str) -> list[ThreadLine]:
    """One thread id a line, optionally followed by a tenant; ``#`` comments and blanks skipped."""
    found: list[ThreadLine] = []
    first: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"{source}:{number}"
        if len(fields) > 2:
            raise AdoptError(f"{where}: expected a thread id and at most a tenant, got {raw!r}")
        if not OBJECT_ID.match(fields[0]):
            raise AdoptError(f"{where}: {fields[0]!r} is not a thread id")
        if fields[0] in first:
            raise AdoptError(f"{where}: thread {fields[0]} is already on line {first[fields[0]]}")
        first[fields[0]] = number
        found.append(ThreadLine(number, fields[0], fields[1] if len(fields) == 2 else None))
    return found


@dataclass(frozen=True, slots=True)
class Rules:
    """How objects are attributed."""

    metadata_key: str = METADATA_KEY
    tenant: str | None = None  # --tenant: for objects that name no tenant themselves
    tenants: frozenset[str] = frozenset()  # the policy's tenants; empty: any usable name
    keep_marker: KeepMarker = field(default_factory=KeepMarker)

    def known(self, name: str) -> bool:
        if self.tenants:
            return name in self.tenants
        return bool(TENANT_NAME.match(name)) and name not in RESERVED_TENANTS


class Outcome(enum.StrEnum):
    ATTRIBUTED = "attributed"
    OWNED = "already_owned"
    UNOWNED = "unowned"  # names no tenant, and no --tenant
    UNKNOWN = "unknown_tenant"  # names a tenant the policy does not have
    MISSING = "not_found"  # a thread of the threads file the upstream does not have


@dataclass(frozen=True, slots=True)
class Attribution:
    outcome: Outcome
    tenant: str | None = None  # the new owner, the existing owner, or the unknown name
    source: str = ""  # where the name came from


def named_tenant(
    doc: Mapping[str, Any], kind: Kind, rules: Rules, line_tenant: str | None = None
) -> tuple[str, str] | None:
    """The tenant an object is given, and where that came from; None: nobody names one."""
    metadata = doc.get("metadata") if kind is not Kind.FILE else None  # files have none
    value = metadata.get(rules.metadata_key) if isinstance(metadata, dict) else None
    if isinstance(value, str) and value.strip():
        return value.strip(), f"metadata.{rules.metadata_key}"
    if line_tenant:
        return line_tenant, "the threads file"
    if rules.tenant:
        return rules.tenant, "--tenant"
    return None


def attribute(
    doc: Mapping[str, Any],
    kind: Kind,
    rules: Rules,
    owner: str | None,
    line_tenant: str | None = None,
) -> Attribution:
    """What becomes of one object: the first owner stays, else the tenant it is given."""
    named = named_tenant(doc, kind, rules, line_tenant)
    if owner is not None:
        if named is None or named[0] == owner:
            return Attribution(Outcome.OWNED, owner)
        return Attribution(Outcome.OWNED, owner, f"{named[1]} says {named[0]}")
    if named is None:
        return Attribution(Outcome.UNOWNED)
    name, source = named
    if not rules.known(name):
        return Attribution(Outcome.UNKNOWN, name, source)
    return Attribution(Outcome.ATTRIBUTED, name, source)


def owned(doc: Mapping[str, Any], kind: Kind, tenant: str, marker: KeepMarker, now: int) -> Owned:
    """The ledger row of an adopted object.

    It counts as used at adoption: tollhouse never saw it used, and dating its last
    use to its creation would hand every old object to the next cleanup sweep.
    """
    created = doc.get("created_at")
    created_at = created if isinstance(created, int) else now
    keep = kind is not Kind.FILE and protected(doc.get("metadata"), marker)
    seen = ObjectSeen(str(doc["id"]), kind, None, created_at, keep, max(now, created_at), None)
    return Owned(tenant, seen)


@dataclass
class Tally:
    """What became of the objects of one kind."""

    listed: int = 0
    attributed: dict[str, int] = field(default_factory=dict)  # tenant -> objects
    owned: int = 0
    unowned: int = 0
    unknown: dict[str, int] = field(default_factory=dict)  # unknown name -> objects
    missing: int = 0

    def add(self, attribution: Attribution) -> None:
        self.listed += 1
        outcome, name = attribution.outcome, attribution.tenant or ""
        if outcome is Outcome.ATTRIBUTED:
            self.attributed[name] = self.attributed.get(name, 0) + 1
        elif outcome is Outcome.UNKNOWN:
            self.unknown[name] = self.unknown.get(name, 0) + 1
        elif outcome is Outcome.OWNED:
            self.owned += 1
        elif outcome is Outcome.UNOWNED:
            self.unowned += 1
        else:
            self.missing += 1


@dataclass
class Progress:
    """How far a run got; saved after each page it applied, so a rerun continues from there."""

    fingerprint: dict[str, str]
    cursors: dict[str, str] = field(default_factory=dict)  # kind -> last id applied
    done: list[str] = field(default_factory=list)  # kinds listed to the end
    threads_line: int = 0  # the last threads-file line applied
    tallies: dict[str, Tally] = field(default_factory=lambda: {k: Tally() for k in KINDS})


def fingerprint(
    upstream: str, ledger_url: str, rules: Rules, threads: Sequence[ThreadLine]
) -> dict[str, str]:
    """What a checkpoint is only good for: the same upstream, ledger, rules and threads file."""
    lines = json.dumps([[t.line, t.id, t.tenant] for t in threads]).encode()
    return {
        "upstream": upstream,
        "ledger": ledger_url,
        "metadata_key": rules.metadata_key,
        "tenant": rules.tenant or "",
        "threads": hashlib.sha256(lines).hexdigest(),
    }


def load_checkpoint(path: Path, expected: Mapping[str, str]) -> Progress | None:
    """The progress saved in ``path``; None when there is none."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AdoptError(
            f"{path}: cannot read the checkpoint ({exc}); --restart ignores it"
        ) from None
    try:
        if data["version"] != CHECKPOINT_VERSION:
            raise ValueError(f"version {data['version']}")
        progress = Progress(
            fingerprint=dict(data["fingerprint"]),
            cursors=dict(data["cursors"]),
            done=list(data["done"]),
            threads_line=int(data["threads_line"]),
            tallies={kind: Tally(**data["tallies"][kind]) for kind in KINDS},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise AdoptError(f"{path}: not a usable checkpoint ({exc}); --restart ignores it") from None
    changed = sorted(k for k in expected if progress.fingerprint.get(k) != expected[k])
    if changed:
        raise AdoptError(
            f"{path}: the checkpoint is of a run with another {', '.join(changed)}; "
            "run with the same options to continue it, or --restart to start over"
        )
    return progress


def save_checkpoint(path: Path, progress: Progress) -> None:
    """Written whole, then moved into place: a crash leaves the old checkpoint or the new one."""
    data = {"version": CHECKPOINT_VERSION, **asdict(progress)}
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(partial, path)


class AdoptClient(PacedClient):
    """The cleaner's paced client, as adopt's own tenant with ``share`` of the GET budget."""

    def __init__(
        self,
        forwarder: Forwarder,
        quota: Quota,
        api_key: str,
        share: float,
        sleep: Sleep = asyncio.sleep,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(forwarder, quota, api_key, sleep, timeout)
        self._share = share
        self.upstream = forwarder.name

    def limit(self, request_class: RequestClass) -> RateLimit:
        organization = self._quota.policy.organization[request_class]
        return share_limit(organization, PUBLISHED_LIMITS[request_class], self._share)

    async def take(self, request_class: RequestClass) -> None:
        while True:
            decision = await self._quota.admit(
                ADOPT_TENANT, request_class, limit=self.limit(request_class)
            )
            if decision.allowed:
                return
            await self._sleep(max(decision.wait, MIN_WAIT))


@dataclass
class Report:
    apply: bool
    started_at: float
    tallies: dict[str, Tally]
    resumed: bool = False


def _failure(upstream: str, what: str, answer: Answer) -> UpstreamError:
    error = answer.body.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    detail = f"{what}: status {answer.status}" + (f": {message}" if message else "")
    return UpstreamError(upstream, detail)


class Adopter:
    """One run over the upstream's objects and the threads file.

    Assistants, vector stores and files are listed page by page; threads cannot be
    listed, so their ids come from a file. Each object goes to the tenant its
    metadata names, else the tenant on its threads-file line, else ``--tenant``;
    objects already owned keep their owner. With a checkpoint, each page applied is
    remembered, so a run stopped by an upstream error continues where it stopped.
    """

    def __init__(
        self,
        engine: Engine,
        client: AdoptClient,
        rules: Rules,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.client = client
        self.rules = rules
        self.clock = clock
        self._ledger_exists = True

    async def run(
        self,
        threads: Sequence[ThreadLine] = (),
        apply: bool = False,
        checkpoint: Path | None = None,
        restart: bool = False,
    ) -> Report:
        """A dry run reads the ledger and the upstream; only ``apply`` uses the checkpoint."""
        url = self.engine.url.render_as_string(hide_password=True)
        expected = fingerprint(self.client.upstream, url, self.rules, threads)
        saving = checkpoint if apply else None
        loaded = None if saving is None or restart else load_checkpoint(saving, expected)
        progress = loaded or Progress(expected)
        report = Report(apply, self.clock(), progress.tallies, resumed=loaded is not None)
        self._ledger_exists = await asyncio.to_thread(
            lambda: inspect(self.engine).has_table(OwnedObject.__tablename__)
        )
        for kind, path in LISTED:
            if kind in progress.done:
                continue
            after = progress.cursors.get(kind)
            more = True
            while more:
                items, more = await self._page(path, after)
                await self._settle(kind, [(item, None) for item in items], apply, progress)
                if items:
                    after = progress.cursors[kind] = str(items[-1]["id"])
                if not more:
                    progress.done.append(kind)
                if saving is not None:
                    save_checkpoint(saving, progress)
        todo = [t for t in threads if t.line > progress.threads_line]
        for start in range(0, len(todo), PAGE):
            chunk = todo[start : start + PAGE]
            found = [(await self._thread(t.id), t.tenant) for t in chunk]
            await self._settle(Kind.THREAD, found, apply, progress)
            progress.threads_line = chunk[-1].line
            if saving is not None:
                save_checkpoint(saving, progress)
        if saving is not None:
            saving.unlink(missing_ok=True)
        return report

    async def _page(self, path: str, after: str | None) -> tuple[list[dict[str, Any]], bool]:
        """One page of a list, oldest first, so that a cursor saved earlier stays valid."""
        query = f"limit={PAGE}&order=asc" + (f"&after={quote(after, safe='')}" if after else "")
        answer = await self.client.get(path, query)
        if answer.status != 200:
            raise _failure(self.client.upstream, f"GET {path}?{query}", answer)
        data = answer.body.get("data")
        items = [i for i in data or [] if isinstance(i, dict) and isinstance(i.get("id"), str)]
        # an empty page that claims more would never end
        return items, bool(answer.body.get("has_more")) and bool(items)

    async def _thread(self, thread_id: str) -> dict[str, Any] | str:
        """The thread, or its id alone when the upstream does not have it."""
        path = f"/v1/threads/{thread_id}"
        answer = await self.client.get(path)
        if answer.status == 404:
            return thread_id
        if not answer.ok:
            raise _failure(self.client.upstream, f"GET {path}", answer)
        return {**answer.body, "id": thread_id}

    async def _settle(
        self,
        kind: Kind,
        docs: Sequence[tuple[dict[str, Any] | str, str | None]],
        apply: bool,
        progress: Progress,
    ) -> None:
        """Decide each object of a page, and record the new owners in one transaction."""
        tally = progress.tallies[kind]
        ids = [doc if isinstance(doc, str) else str(doc["id"]) for doc, _ in docs]
        owners: Mapping[str, str] = {}
        if self._ledger_exists:  # a ledger not created yet owns nothing
            owners = await asyncio.to_thread(ledger.owners, self.engine, ids)
        now = int(self.clock())
        rows: list[Owned] = []
        for (doc, line_tenant), object_id in zip(docs, ids, strict=True):
            if isinstance(doc, str):
                tally.add(Attribution(Outcome.MISSING))
                log.warning("%s %s: not found upstream; skipped", kind, object_id)
                continue
            decided = attribute(doc, kind, self.rules, owners.get(object_id), line_tenant)
            tally.add(decided)
            _log(kind, object_id, decided, apply)
            if decided.outcome is Outcome.ATTRIBUTED and decided.tenant is not None:
                rows.append(owned(doc, kind, decided.tenant, self.rules.keep_marker, now))
        if apply and rows:
            tenants = sorted({row.tenant for row in rows})
            # record_owners does nothing for an id already owned: the first owner stays
            await asyncio.to_thread(ledger.record_owners, self.engine, rows, tenants, now)


def _log(kind: Kind, object_id: str, decided: Attribution, apply: bool) -> None:
    outcome, tenant, source = decided.outcome, decided.tenant, decided.source
    if outcome is Outcome.ATTRIBUTED:
        verb = "attributed" if apply else "would attribute"
        log.info("%s %s %s to %s (%s)", verb, kind, object_id, tenant, source)
    elif outcome is Outcome.OWNED:
        note = f" ({source}); kept" if source else ""
        log.info("%s %s: already owned by %s%s", kind, object_id, tenant, note)
    elif outcome is Outcome.UNKNOWN:
        log.warning("%s %s: %s names %r, not a tenant; skipped", kind, object_id, source, tenant)
    else:
        log.info("%s %s: names no tenant; left unowned", kind, object_id)
