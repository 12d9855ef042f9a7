"""The simulator's in-memory world: every object, the request log and counters."""

from __future__ import annotations

import shutil
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request

from tollhouse_simulator.completions import StoredCompletion
from tollhouse_simulator.config import SimulatorConfig
from tollhouse_simulator.containers import DATA_DIR, Container, ContainerFile
from tollhouse_simulator.conversations import Conversation
from tollhouse_simulator.errors import SimulatorError, no_such_file, not_found
from tollhouse_simulator.files import FileRecord
from tollhouse_simulator.inputs import Item
from tollhouse_simulator.lifecycle import Run
from tollhouse_simulator.ratelimit import RateLimiter
from tollhouse_simulator.responses import ResponseRun
from tollhouse_simulator.search import Document, Hit, search
from tollhouse_simulator.store import Table, new_id
from tollhouse_simulator.uploads import UploadRecord
from tollhouse_simulator.vector_stores import VectorStore, VectorStoreFile


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it reached the simulator; header names are lower-case."""

    method: str
    path: str
    query: str
    headers: dict[str, str]


class Simulator:
    """Everything one simulator app knows. Tests may read it; requests change it."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.requests: deque[RecordedRequest] = deque(maxlen=config.request_log_size)
        self.counters: Counter[str] = Counter()
        self.limiter = RateLimiter(config.rate_limits or {}, config.organization)
        self.assistants: Table[dict[str, Any]] = Table()
        self.threads: Table[dict[str, Any]] = Table()
        self.messages: dict[str, Table[dict[str, Any]]] = {}
        self.runs: dict[str, Table[Run]] = {}
        self.active_runs: dict[str, Run] = {}
        self.files: Table[FileRecord] = Table()
        self.uploads: Table[UploadRecord] = Table()
        self.vector_stores: Table[VectorStore] = Table()
        self.responses: Table[ResponseRun] = Table()
        self.items: dict[str, Item] = {}  # every Responses-era item by id, for item_reference
        self.conversations: Table[Conversation] = Table()
        self.containers: Table[Container] = Table()
        self.chat_completions: Table[StoredCompletion] = Table()
        self.prompt_prefixes: set[str] = set()  # chat prompts seen, for cached tokens
        self.chat_log: list[tuple[int, str, dict[str, Any]]] = []  # (created, model, usage)
        self.storage_dir: Path | None = config.storage_dir

    def now(self) -> float:
        return self.config.clock()

    def record(self, request: RecordedRequest, request_class: str) -> None:
        self.requests.append(request)
        self.counters["requests"] += 1
        self.counters[f"class:{request_class}"] += 1

    def storage(self) -> Path:
        if self.storage_dir is None:
            raise SimulatorError(
                500,
                "The simulator has no file storage; serve the app with its lifespan enabled.",
                type="server_error",
            )
        return self.storage_dir

    # -- lookups that answer 404 ---------------------------------------------------------

    def assistant(self, assistant_id: str) -> dict[str, Any]:
        found = self.assistants.get(assistant_id)
        if found is None:
            raise not_found("assistant", assistant_id)
        return found

    def thread(self, thread_id: str) -> dict[str, Any]:
        found = self.threads.get(thread_id)
        if found is None:
            raise not_found("thread", thread_id)
        return found

    def thread_messages(self, thread_id: str) -> Table[dict[str, Any]]:
        self.thread(thread_id)
        return self.messages[thread_id]

    def thread_runs(self, thread_id: str) -> Table[Run]:
        self.thread(thread_id)
        return self.runs[thread_id]

    def run(self, thread_id: str, run_id: str) -> Run:
        found = self.thread_runs(thread_id).get(run_id)
        if found is None:
            raise not_found("run", run_id)
        return found

    def file(self, file_id: str, now: float) -> FileRecord:
        found = self.files.get(file_id)
        if found is None or found.expired(now):
            raise no_such_file(file_id)
        return found

    def vector_store(self, vector_store_id: str) -> VectorStore:
        found = self.vector_stores.get(vector_store_id)
        if found is None:
            raise not_found("vector store", vector_store_id)
        return found

    def response(self, response_id: str) -> ResponseRun:
        """A stored response, brought up to the current clock."""
        found = self.responses.get(response_id)
        if found is None:
            raise not_found("response", response_id)
        found.advance(self.now())
        return found

    def conversation(self, conversation_id: str) -> Conversation:
        found = self.conversations.get(conversation_id)
        if found is None:
            raise not_found("conversation", conversation_id)
        return found

    def container(self, container_id: str) -> Container:
        found = self.containers.get(container_id)
        if found is None:
            raise not_found("container", container_id)
        return found

    def chat_completion(self, completion_id: str) -> StoredCompletion:
        found = self.chat_completions.get(completion_id)
        if found is None:
            raise not_found("chat completion", completion_id)
        return found

    # -- behaviour shared by several endpoints -------------------------------------------

    def advance_thread(self, thread_id: str, now: float) -> None:
        """Brings the thread's active run up to ``now`` (see lifecycle)."""
        run = self.active_runs.get(thread_id)
        if run is None:
            return
        run.advance(now)
        if not run.live:
            del self.active_runs[thread_id]

    def add_thread(self, thread: dict[str, Any]) -> None:
        self.threads.insert(thread["id"], thread["created_at"], thread)
        self.messages[thread["id"]] = Table()
        self.runs[thread["id"]] = Table()

    def remove_thread(self, thread_id: str) -> None:
        self.threads.remove(thread_id)
        self.messages.pop(thread_id, None)
        self.runs.pop(thread_id, None)
        self.active_runs.pop(thread_id, None)

    def create_vector_store(
        self,
        now: float,
        *,
        name: str = "",
        file_ids: list[str] | None = None,
        metadata: dict[str, str] | None = None,
        expires_after: dict[str, Any] | None = None,
        chunking_strategy: dict[str, Any] | None = None,
    ) -> VectorStore:
        records = [self.file(file_id, now) for file_id in file_ids or []]
        store = VectorStore(
            id=new_id("vs_"),
            created_at=int(now),
            name=name,
            metadata=metadata or {},
            expires_after=expires_after,
            last_active_at=int(now),
        )
        self.vector_stores.insert(store.id, store.created_at, store)
        for record in records:
            self.attach(store, record, now, chunking_strategy=chunking_strategy)
        return store

    def attach(
        self,
        store: VectorStore,
        record: FileRecord,
        now: float,
        *,
        attributes: dict[str, Any] | None = None,
        chunking_strategy: dict[str, Any] | None = None,
        batch_id: str | None = None,
    ) -> VectorStoreFile:
        return store.attach(
            record.id,
            record.bytes,
            now,
            processing_seconds=self.config.file_processing_seconds,
            attributes=attributes,
            chunking_strategy=chunking_strategy,
            batch_id=batch_id,
        )

    def search(
        self,
        vector_store_ids: list[str],
        queries: list[str],
        max_results: int,
        score_threshold: float,
        filters: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """Searches the completed files of the given stores; each searched store is used."""
        now = self.now()
        documents = []
        for store_id in vector_store_ids:
            store = self.vector_stores.get(store_id)
            if store is None:
                continue
            store.touch(now)
            for attached in store.files:
                record = self.files.get(attached.file_id)
                if record is None or attached.status(now) != "completed":
                    continue
                text = record.text()
                if text is not None:
                    documents.append(
                        Document(attached.file_id, record.filename, text, attached.attributes)
                    )
        return search(
            documents,
            queries,
            max_results=max_results,
            score_threshold=score_threshold,
            filters=filters,
        )

    def create_container(
        self,
        now: float,
        *,
        name: str,
        memory_limit: str,
        idle_minutes: int,
        network_policy: dict[str, Any] | None = None,
        file_ids: list[str] | None = None,
    ) -> Container:
        records = [self.file(file_id, now) for file_id in file_ids or []]
        container = Container(
            id=new_id("cntr_"),
            name=name,
            created_at=int(now),
            last_active_at=int(now),
            idle_minutes=idle_minutes,
            memory_limit=memory_limit,
            network_policy=network_policy,
        )
        self.containers.insert(container.id, container.created_at, container)
        for record in records:
            file_id = new_id("cfile_")
            shutil.copyfile(record.path, self.container_path(container, file_id))
            self.add_container_file(container, file_id, record.bytes, record.filename, now)
        return container

    def container_path(self, container: Container, file_id: str) -> Path:
        directory = self.storage() / "containers" / container.id
        directory.mkdir(parents=True, exist_ok=True)
        return directory / file_id

    def add_container_file(
        self,
        container: Container,
        file_id: str,
        size: int,
        filename: str,
        now: float,
        source: str = "user",
    ) -> ContainerFile:
        """Records a file whose bytes are already at ``container_path``."""
        added = ContainerFile(
            id=file_id,
            container_id=container.id,
            created_at=int(now),
            bytes=size,
            path=f"{DATA_DIR}/{filename}",
            source=source,
            disk=self.container_path(container, file_id),
        )
        container.touch(now)
        return container.files.insert(file_id, int(now), added)

    def remove_container(self, container: Container) -> None:
        self.containers.remove(container.id)
        directory = self.storage() / "containers" / container.id
        if directory.exists():
            shutil.rmtree(directory)


def simulator_of(request: Request) -> Simulator:
    simulator = request.app.state.simulator
    assert isinstance(simulator, Simulator)
    return simulator
