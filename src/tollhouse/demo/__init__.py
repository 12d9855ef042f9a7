"""``tollhouse demo``: the simulator upstream, tollhouse in front, four tenants' traffic.

Everything runs in one process on loopback: the newcomer's first look at what
tollhouse sees and does.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tollhouse.app import QuietServer, Tollhouse, listen, serve, server_config
from tollhouse.cleanup.summary import render as render_sweep
from tollhouse.config.policy import Policy, parse_policy
from tollhouse.config.settings import Settings
from tollhouse.demo import traffic
from tollhouse.demo.report import render
from tollhouse.report.build import build_report
from tollhouse.report.render import render_table
from tollhouse_simulator import SimulatorConfig, create_app

DEMO_POLICY = {
    "identify": {"mode": "header", "header": traffic.TENANT_HEADER},
    "tenants": {
        "acme": {"limits": {"RUN_CREATE": {"requests_per_unit": 60, "burst": 20}}},
        "globex": {"limits": {"RUN_CREATE": {"requests_per_unit": 60, "burst": 20}}},
        "initech": {"limits": {"GET": {"requests_per_unit": 120, "burst": 40}}},
        "umbrella": {"limits": {"RESPONSE_CREATE": {"requests_per_unit": 60, "burst": 20}}},
    },
    "shaping": {"POST": {"max_wait": 2.0}},
}
Print = Callable[[str], None]
IDLE_TENANT, IDLE_DAYS = "acme", 31


def demo_policy() -> Policy:
    return parse_policy(DEMO_POLICY, "the demo policy")


async def scenario(base_url: str, out: Print) -> None:
    def say(tenant: str, text: str) -> None:
        out(f"  [{tenant:<7}] {text}")

    acme_assistant, *_ = await asyncio.gather(
        traffic.analyst(base_url, say),
        traffic.support_bot(base_url, say),
        traffic.noisy_poller(base_url, say),
        traffic.researcher(base_url, say),
    )
    await traffic.curious_neighbour(base_url, say, acme_assistant)


async def run_demo(
    port: int = 8080, admin_port: int = 9464, duration: float | None = None, out: Print = print
) -> None:
    started = time.monotonic()
    started_at = datetime.now(UTC)
    upstream_socket = listen("127.0.0.1", 0)
    upstream_port = upstream_socket.getsockname()[1]
    simulator = QuietServer(server_config(create_app(SimulatorConfig()), lifespan="on"))
    simulator_task = asyncio.create_task(simulator.serve([upstream_socket]))

    state = tempfile.TemporaryDirectory(prefix="tollhouse-demo-")
    settings = Settings(
        upstream_url=f"http://127.0.0.1:{upstream_port}/v1",
        port=port,
        admin_port=admin_port,
        upstream_api_key="sk-demo",
        database_url=f"sqlite:///{state.name}/ledger.db",
        spool_path=Path(state.name) / "ledger.spool",
    )
    tollhouse = Tollhouse(settings, policy=demo_policy())
    proxy_socket = listen(settings.host, settings.port)
    admin_socket = listen(settings.admin_host, settings.admin_port)
    proxy_url = f"http://127.0.0.1:{proxy_socket.getsockname()[1]}/v1"
    admin_url = f"http://127.0.0.1:{admin_socket.getsockname()[1]}"
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(tollhouse, proxy_socket, admin_socket, stop))

    out("tollhouse demo")
    out(f"  upstream (Assistants simulator)  {settings.upstream_url}")
    out(f"  tollhouse proxy                  {proxy_url}   <- point OPENAI_BASE_URL here")
    out(f"  metrics, health                  {admin_url}/metrics  {admin_url}/readyz")
    out(f"  costs and buckets, in a browser  {admin_url}/")
    out("")
    out("Traffic from four tenants through the real openai client (acme, globex and initech on")
    out("the Assistants API, umbrella on Responses):")
    work = asyncio.create_task(scenario(proxy_url, out))
    try:
        done, _ = await asyncio.wait({serving, work}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            work.result()
            out("")
            out("What tollhouse saw (requests by tenant, class and outcome):")
            out(render(tollhouse.registry))
            out("")
            out("What each tenant cost (tollhouse report, from the ledger):")
            out(await cost_report(tollhouse, started_at))
            out("")
            out(f"If {IDLE_TENANT} went idle for {IDLE_DAYS} days (tollhouse cleanup, dry run):")
            for line in await idle_sweep(tollhouse):
                out("  " + line)
            out("")
            if duration is None:
                out(f"The admin page stays up at {admin_url}/ (metrics: /metrics); Ctrl-C to stop.")
            else:
                remaining = max(0.0, duration - (time.monotonic() - started))
                await asyncio.wait({serving}, timeout=remaining)
    finally:
        work.cancel()
        stop.set()
        await asyncio.gather(work, serving, return_exceptions=True)
        simulator.should_exit = True
        await simulator_task
        state.cleanup()


async def idle_sweep(tollhouse: Tollhouse) -> list[str]:
    """A dry-run sweep as of IDLE_DAYS from now: what the cleaner would delete and save."""
    if tollhouse.cleaner is None:
        return ["(the cleaner needs TOLLHOUSE_UPSTREAM_API_KEY)"]
    report = await tollhouse.cleaner.sweep(
        apply=False, tenants=[IDLE_TENANT], now=time.time() + IDLE_DAYS * 86_400
    )
    return render_sweep(report, tollhouse.pricing)


async def cost_report(tollhouse: Tollhouse, since: datetime) -> str:
    """Sample storage once, write everything to the ledger, and report on it."""
    if tollhouse.collector is not None:
        await tollhouse.collector.sample_storage()
    await tollhouse.writer.flush()
    now = datetime.now(UTC)
    report = await asyncio.to_thread(
        build_report,
        tollhouse.engine,
        tollhouse.pricing,
        since.replace(microsecond=0),
        now + timedelta(seconds=1),
        now,
        pricing_source="the shipped table",
    )
    table = render_table(report).split("\nNotes:")[0].rstrip()
    return table + "\n(the rules behind each column: tollhouse report --help and the README)"
