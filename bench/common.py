"""Shared parts of the benchmarks: the embedded stack, service processes, traffic,
percentiles, machine facts and result files.

The pure helpers (:func:`percentile`, :func:`summarise`, :func:`write_result`,
:func:`machine_facts`) are unit-tested; the rest starts real servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
BENCH_SECRET = "bench-only-secret-not-for-production-0123456789abcdef"  # test-only key, not a secret

def _partner_topics() -> tuple[str, ...]:
    """The topics partners write to (the staff decisions come from the audit API, not partners)."""
    from services.kit.topics import INBOUND_TOPICS

    return tuple(t for t in INBOUND_TOPICS if t != "refund-decisions")


PARTNER_TOPICS = _partner_topics()


# --------------------------------------------------------------------------- pure helpers

def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks; None if empty."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarise(values: Sequence[float], scale: float = 1000.0, digits: int = 2) -> dict[str, Any]:
    """Count, p50, p90, p99, max and mean of ``values`` (seconds), shown ×``scale`` (ms by default)."""
    def shown(value: float | None) -> float | None:
        return None if value is None else round(value * scale, digits)

    return {"n": len(values), "p50": shown(percentile(values, 50)), "p90": shown(percentile(values, 90)),
            "p99": shown(percentile(values, 99)), "max": shown(max(values) if values else None),
            "mean": shown(sum(values) / len(values) if values else None)}


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, digits)


def git_commit(root: Path = ROOT) -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {"commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def machine_facts() -> dict[str, Any]:
    """Where the numbers were measured: cores, RAM, CPU, Python, OS, load, git commit."""
    import psutil

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": cpu or platform.processor(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "git": git_commit(),
    }


def write_result(name: str, result: dict[str, Any], *, quick: bool, machine: dict[str, Any],
                 results_dir: Path = RESULTS_DIR, now: datetime | None = None, variant: str = "") -> Path:
    """Write ``<results_dir>/<name>[-<variant>][-quick].json`` with the date, mode and machine facts.
    A variant (a run of another size) never replaces the standard result the README table shows."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}{f'-{variant}' if variant else ''}{'-quick' if quick else ''}.json"
    document = {"benchmark": name, "mode": "quick" if quick else "full",
                "date": (now or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
                "machine": machine, **result}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path


def log(message: str) -> None:
    print(f"[bench {datetime.now(timezone.utc):%H:%M:%S}] {message}", flush=True)


# --------------------------------------------------------------------------- the stack

@dataclass
class Stack:
    """One embedded PostgreSQL and one Tansu broker for the whole run; every
    benchmark gets its own database and topic prefix on them."""

    run_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="refund-ledger-bench-")))
    postgres: Any = None
    kafka: Any = None
    bank_keys: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)

    def start(self) -> Stack:
        from services.cli.simulate import BANK_CODES
        from services.kit.embedded import EmbeddedKafka, EmbeddedPostgres
        from services.kit.signatures import demo_keys

        # bank events must be signed: DEMO-ONLY keys for this run, as `up` makes them (never committed)
        self.bank_keys = demo_keys(BANK_CODES)
        self.keys_file.touch(mode=0o600)
        self.keys_file.write_text(json.dumps(self.bank_keys), encoding="utf-8")
        self.postgres = EmbeddedPostgres().start()
        self.kafka = EmbeddedKafka(log_dir=self.run_dir).start()
        return self

    @property
    def keys_file(self) -> Path:
        return self.run_dir / "bank-signing-keys.json"

    def signed(self, records: Iterable) -> Iterable:
        """Records with every bank event signed, as ``refund-ledger simulate`` sends them."""
        from services.cli.simulate import signed
        from services.kit.signatures import Keyring

        return signed(iter(records), Keyring.parse(self.bank_keys))

    def stop(self) -> None:
        if self.kafka is not None:
            self.kafka.stop()
        if self.postgres is not None:
            self.postgres.stop()

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap_servers

    def database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"{name}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(self.postgres.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.postgres.url.rsplit("/", 1)[0] + f"/{name}"

    def service_env(self, database_url: str, prefix: str, **extra: str) -> dict[str, str]:
        return {**os.environ, "DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "TOPIC_PREFIX": prefix, "AUDIT_API_SECRET": BENCH_SECRET, "KAFKA_PROFILE": "embedded",
                "LOG_LEVEL": "warning", "BANK_SIGNING_KEYS": "", "BANK_SIGNING_KEYS_FILE": str(self.keys_file),
                **extra}

    def settings(self, prefix: str, database_url: str = ""):
        from services.kit.settings import Settings

        return Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "KAFKA_PROFILE": "embedded",
                                  "TOPIC_PREFIX": prefix, "DATABASE_URL": database_url,
                                  "BANK_SIGNING_KEYS_FILE": str(self.keys_file)})


