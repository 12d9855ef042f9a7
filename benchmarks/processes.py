"""The processes under test: the fast upstream and the real ``tollhouse serve``, each pinned."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

import psutil

UPSTREAM_SCRIPT = Path(__file__).with_name("upstream.py")
REFERENCE_SCRIPT = Path(__file__).with_name("reference.py")
MB = 1024 * 1024


class StartError(Exception):
    """A process under test did not come up."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned_to(cpu: int) -> Callable[[], None]:
    """A ``preexec_fn`` that pins the child (and every thread it starts) to one CPU."""
    return lambda: os.sched_setaffinity(0, {cpu})


def tollhouse_command() -> list[str]:
    """The installed ``tollhouse`` script of this interpreter, else the one on PATH."""
    beside = Path(sys.executable).with_name("tollhouse")
    found = str(beside) if beside.exists() else shutil.which("tollhouse")
    if found is not None:
        return [found]
    return [sys.executable, "-c", "from tollhouse.cli import main; main()"]


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class PortProcess:
    """A benchmark script in a child process, pinned to a CPU; it reports its own port."""

    def __init__(self, command: list[str], cpu: int, log: IO[bytes], what: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *command],
            stdout=subprocess.PIPE,
            stderr=log,
            preexec_fn=pinned_to(cpu),  # safe: no threads exist yet
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise StartError(f"{what} did not start (exit code {self.process.poll()})")
        self.port = int(line)
        self.ps = psutil.Process(self.process.pid)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.ps)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


class Upstream(PortProcess):
    """``benchmarks/upstream.py``: the fast stand-in for the upstream API."""

    def __init__(self, cpu: int, download_bytes: int, log: IO[bytes]) -> None:
        command = [str(UPSTREAM_SCRIPT), "--download-bytes", str(download_bytes)]
        super().__init__(command, cpu, log, "the upstream")


class Reference(PortProcess):
    """``benchmarks/reference.py``: the bare Starlette + aiohttp proxy, for comparison."""

    def __init__(self, cpu: int, upstream_url: str, log: IO[bytes]) -> None:
        super().__init__(
            [str(REFERENCE_SCRIPT), f"--upstream={upstream_url}"], cpu, log, "the reference proxy"
        )


class Tollhouse:
    """``tollhouse serve`` in a child process, ready once its ``/readyz`` says so.

    It runs in the scratch directory that holds its log, so that whatever it
    writes beside itself goes away with the benchmark.
    """

    def __init__(self, cpu: int, upstream_url: str, policy: Path, log_path: Path) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.log_path = log_path
        command = [
            *tollhouse_command(),
            "serve",
            f"--upstream={upstream_url}/v1",
            f"--port={self.port}",
            f"--admin-port={self.admin_port}",
        ]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TOLLHOUSE_POLICY_FILE": str(policy.resolve())},
                cwd=log_path.parent,  # whatever tollhouse writes beside itself stays there
                preexec_fn=pinned_to(cpu),  # safe: no threads exist yet
            )
        self.ps = psutil.Process(self.process.pid)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Seconds until ``/readyz`` answered 200."""
        started = time.monotonic()
        readyz = f"http://127.0.0.1:{self.admin_port}/readyz"
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise StartError(
                    f"tollhouse exited with {self.process.returncode}:\n{tail(self.log_path)}"
                )
            try:
                with urllib.request.urlopen(readyz, timeout=1) as answer:
                    if answer.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, ConnectionError):
                pass  # not listening yet, or 503 while starting
            time.sleep(0.05)
        raise StartError(f"tollhouse was not ready after {timeout:.0f} s:\n{tail(self.log_path)}")

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss) / MB

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.ps)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGINT, as a terminal would send; returns the exit code, None if it had to be killed."""
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


class RssSampler:
    """Samples a process's resident memory from a thread; keeps the peak."""

    def __init__(self, tollhouse: Tollhouse, interval: float = 0.01) -> None:
        self._tollhouse = tollhouse
        self._interval = interval
        self._stop = threading.Event()
        self.peak_mb = tollhouse.rss_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.peak_mb = max(self.peak_mb, self._tollhouse.rss_mb())
            except psutil.NoSuchProcess:
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


class CpuMeter:
    """CPU used by processes outside the benchmark, which makes its numbers noisy.

    Machine-wide busy time (user, nice, system, interrupts) minus that of this process, its
    waited-for children (wrk) and the long-running ones under test.
    """

    def __init__(self, *processes: psutil.Process) -> None:
        self._processes = processes
        self.waited = 0.0  # seconds spent in settle(), in all

    def mark(self) -> tuple[float, float]:
        machine = psutil.cpu_times()
        # Processes are charged for the interrupt work their sockets cause: count it as busy.
        busy = machine.user + machine.nice + machine.system + machine.irq + machine.softirq
        ours = sum(_cpu_seconds(process) for process in self._processes)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            ours += usage.ru_utime + usage.ru_stime
        return time.monotonic(), busy - ours

    def settle(self, max_wait: float, quiet: float = 0.10, window: float = 0.5) -> float:
        """Wait, up to ``max_wait`` s, for others to use less than ``quiet`` of a core.

        Returns the seconds waited; the caller measures anyway once they have passed.
        """
        started = time.monotonic()
        while time.monotonic() - started < max_wait:
            mark = self.mark()
            time.sleep(window)
            if self.background(mark) < quiet:
                break
        waited = time.monotonic() - started
        self.waited += waited
        return waited

    def background(self, since: tuple[float, float]) -> float:
        """Cores' worth of CPU (0.25: a quarter of one core) used by others since ``since``."""
        now, others = self.mark()
        return max(0.0, (others - since[1]) / (now - since[0]))
