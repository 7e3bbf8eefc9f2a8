"""Managed background processes: started detached, tracked by pid files.

A pid file records the pid and the process's start time (from /proc), so a
recycled pid is never mistaken for ours and ``down`` stops only what ``up``
started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from prefloop.errors import PortInUseError, StackError


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces; the fields after it are plain
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited already
        return None
    return int(fields[19])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1: all held open while they are
    chosen, since ports chosen one after the other may repeat."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_answers(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_free_port(component: str, port: int, setting: str) -> None:
    if not port_is_free(port):
        raise PortInUseError(component, port, setting)


@dataclass(frozen=True)
class ManagedProcess:
    """One background process of the local stack, known by its pid file."""

    name: str
    run_dir: Path
    log_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def record(self) -> dict[str, object] | None:
        try:
            data = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def pid(self) -> int | None:
        """The pid if our process is alive; None (and a stale pid file removed) otherwise."""
        data = self.record()
        if data is None:
            return None
        pid = int(str(data["pid"]))
        if _start_time(pid) != data.get("start_time"):
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> int:
        """Start ``argv`` in its own session, output to the log file; returns the pid."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            try:
                proc = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(env) if env is not None else None,
                    cwd=cwd,
                    start_new_session=True,
                )
            except FileNotFoundError as exc:
                raise StackError(f"cannot start {self.name}: {argv[0]} was not found") from exc
        record: dict[str, object] = {
            "pid": proc.pid,
            "start_time": _start_time(proc.pid),
            "argv": list(argv),
        }
        record.update(extra or {})
        self.pid_file.write_text(json.dumps(record))
        return proc.pid

    def wait_until(
        self, ready: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
    ) -> None:
        """Poll ``ready`` until it holds; fail with the log's tail if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                raise StackError(
                    f"{self.name} exited before it was {what}; its log ({self.log_file}) "
                    f"ends with:\n{self.log_tail()}"
                )
            if ready():
                return
            time.sleep(interval)
        raise StackError(
            f"{self.name} was not {what} after {timeout:.0f} s; its log ({self.log_file}) "
            f"ends with:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM the process group, wait, SIGKILL what is left. True if it was running."""
        pid = self.pid()
        if pid is None:
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (pid_alive(pid) or _group_members(pid)):
            time.sleep(0.1)
        # what did not go in time: a hung leader, or daemons that ignore SIGTERM (Ray's)
        while pid_alive(pid) or _group_members(pid):
            _signal_group(pid, signal.SIGKILL)
            time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the process alone, not its group: the crash that fault tests need."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.05)


def stop_all(processes: Sequence[ManagedProcess]) -> list[str]:
    """Stop processes at once, e.g. a KRaft quorum: one by one, the last would wait for
    the quorum it lost. Returns the names of those that were running."""
    if not processes:
        return []
    with ThreadPoolExecutor(max_workers=len(processes)) as pool:
        results = list(pool.map(lambda process: process.stop(), processes))
    return [p.name for p, was in zip(processes, results, strict=True) if was]


def pid_alive(pid: int) -> bool:
    """Whether the process still runs; reaps it first if it is our exited child."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return _start_time(pid) is not None


def _group_members(pgid: int) -> list[int]:
    """Live processes of the process group ``pgid`` (the leader's session and group)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)
