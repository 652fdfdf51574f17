"""The Prometheus alert rules in deploy/prometheus: ``promtool check rules`` and ``promtool test
rules`` (Debian's ``prometheus`` package provides promtool), and what promtool cannot see: every
alert has a severity and a runbook, fires in at least one unit test and stays quiet in another,
reads only metrics the services export, and the PrometheusRule in the kustomize base is the same
rules.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_dashboard import known_series, metric_names

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus"
ALERTS = RULES_DIR / "alerts.yaml"
ALERT_TESTS = RULES_DIR / "alerts.test.yaml"
PROMETHEUS_RULE = ROOT / "deploy" / "k8s" / "base" / "prometheusrule.yaml"
SYNC_SCRIPT = ROOT / "deploy" / "sync_k8s.py"
SEVERITIES = {"critical", "warning"}
#: The situations the ops issue asks an alert for, each with the alert that covers it.
REQUIRED_ALERTS = {
    "consumer lag growing": "RefundLedgerConsumerLagGrowing",
    "outbox backlog growing": "RefundLedgerOutboxBacklogGrowing",
    "rejection rate spike": "RefundLedgerRejectionRateSpike",
    "overdue refunds above threshold per agency": "RefundLedgerOverdueRefundsHigh",
    "notifier channel failing": "RefundLedgerNotificationChannelFailing",
    "a service not ready": "RefundLedgerNotReady",
    "a service down": "RefundLedgerTargetDown",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed: `apt-get install -y --no-install-recommends prometheus` "
                    "(Debian's package provides it); the rule checks and rule unit tests did not run")
    return path


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules_accepts_the_rules():
    result = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, f"promtool check rules failed:\n{result.stdout}\n{result.stderr}"
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass():
    result = subprocess.run([promtool(), "test", "rules", ALERT_TESTS.name], cwd=RULES_DIR, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, f"promtool test rules failed:\n{result.stdout}\n{result.stderr}"
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_has_a_severity_summary_description_and_runbook():
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "two alerts with one name"
    for rule in rules:
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity not in {SEVERITIES}"
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            assert annotations.get(key, "").strip(), f"{name} has no {key} annotation"
        runbook = annotations["runbook"]
        assert len(runbook) >= 150, f"{name}: the runbook should say what to check and what to do"
        assert "check" in runbook.lower(), f"{name}: the runbook says nothing to check"
        assert rule.get("for"), f"{name}: no `for`: one bad scrape would page"


def test_the_alerts_the_ops_issue_asks_for_exist():
    names = {rule["alert"] for rule in alert_rules()}
    missing = {why: name for why, name in REQUIRED_ALERTS.items() if name not in names}
    assert not missing, missing


def test_every_alert_fires_in_a_unit_test_and_stays_quiet_in_another():
    suite = yaml.safe_load(ALERT_TESTS.read_text())
    assert suite["rule_files"] == [ALERTS.name]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in suite["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert (fires | quiet) <= names, f"tests of alerts that do not exist: {(fires | quiet) - names}"
    assert names <= fires, f"alerts no test shows firing: {sorted(names - fires)}"
    assert names <= quiet, f"alerts no test shows staying quiet: {sorted(names - quiet)}"


def test_every_firing_case_checks_the_runbook_text():
    """promtool compares annotations exactly: a firing case without them would fail, and with them
    the rendered runbook (templates included) is part of what the tests prove."""
    suite = yaml.safe_load(ALERT_TESTS.read_text())
    for case in suite["tests"]:
        for check in case.get("alert_rule_test", []):
            for expected in check.get("exp_alerts") or []:
                assert expected.get("exp_annotations", {}).get("runbook"), \
                    f"{case['name']}: {check['alertname']} at {check['eval_time']} checks no runbook"


def test_the_rules_read_only_metrics_the_services_export():
    known = known_series()
    for rule in alert_rules():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule['alert']}: unknown metrics {sorted(unknown)}"


def test_the_prometheus_rule_in_the_kustomize_base_holds_the_same_rules():
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"], \
        "deploy/k8s/base/prometheusrule.yaml is stale: run `.venv/bin/python deploy/sync_k8s.py`"
    spec = importlib.util.spec_from_file_location("sync_k8s", SYNC_SCRIPT)
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    assert sync.main(["--check"]) == 0, "deploy/sync_k8s.py --check: a generated copy is out of date"
