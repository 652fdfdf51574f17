"""``release_free_memory`` gives freed heap pages back to the OS (glibc's malloc_trim).

The scenario runs in a fresh interpreter, as a service process starts: the test
runner's own allocations and libraries change where glibc puts new blocks.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services.kit.memory import _malloc_trim

pytestmark = pytest.mark.skipif(_malloc_trim() is None, reason="not glibc: no malloc_trim")

SCENARIO = """
import os, resource
from services.kit.memory import release_free_memory

def rss():
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()

# 64 KiB blocks come from the heap (below the mmap threshold); a small live block after each keeps
# the heap's top in place, so freeing the big ones leaves holes glibc keeps unless trimmed.
start = rss()
big, pins = [], []
for _ in range(1600):  # 100 MiB
    big.append(b"x" * (64 * 1024))
    pins.append(b"p" * 600)
del big
held = rss()
released = release_free_memory()
print(int(released), held - rss(), len(pins), held - start)
"""


def test_memory_freed_inside_the_heap_goes_back_to_the_os():
    # glibc told not to trim on free (and to serve 64 KiB blocks from the heap): whatever the heap's layout,
    # freeing keeps every page resident, and only release_free_memory can give them back.
    env = {**{key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")},
           "MALLOC_TRIM_THRESHOLD_": str(2**30), "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    out = subprocess.run([sys.executable, "-c", SCENARIO], env=env, capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    released, returned, pins, kept = (int(value) for value in out)
    assert kept > 90 * 1024 * 1024, f"freeing already gave back all but {kept / 2**20:.1f} MiB: nothing to show"
    assert released == 1 and pins == 1600
    assert returned > 80 * 1024 * 1024, f"only {returned / 2**20:.1f} MiB went back to the OS"


def release_tasks(interval: str) -> list:
    from services.kit.runtime import create_faust_app
    from services.kit.settings import Settings

    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "MALLOC_TRIM_INTERVAL": interval})
    app = create_faust_app("payments", settings)
    return [task for task in app._app_tasks if task.__name__ == "release_freed_memory"]


def test_every_service_releases_freed_memory_on_a_timer_unless_turned_off():
    import asyncio
    import inspect

    (task,) = release_tasks("10")
    body = inspect.unwrap(task)  # what the timer runs every interval: one trim, off the event loop
    asyncio.run(asyncio.wait_for(body(), timeout=30))
    assert release_tasks("0") == []
