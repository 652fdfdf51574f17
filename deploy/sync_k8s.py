"""Copy the sources in deploy/prometheus and deploy/grafana into the kustomize base.

kustomize only reads files inside a kustomization's own directory, so the base keeps two
generated copies:

- deploy/k8s/base/prometheusrule.yaml: a PrometheusRule whose spec.groups are
  deploy/prometheus/alerts.yaml's groups;
- deploy/k8s/base/dashboards/refund-ledger.json: deploy/grafana/refund-ledger.json, byte for byte
  (a ConfigMap generator turns it into the dashboard ConfigMap).

Run ``.venv/bin/python deploy/sync_k8s.py`` after editing either source; the unit tests fail while
a copy differs. ``--check`` only reports (exit 1 when out of date).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
DASHBOARD = DEPLOY / "grafana" / "refund-ledger.json"
RULE_COPY = DEPLOY / "k8s" / "base" / "prometheusrule.yaml"
DASHBOARD_COPY = DEPLOY / "k8s" / "base" / "dashboards" / "refund-ledger.json"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yaml by deploy/sync_k8s.py: edit the source, then run
# `.venv/bin/python deploy/sync_k8s.py`. tests/unit/test_alerts.py fails while they differ.
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the PromQL expressions) as literal blocks, as in alerts.yaml."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def prometheus_rule() -> str:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "refund-ledger",
            "labels": {"app.kubernetes.io/name": "refund-ledger", "app.kubernetes.io/component": "monitoring"},
        },
        "spec": {"groups": groups},
    }
    return HEADER + yaml.dump(rule, Dumper=_Dumper, sort_keys=False, width=110, allow_unicode=True)


def wanted() -> dict[Path, str]:
    return {RULE_COPY: prometheus_rule(), DASHBOARD_COPY: DASHBOARD.read_text()}


def main(argv: list[str]) -> int:
    stale = [path for path, text in wanted().items() if not path.exists() or path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"out of date: {path.relative_to(DEPLOY.parent)}")
        return 1 if stale else 0
    for path, text in wanted().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