class Services:
    """The five services as real processes (``refund-ledger run``), as ``up`` runs them."""

    def __init__(self, stack: Stack, database_url: str, prefix: str, names: Iterable[str] | None = None,
                 **extra_env: str) -> None:
        from services.cli.processes import SERVICES, ServiceProcess
        from services.kit.embedded import free_port

        env = stack.service_env(database_url, prefix, **extra_env)
        self.processes = {
            name: ServiceProcess(name, {**env, "DATA_DIR": str(stack.run_dir / f"{prefix}{name}")}, free_port(),
                                 stack.run_dir / f"{prefix}{name}.log")
            for name in (names or SERVICES)}

    def start(self, timeout: float = 180) -> Services:
        for process in self.processes.values():
            process.start()
        deadline = time.monotonic() + timeout
        pending = set(self.processes)
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {timeout:.0f} s: {sorted(pending)}")
            for name in list(pending):
                if self.processes[name].ready():
                    pending.discard(name)
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            process.wait_stopped(30)

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.processes.items() if p.pid}

    def metrics(self, name: str) -> dict[str, float]:
        """Every sample of one service's /metrics, summed over labels, by sample name (+ labelled keys)."""
        from prometheus_client.parser import text_string_to_metric_families

        status, text = self.processes[name].get("/metrics", timeout=10)
        if status != 200:
            return {}
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
                if "topic" in sample.labels:
                    key = f"{sample.name}|{sample.labels['topic']}"
                    totals[key] = totals.get(key, 0.0) + sample.value
        return totals


def tree_cpu_seconds(pid: int | None) -> float:
    """CPU (user + system) a process and its descendants have used so far, ended ones included
    (PostgreSQL's backends come and go; their time is in the postmaster's ``children_*``)."""
    import psutil

    if pid is None:
        return 0.0
    try:
        proc = psutil.Process(pid)
        times = proc.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                times = child.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
    except psutil.Error:
        return 0.0
    return total


def infrastructure_cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds so far of what serves the services: PostgreSQL, Tansu, and this process (its
    threads: the metrics polling, RSS sampling; not the py-spy children it starts)."""
    import psutil

    own = psutil.Process().cpu_times()
    return {"postgres": tree_cpu_seconds(stack.postgres.pid if stack.postgres else None),
            "tansu": tree_cpu_seconds(stack.kafka.pid if stack.kafka else None),
            "bench": own.user + own.system}


class RssSampler:
    """Samples the resident memory of processes every ``interval`` seconds in a thread."""

    def __init__(self, pids: dict[str, int], interval: float = 1.0) -> None:
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.interval = interval
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.progress: float = 0.0     # set by the benchmark: events processed so far
        self.marks: list[tuple[float, dict[str, int]]] = []  # (progress, rss) pairs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            rss = {}
            for name, proc in self.procs.items():
                with contextlib.suppress(psutil.Error):
                    rss[name] = proc.memory_info().rss
            self.samples.append((time.monotonic(), rss))
            self.marks.append((self.progress, rss))
            self._stop.wait(self.interval)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


# --------------------------------------------------------------------------- traffic

def scenario_records(stack: Stack, count: int, seed: int, start: datetime | None = None) -> list:
    """The first ``count`` records of ``refund-ledger simulate``'s scenario (seeded, bank events signed)."""
    from services.cli.simulate import Scenario

    records = []
    for record in stack.signed(Scenario(seed=seed).events(start=start)):
        records.append(record)
        if len(records) >= count:
            break
    return records


async def produce(settings, records: Sequence, chunk: int = 2000) -> None:
    """Publish records (logical topics; the settings' prefix is added) as fast as the broker takes them."""
    from services.kit.kafka import Publisher, ensure_topics

    await ensure_topics(settings)
    publisher = Publisher(settings)
    await publisher.start()
    try:
        for i in range(0, len(records), chunk):
            await publisher.publish(records[i:i + chunk])
    finally:
        await publisher.stop()


