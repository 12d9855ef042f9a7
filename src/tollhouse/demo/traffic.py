"""Sample traffic for the demo: four tenants doing realistic work, one of them noisy.

Every call goes through tollhouse with the real ``openai`` client; each tenant
names itself in the trusted tenant header, as an app next to a sidecar would.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass, field

import openai

TENANT_HEADER = "X-Tollhouse-Tenant"
Say = Callable[[str, str], None]


@dataclass
class TenantLog:
    tenant: str
    refused: int = 0
    retry_after: set[str] = field(default_factory=set)


def client_for(base_url: str, tenant: str, max_retries: int = 2) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="sk-demo",
        base_url=base_url,
        max_retries=max_retries,
        default_headers={TENANT_HEADER: tenant},
    )


async def analyst(base_url: str, say: Say) -> str:
    """acme: Code Interpreter and File Search over an uploaded report, polled and streamed.

    Returns acme's assistant, for a neighbour to try its luck with.
    """
    async with client_for(base_url, "acme") as client:
        report = b"quarterly revenue grew in every region; churn fell to 2%\n" * 2000
        uploaded = await client.files.create(
            file=("q3-report.txt", io.BytesIO(report)), purpose="assistants"
        )
        store = await client.vector_stores.create(name="acme-reports", file_ids=[uploaded.id])
        assistant = await client.beta.assistants.create(
            model="gpt-4o",
            name="acme analyst",
            tools=[{"type": "code_interpreter"}, {"type": "file_search"}],
            tool_resources={"file_search": {"vector_store_ids": [store.id]}},
        )
        say("acme", f"uploaded {uploaded.id} ({len(report):,} bytes) into vector store {store.id}")
        thread = await client.beta.threads.create(
            messages=[{"role": "user", "content": "Chart revenue by region from the report."}]
        )
        run = await client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
        )
        usage = run.usage
        tokens = f"{usage.prompt_tokens} in / {usage.completion_tokens} out" if usage else "-"
        say("acme", f"polled run {run.id}: {run.status}, {tokens} tokens")
        steps = await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
        tools = sorted(
            {
                call.type
                for step in steps.data
                if step.step_details.type == "tool_calls"
                for call in step.step_details.tool_calls
            }
        )
        say("acme", f"run steps used tools: {', '.join(tools)}")
        await client.beta.threads.messages.create(
            thread.id, role="user", content="Now summarise it in one line."
        )
        async with client.beta.threads.runs.stream(
            thread_id=thread.id, assistant_id=assistant.id
        ) as stream:
            events = 0
            async for _ in stream:
                events += 1
            final = await stream.get_final_run()
        say("acme", f"streamed run {final.id}: {events} events, {final.status}")
        stored = await client.vector_stores.retrieve(store.id)
        say("acme", f"vector store {store.id} holds {stored.usage_bytes:,} bytes")
        return assistant.id


async def curious_neighbour(base_url: str, say: Say, theirs: str) -> None:
    """globex looks for acme's assistant: it finds nothing, as if it did not exist."""
    async with client_for(base_url, "globex") as client:
        try:
            await client.beta.assistants.retrieve(theirs)
            say("globex", f"read acme's assistant {theirs}: isolation failed")
        except openai.NotFoundError as exc:
            answer = exc.body.get("message") if isinstance(exc.body, dict) else exc.message
            say("globex", f'asked for acme\'s assistant: {exc.status_code} "{answer}"')
        listed = [a.name async for a in client.beta.assistants.list()]
        say("globex", f"listed assistants: sees only its own ({', '.join(map(str, listed))})")


async def support_bot(base_url: str, say: Say) -> None:
    """globex: a function-calling assistant that needs a tool output to finish."""
    async with client_for(base_url, "globex") as client:
        assistant = await client.beta.assistants.create(
            model="gpt-4o-mini",
            name="globex support",
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": "order_status",
                        "parameters": {
                            "type": "object",
                            "properties": {"order_id": {"type": "string"}},
                        },
                    },
                }
            ],
        )
        for order in ("A-1001", "A-1002", "A-1003"):
            run = await client.beta.threads.create_and_run_poll(
                assistant_id=assistant.id,
                thread={"messages": [{"role": "user", "content": f"Where is order {order}?"}]},
                poll_interval_ms=50,
            )
            if run.status == "requires_action" and run.required_action is not None:
                call = run.required_action.submit_tool_outputs.tool_calls[0]
                run = await client.beta.threads.runs.submit_tool_outputs_and_poll(
                    run_id=run.id,
                    thread_id=run.thread_id,
                    tool_outputs=[{"tool_call_id": call.id, "output": '{"status": "shipped"}'}],
                    poll_interval_ms=50,
                )
            say("globex", f"order {order}: tool call answered, run {run.status}")


async def researcher(base_url: str, say: Say) -> None:
    """umbrella: on the Responses API, with web search, Code Interpreter and a conversation."""
    async with client_for(base_url, "umbrella") as client:
        conversation = await client.conversations.create(metadata={"topic": "pricing"})
        response = await client.responses.create(
            model="gpt-4o",
            conversation=conversation.id,
            input="Find this week's GPU spot prices and chart them.",
            tools=[
                {"type": "web_search"},
                {"type": "code_interpreter", "container": {"type": "auto"}},
            ],
        )
        calls = sorted({item.type for item in response.output if item.type.endswith("_call")})
        usage = response.usage
        tokens = f"{usage.input_tokens} in / {usage.output_tokens} out" if usage else "-"
        say("umbrella", f"response {response.id}: {tokens} tokens, tools: {', '.join(calls)}")
        events = 0
        async with client.responses.stream(
            model="gpt-4o-mini",
            input="Summarise that in one line.",
            previous_response_id=response.id,
        ) as stream:
            async for _ in stream:
                events += 1
            final = await stream.get_final_response()
        say("umbrella", f"streamed response {final.id}: {events} events, {final.status}")


async def noisy_poller(base_url: str, say: Say, polls: int = 300) -> TenantLog:
    """initech: polls a run's status in a tight loop, far above its GET limit."""
    log = TenantLog("initech")
    async with client_for(base_url, "initech", max_retries=0) as client:
        assistant = await client.beta.assistants.create(model="gpt-4o-mini", name="initech bot")
        run = await client.beta.threads.create_and_run(
            assistant_id=assistant.id,
            thread={"messages": [{"role": "user", "content": "Are we there yet?"}]},
        )

        async def poll() -> None:
            try:
                await client.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)
            except openai.RateLimitError as exc:
                log.refused += 1
                log.retry_after.add(exc.response.headers.get("retry-after", "?"))

        await asyncio.gather(*(poll() for _ in range(polls)))
    answered = polls - log.refused
    say(
        "initech",
        f"polled one run {polls} times at once: {answered} answered, {log.refused} refused "
        f"with 429 (retry-after {', '.join(sorted(log.retry_after)) or '-'} s)",
    )
    return log
