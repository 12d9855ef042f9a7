"""Real services for tests (Redis now; PostgreSQL, Prometheus later).

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
