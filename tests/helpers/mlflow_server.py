"""An `mlflow server` for tests: backed by a PostgreSQL database, artifacts proxied by the
server into a folder of the temp dir, on 127.0.0.1 and a free port.

    with MlflowServer(backend_uri) as server:
        server.uri                  # http://127.0.0.1:<port>

It runs in its own process group (gunicorn/uvicorn workers included) and the whole group is
stopped on exit. `MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`: without it the server also starts
a job runner with 7 consumers (about 1.6 GB) that the tests do not use.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.helpers.postgres import free_port
from tests.helpers.subprocess_env import child_env


class MlflowServer:
    def __init__(self, backend_uri: str, port: int | None = None) -> None:
        self.backend_uri = backend_uri
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="grpo-mlflow-"))
        self.log = self.root / "server.log"
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> MlflowServer:
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.backend_uri,
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        env = child_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root, start_new_session=True
            )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"mlflow server not up after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                pgid = os.getpgid(self.proc.pid)
                os.killpg(pgid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(pgid, signal.SIGKILL)
                    self.proc.wait(timeout=15)
                try:  # workers that outlived their master
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> MlflowServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
