"""How ``up``, the benchmarks and the end-to-end tests start a service: its environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli.processes import MALLOC_TUNING, ServiceProcess


def test_a_service_starts_with_the_malloc_tuning_its_port_and_the_callers_environment():
    child = ServiceProcess("notifier", {"LOG_LEVEL": "debug"}, 7003, Path("notifier.log"))
    assert child.env == {**MALLOC_TUNING, "LOG_LEVEL": "debug", "WEB_PORT": "7003"}
    assert child.url == "http://127.0.0.1:7003"
    audit = ServiceProcess("audit", {}, 8081, Path("audit.log"))
    assert audit.env["AUDIT_API_PORT"] == "8081" and "WEB_PORT" not in audit.env


def test_the_callers_environment_overrides_the_malloc_tuning():
    key = next(iter(MALLOC_TUNING))
    child = ServiceProcess("payments", {key: "65536"}, 7000, Path("payments.log"))
    assert child.env[key] == "65536"


def test_an_unknown_service_is_refused():
    with pytest.raises(ValueError, match="unknown service 'ledger'"):
        ServiceProcess("ledger", {}, 7000, Path("ledger.log"))
