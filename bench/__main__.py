"""``python -m bench [--quick] [--only NAME ...]``: run the benchmarks, write
``bench/results/<name>[-quick].json`` and refresh the README's Performance table.

One embedded PostgreSQL and one Tansu broker serve the whole run; each
benchmark measures the raw limit and the project in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from typing import Any

from bench.common import Stack, log, machine_facts, write_result

ORDER = ("ingest", "memory", "freshness", "queries", "rebuild")


def _runner(name: str):
    if name == "ingest":
        from bench.ingest import bench
    elif name == "memory":
        return None  # measured during the ingest run
    elif name == "freshness":
        from bench.freshness import bench
    elif name == "queries":
        from bench.queries import bench
    elif name == "rebuild":
        from bench.rebuild import bench
    else:
        raise ValueError(name)
    return bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="each benchmark in under a minute")
    parser.add_argument("--only", nargs="*", choices=ORDER, help="run only these (rebuild and memory need ingest)")
    parser.add_argument("--ingest-events", type=int, default=None,
                        help="events in the ingest (and memory) run; default 8,000 quick, 200,000 full; "
                             "another size writes <name>-<N>-events.json, not the files the README table shows")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README table")
    args = parser.parse_args(argv)
    wanted = list(args.only or ORDER)
    if ("rebuild" in wanted or "memory" in wanted) and "ingest" not in wanted:
        wanted.insert(0, "ingest")
    machine = machine_facts()
    ctx: dict[str, Any] = {"ingest_events": args.ingest_events}
    variant = f"{args.ingest_events}-events" if args.ingest_events else ""
    failures = 0
    stack = Stack().start()
    log(f"stack up: kafka {stack.bootstrap}, postgres {stack.postgres.url}, logs {stack.run_dir}")
    try:
        for name in (n for n in ORDER if n in wanted):
            started = time.monotonic()
            try:
                if name == "memory":
                    result = ctx.get("memory")
                    if result is None:
                        continue
                else:
                    result = _runner(name)(stack, args.quick, ctx)
            except Exception as error:  # one broken benchmark must not lose the others' results
                failures += 1
                traceback.print_exc()
                result = {"error": f"{type(error).__name__}: {error}"[:2000], "met": False}
            result["wall_seconds"] = round(time.monotonic() - started, 1)
            path = write_result(name, result, quick=args.quick, machine=machine, variant=variant)
            log(f"{name}: done in {result['wall_seconds']} s -> {path}")
    finally:
        stack.stop()
    if not args.no_readme:
        from bench.readme import update_readme

        update_readme()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