def topic_counts(records: Iterable) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        counts[record.topic] = counts.get(record.topic, 0) + 1
    return counts


def run(coro):
    return asyncio.run(coro)


# --------------------------------------------------------------------------- profiles

def profile(pid: int, seconds: float, out: Path, rate: int = 50) -> dict[str, Any]:
    """Sample a running process with py-spy for ``seconds``; the top functions by own time.

    Returns ``{"error": ...}`` when py-spy cannot attach (no ptrace permission)."""
    from shutil import which

    from services.kit.embedded import spawn

    spy = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "py-spy"
    exe = str(spy) if spy.exists() else which("py-spy")
    if not exe:
        return {"error": "py-spy not installed"}
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.with_suffix(".txt")
    proc = spawn([exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate),
                  "--format", "raw", "--output", str(raw), "--nonblocking", "--full-filenames"],
                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return {"error": "py-spy timed out"}
    if proc.returncode != 0 or not raw.exists():
        return {"error": (err or b"").decode(errors="replace")[-500:]}
    return {"file": str(raw.relative_to(ROOT)) if raw.is_relative_to(ROOT) else str(raw),
            **top_frames(raw.read_text(errors="replace"))}


def top_frames(collapsed: str, n: int = 40) -> dict[str, Any]:
    """From py-spy's collapsed stacks: the functions with most own (leaf) and total samples, and
    the own time per package (psycopg, asyncpg, eventsourcing, services, ...)."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    packages: dict[str, int] = {}
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        weight = int(count)
        samples += weight
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + weight
        package = _package(frames[-1])
        packages[package] = packages.get(package, 0) + weight
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + weight

    def top(table: dict[str, int], limit: int) -> list[dict[str, Any]]:
        ranked = sorted(table.items(), key=lambda kv: -kv[1])[:limit]
        return [{"frame": k, "share": round(v / samples, 3)} for k, v in ranked] if samples else []

    return {"samples": samples, "top_own": top(own, 15), "top_total": top(total, n),
            "own_by_package": {f["frame"]: f["share"] for f in top(packages, 10)}}


def _package(frame: str) -> str:
    """``name (psycopg/connection.py)`` -> ``psycopg``; stdlib selectors/asyncio -> ``event loop (idle or I/O)``."""
    path = frame.partition(" (")[2].rstrip(")")
    if not path or "/" not in path:
        name = Path(path).stem
        return "event loop (idle or I/O)" if name in {"selectors", "selector_events", "base_events"} else \
            (name or "?")
    head = path.split("/")[0]
    if head in {"asyncio", "selectors"}:
        return "event loop (idle or I/O)"
    return head


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    for anchor in ("site-packages", "services", "bench", "python3.11", "lib"):
        if anchor in parts:
            start = parts.index(anchor) + (0 if anchor in {"services", "bench"} else 1)
            path = "/".join(parts[start:]) if start < len(parts) else Path(path).name
            break
    else:
        path = Path(path).name
    return f"{name} ({path})" if path else name


_GENERIC = ("Ingress.apply ", "Ingress._apply_once", "LedgerRuntime.apply", "retry_forever", "BlockingExecutor",
            "apply_events", "bench (", "project_ledger_events", "AuditRuntime.apply", "main (", "serve (",
            "retry.<locals>", "<module>", "run_worker", "Worker", "execute_from_commandline", "run_service")


def describe(profiles: dict[str, Any], frames: int = 3) -> str:
    """One line per profiled process: its heaviest project functions (share of samples, waits
    included) and where its own time goes by package."""
    parts = []
    for name, found in profiles.items():
        if not found or "error" in found:
            continue
        ours = [f for f in found.get("top_total", [])
                if f["frame"].split(" (")[-1].startswith(("services/", "eventsourcing/", "bench/"))
                and not any(g in f["frame"] for g in _GENERIC)][:frames]
        packages = list(found.get("own_by_package", {}).items())[:3]
        text = ", ".join(f"{f['frame'].split(' (')[0]} {f['share']:.0%}" for f in ours)
        if packages:
            text += " (own time: " + ", ".join(f"{k} {v:.0%}" for k, v in packages) + ")"
        if text:
            parts.append(f"{name}: {text}")
    return "; ".join(parts)
