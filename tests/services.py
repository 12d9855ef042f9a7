"""Real services for tests: Redis and PostgreSQL (Prometheus later).

Each is started from its Debian binary on a loopback port in a temporary
directory. On a laptop without the binary the tests that need it skip; with
``CI=true`` a missing service is an error, never a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{binary} is not installed; .ci/run installs it")
        pytest.skip(f"{binary} is not installed (apt-get install it to run this test)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server; yields its URL once it answers PING."""
    binary = require("redis-server")
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:  # redis logs this line once it accepts connections
                if b"Ready to accept connections" in line:
                    break
            else:
                pytest.fail(f"redis-server exited with {process.wait()}")
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)
            if process.stdout is not None:
                process.stdout.close()


def _postgres_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])
    return require(name)


class PostgresCluster:
    """A throwaway PostgreSQL cluster on a loopback port that tests can stop and restart."""

    def __init__(self) -> None:
        self._as_user: list[str] = []
        self.workdir = tempfile.mkdtemp(prefix="tollhouse-pg-")
        if os.geteuid() == 0:  # the server refuses to run as root
            shutil.chown(self.workdir, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.data, self.port = f"{self.workdir}/data", free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.running = False
        subprocess.run(
            [
                *self._as_user,
                _postgres_bin("initdb"),
                "-D",
                self.data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self._as_user, _postgres_bin("pg_ctl"), "-D", self.data, "-w", "-t", "60", *args],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        """Start the server; pg_ctl -w returns once it accepts connections."""
        options = (
            f"-p {self.port} -h 127.0.0.1 -k {self.workdir} -c fsync=off -c full_page_writes=off"
        )
        self._pg_ctl("-l", f"{self.workdir}/server.log", "-o", options, "start")
        self.running = True

    def stop(self) -> None:
        """Fast shutdown: open connections are cut, as when a database host goes away."""
        if self.running:
            self._pg_ctl("-m", "fast", "stop")
            self.running = False

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a loopback port; yields a database URL."""
    with postgres_cluster() as cluster:
        yield cluster.url
