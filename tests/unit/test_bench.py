"""The benchmark harness's pure parts: percentiles, result files, the README table,
profile summaries. No servers, no timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone

import psutil
import pytest

from bench.common import describe, percentile, ratio, summarise, top_frames, tree_cpu_seconds, write_result
from bench.ingest import cpu_budget, memory_result
from bench.readme import END, START, load_results, render, replace_between_markers, update_readme


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 25) == 2.0
    assert percentile([1.0, 2.0], 50) == pytest.approx(1.5)
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarise_reports_milliseconds() -> None:
    summary = summarise([0.001, 0.002, 0.003, 0.004])
    assert summary == {"n": 4, "p50": 2.5, "p90": 3.7, "p99": 3.97, "max": 4.0, "mean": 2.5}
    assert summarise([])["p99"] is None


def test_cpu_budget_sums_every_process_and_the_rate_the_cores_allow() -> None:
    services = {"payments": {"cpu_seconds": 60.0, "cpu_ms_per_partner_event": 0.6},
                "audit": {"cpu_seconds": 40.0, "cpu_ms_per_partner_event": 0.4}}
    infrastructure = {"postgres": {"cpu_seconds": 90.0, "cpu_ms_per_partner_event": 0.9},
                      "tansu": {"cpu_seconds": 10.0, "cpu_ms_per_partner_event": 0.1}}

    budget = cpu_budget(services, infrastructure, seconds=100.0, cores=2)

    assert budget["ms_per_partner_event"] == {"services": 1.0, "infrastructure": 1.0, "total": 2.0}
    assert budget["cores_busy"] == 2.0  # 200 CPU seconds in 100 s
    assert budget["events_per_s_at_full_use"] == 1000.0  # 2 cores / 2 ms


def test_tree_cpu_counts_a_process_its_live_children_and_its_ended_ones(tmp_path) -> None:
    ready = tmp_path / "ready"
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    live = burn + f"open({str(ready)!r}, 'w').close()\ntime.sleep(60)\n"
    parent = (burn + "import subprocess, sys\n"
              f"subprocess.run([sys.executable, '-c', {burn!r}])\n"  # ended and reaped: in children_*
              f"subprocess.Popen([sys.executable, '-c', {live!r}]).wait()\n")
    proc = subprocess.Popen([sys.executable, "-c", parent])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "the live child never finished its work"
        assert tree_cpu_seconds(proc.pid) >= 0.9  # 0.3 s of CPU each: parent, ended child, live child
        assert tree_cpu_seconds(None) == 0.0
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait(5)


def test_ratio_is_none_without_both_numbers() -> None:
    assert ratio(50, 200) == 0.25
    assert ratio(None, 200) is None
    assert ratio(50, 0) is None


def test_write_result_records_date_mode_and_machine(tmp_path) -> None:
    machine = {"cores": 2, "ram_gb": 8.0, "python": "3.11.7", "git": {"commit": "abc", "dirty": False}}
    at = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
    quick = write_result("ingest", {"met": False}, quick=True, machine=machine, results_dir=tmp_path, now=at)
    full = write_result("ingest", {"met": True}, quick=False, machine=machine, results_dir=tmp_path, now=at)
    assert quick.name == "ingest-quick.json" and full.name == "ingest.json"
    sized = write_result("memory", {"met": True}, quick=False, machine=machine, results_dir=tmp_path, now=at,
                         variant="1000000-events")
    assert sized.name == "memory-1000000-events.json" and json.loads(full.read_text())["met"] is True
    document = json.loads(full.read_text())
    assert document["mode"] == "full" and document["date"] == "2026-11-25T12:00:00+00:00"
    assert document["machine"]["cores"] == 2 and document["met"] is True


def _results(tmp_path, mode: str = "full") -> None:
    machine = {"cores": 2, "ram_gb": 23.5, "cpu": "AMD EPYC", "python": "3.11.7", "load_avg_at_start": [1.0],
               "git": {"commit": "0123456789abcdef", "dirty": False}}
    at = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
    quick = mode == "quick"
    write_result("ingest", {
        "events": 200000, "ratio": 0.25, "met": False, "gap": "pipeline at 25% of the raw limit",
        "bottleneck": "payments: Connection.wait 40%",
        "raw": {"events_per_s": 4000.0},
        "pipeline": {"events_per_s": 1000.0,
                     "services": {"payments": {"consumed_per_s": 1200.0, "cpu_ms_per_partner_event": 0.7}},
                     "infrastructure": {"postgres": {"cpu_ms_per_partner_event": 0.9}},
                     "cpu": {"ms_per_partner_event": {"total": 1.6}, "cores": 2, "cores_busy": 1.6,
                             "events_per_s_at_full_use": 1250.0}},
    }, quick=quick, machine=machine, results_dir=tmp_path, now=at)
    write_result("freshness", {
        "rate": 1000.0, "met": True, "ratio_p99": 2.0,
        "raw": {"latency_ms": {"p50": 50.0, "p99": 100.0}},
        "pipeline": {"latency_ms": {"p50": 120.0, "p99": 200.0}},
        "below_capacity": {"rate": 200.0, "probes": 90, "probes_seen": 90, "latency_ms": {"p50": 80.0, "p99": 150.0}},
    }, quick=quick, machine=machine, results_dir=tmp_path, now=at)
    write_result("queries", {"error": "RuntimeError: audit API not up", "met": False}, quick=quick,
                 machine=machine, results_dir=tmp_path, now=at)


def test_render_shows_numbers_targets_and_gaps(tmp_path) -> None:
    _results(tmp_path)
    table = render(load_results(tmp_path))
    assert "2026-11-25T12:00:00+00:00 (full) on 2 cores, 23.5 GB RAM" in table
    assert "commit `0123456789`" in table
    assert "| Ingest, whole pipeline (200,000 events) | 1,000 events/s | 4,000 events/s | 25% | ≥ 50 % of raw | " \
           "**no**: pipeline at 25% of the raw limit |" in table
    assert "| 120 / 200 ms | 50 / 100 ms | 2.0\u00d7 raw p99 | p99 < 500 ms | yes |" in table
    assert "| Freshness at 200 events/s, below capacity (p50 / p99) | 80 / 150 ms |  |  | (no target) | " \
           "90 of 90 probes seen |" in table
    assert "| CPU per partner event, every process (ms) | 1.60 ms: payments 0.70, postgres 0.90; " \
           "1.6 of 2 cores busy: at most 1,250 events/s |" in table
    assert "not run: RuntimeError: audit API not up" in table
    assert "- **ingest**: payments: Connection.wait 40%" in table
    assert "(quick)" not in table


def test_a_benchmark_run_alone_names_the_runs_the_other_rows_come_from(tmp_path) -> None:
    _results(tmp_path)  # ingest, freshness, queries at 12:00, commit 0123456789
    assert "Rows from other runs" not in render(load_results(tmp_path))
    later = {"cores": 2, "ram_gb": 23.5, "cpu": "AMD EPYC", "python": "3.11.7", "load_avg_at_start": [0.5],
             "git": {"commit": "fedcba9876543210", "dirty": False}}
    write_result("queries", {"error": "RuntimeError: audit API not up", "met": False}, quick=False,
                 machine=later, results_dir=tmp_path, now=datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc))

    header = render(load_results(tmp_path)).splitlines()[0]
    assert header.startswith("Latest run: 2026-11-27T09:00:00+00:00 (full)") and "commit `fedcba9876`" in header
    assert header.endswith("Rows from other runs: freshness 2026-11-25T12:00:00+00:00 (`0123456789`), "
                           "ingest 2026-11-25T12:00:00+00:00 (`0123456789`).")


def test_quick_results_are_used_only_without_full_ones(tmp_path) -> None:
    _results(tmp_path, mode="quick")
    assert "*(quick)*" in render(load_results(tmp_path))
    _results(tmp_path, mode="full")
    assert "*(quick)*" not in render(load_results(tmp_path))


def test_update_readme_rewrites_only_between_markers(tmp_path) -> None:
    _results(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n## Performance\n{START}\nold table\n{END}\n\n## After\ntext\n", encoding="utf-8")
    assert update_readme(readme, tmp_path) is True
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# title\n\n## Performance\n" + START + "\n")
    assert "old table" not in text and "1,000 events/s" in text
    assert text.endswith(END + "\n\n## After\ntext\n")
    assert update_readme(readme, tmp_path) is False  # idempotent
    with pytest.raises(ValueError):
        replace_between_markers("no markers here", "body")


def test_top_frames_and_describe_from_collapsed_stacks() -> None:
    stem = "_bootstrap (/usr/lib/python3.11/threading.py:1);apply (/x/services/kit/ingress.py:10)"
    collapsed = (f"{stem};get (/x/services/kit/ingress.py:50);wait (/x/.venv/lib/python3.11/site-packages/"
                 "psycopg/connection.py:5) 6\n"
                 f"{stem};parse (/x/services/kit/envelope.py:7) 3\n"
                 "_run_once (/usr/lib/python3.11/asyncio/base_events.py:9);"
                 "select (/usr/lib/python3.11/selectors.py:4) 1\n")
    found = top_frames(collapsed)
    assert found["samples"] == 10
    assert found["top_own"][0] == {"frame": "wait (psycopg/connection.py)", "share": 0.6}
    assert {"frame": "apply (services/kit/ingress.py)", "share": 0.9} in found["top_total"]
    assert found["own_by_package"] == {"psycopg": 0.6, "services": 0.3, "event loop (idle or I/O)": 0.1}
    line = describe({"payments": found, "visas": {"error": "no ptrace"}})
    assert line == ("payments: apply 90%, get 60%, parse 30% "
                    "(own time: psycopg 60%, services 30%, event loop (idle or I/O) 10%)")


def test_memory_is_flat_within_ten_percent() -> None:
    mb = 2**20
    marks = [(0, {"payments": 90 * mb}), (100, {"payments": 100 * mb, "audit": 200 * mb}),
             (500, {"payments": 104 * mb, "audit": 260 * mb})]
    result = memory_result(marks, 1000, {"payments": 108 * mb, "audit": 250 * mb})
    assert result["services"]["payments"] == {"rss_mb_at_10pct": 100.0, "rss_mb_at_end": 108.0, "rss_mb_peak": 108.0,
                                              "growth": 0.08, "flat": True,
                                              "rss_mb_by_tenth": [100.0, 104.0, 104.0, 104.0, 104.0,
                                                                  None, None, None, None, 108.0]}
    assert result["services"]["audit"]["growth"] == 0.25 and result["services"]["audit"]["flat"] is False
    assert result["gap"] == "RSS moved more than ±10 % from 10 % of the run to its end: audit +25%"
    assert result["met"] is False
