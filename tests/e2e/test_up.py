"""``refund-ledger up`` as a new user runs it: its own broker and database, every
service, the audit API; a payment from a plain Kafka client shows up in the
API; Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from services.cli.processes import ServiceProcess
from services.cli.stack import WEB_PORT_OFFSETS
from services.kit.embedded import free_port
from tests.conftest import TEST_SECRET
from tests.e2e.harness import produce, wait_for
from tests.factories import cloudevent, payment

pytestmark = pytest.mark.e2e


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie has exited; only its parent has not collected it yet
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().split(") ", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == pid:
                found |= {int(entry.name), *descendants(int(entry.name))}
    return found


def test_up_serves_a_payment_from_any_kafka_client_and_ctrl_c_stops_everything():
    # up serves each service's metrics on WEB_PORT + its offset: all of them must be free
    kafka_port, web_port, api_port = free_port(), free_port(span=len(WEB_PORT_OFFSETS)), free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="up-test-"))
    env = {key: value for key, value in os.environ.items()
           if key not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "TOPIC_PREFIX"}}
    env.update(EMBEDDED_KAFKA_PORT=str(kafka_port), WEB_PORT=str(web_port), AUDIT_API_PORT=str(api_port),
               AUDIT_API_SECRET=TEST_SECRET, DATA_DIR=str(log_dir / "run"))
    out = (log_dir / "up.out").open("wb")
    up = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--no-demo"], env=env,
                          stdout=out, stderr=subprocess.STDOUT)
    children: set[int] = set()
    try:
        def banner_or_exit() -> str | None:
            text = (log_dir / "up.out").read_text()
            assert up.poll() is None, f"refund-ledger up exited with {up.returncode}:\n{text[-3000:]}"
            return text if "is up" in text else None

        banner = wait_for(banner_or_exit, 120, "the banner of refund-ledger up")
        children = descendants(up.pid)
        assert len(children) >= 7, f"broker, database and five services: {children}"
        assert f"127.0.0.1:{kafka_port}" in banner and f"http://127.0.0.1:{api_port}" in banner
        token = re.search(r"export TOKEN=(\S+)", banner).group(1)

        payment_id = f"UP-{uuid.uuid4().hex[:8]}"
        produce(f"127.0.0.1:{kafka_port}", [
            ("payments", b"1055555559", cloudevent("payment.recorded",
                                                   payment(payment_id, beneficiary_id="1055555559")))])
        audit = ServiceProcess("audit", {}, api_port, log_dir / "unused.log")
        body = wait_for(lambda: (r := audit.get(f"/api/v1/payments/{payment_id}", token))[0] == 200 and r[1],
                        30, "the payment in the audit API")
        assert (body["amount"], body["channel"]) == (30000, "SADAD_ONLINE")
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        finally:
            if up.poll() is None:
                up.kill()
            out.close()
    assert up.returncode == 0, (log_dir / "up.out").read_text()[-3000:]
    assert "stopped everything it started" in (log_dir / "up.out").read_text()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in children):
        time.sleep(0.1)
    assert not [p for p in children if pid_alive(p)], "every child process ended"
