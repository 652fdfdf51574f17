"""Service processes (``refund-ledger run SERVICE``) as children: started in their
own session with their own log file, probed over HTTP, stopped in order.

Used by ``refund-ledger up`` and by the end-to-end tests, so both run the
services exactly as an operator would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from services.kit.embedded import spawn

SERVICES = ("payments", "visas", "refunds", "notifier", "audit")

#: glibc malloc settings every service process starts with (glibc reads them at
#: exec; the caller's environment overrides them; the Dockerfile sets the same).
#: Fixed thresholds stop glibc raising its mmap threshold after each large free,
#: which left freed memory in the heap: with them RSS of payments, visas, refunds
#: and audit stayed within 10 % across the memory benchmark (README, Performance).
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "262144"}


class ServiceProcess:
    """One ``refund-ledger run SERVICE`` child process."""

    def __init__(self, service: str, env: Mapping[str, str], port: int, log_path: Path,
                 host: str = "127.0.0.1") -> None:
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
        self.service = service
        self.port = port
        port_key = "AUDIT_API_PORT" if service == "audit" else "WEB_PORT"
        self.env = {**MALLOC_TUNING, **env, port_key: str(port)}
        self.url = f"http://{host}:{port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = spawn([sys.executable, "-m", "services.cli", "run", self.service],
                                 env=dict(self.env), stdout=log, stderr=subprocess.STDOUT)
        return self

    def exited(self) -> int | None:
        """The exit code if the process has ended, else None."""
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def get(self, path: str, token: str | None = None, timeout: float = 5) -> tuple[int, Any]:
        """GET ``path``; the status and the body (JSON decoded when it is JSON)."""
        request = urllib.request.Request(self.url + path)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body, status = response.read(), response.status
        except urllib.error.HTTPError as error:
            body, status = error.read(), error.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    def ready(self) -> bool:
        """True when ``/readyz`` answers 200; raises if the process died."""
        code = self.exited()
        if code is not None:
            raise RuntimeError(f"{self.service} exited with {code}:\n{self.log_tail()}")
        try:
            return self.get("/readyz", timeout=1)[0] == 200
        except OSError:
            return False

    def kill(self) -> None:
        if self.exited() is None and self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self) -> None:
        if self.exited() is None and self.process is not None:
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float) -> None:
        """Wait for the exit after :meth:`terminate`; SIGKILL after ``timeout``."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def stop(self, timeout: float = 30) -> None:
        self.terminate()
        self.wait_stopped(timeout)
