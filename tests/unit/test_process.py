import socket
import sys
import time
from pathlib import Path

import pytest

from prefloop.errors import PortInUseError, StackError
from prefloop.process import ManagedProcess, port_is_free, require_free_port

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def managed(tmp_path: Path, name: str = "sleeper") -> ManagedProcess:
    return ManagedProcess(name, tmp_path / "run", tmp_path / "logs")


def test_start_records_a_pid_and_stop_ends_the_whole_group(tmp_path: Path) -> None:
    process = managed(tmp_path)
    # a parent that starts a child in its group: stop must end both
    parent = [
        sys.executable,
        "-c",
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print('ready', flush=True); time.sleep(60)",
    ]
    pid = process.start(parent)
    process.wait_until(lambda: "ready" in process.log_tail(), timeout=20, what="ready")
    assert process.pid() == pid
    assert process.stop(timeout=5)
    assert process.pid() is None
    assert not process.pid_file.exists()
    assert not process.stop()  # stopping what is not running is not an error


def test_a_recycled_pid_is_not_mistaken_for_ours(tmp_path: Path) -> None:
    process = managed(tmp_path)
    process.start(SLEEPER)
    record = process.record()
    assert record is not None
    record["start_time"] = 1  # as if the pid now belonged to another process
    process.pid_file.write_text(__import__("json").dumps(record))
    try:
        assert process.pid() is None
        assert not process.pid_file.exists()
    finally:
        import os
        import signal

        os.kill(int(str(record["pid"])), signal.SIGKILL)


def test_a_process_that_dies_early_reports_its_log(tmp_path: Path) -> None:
    process = managed(tmp_path, "crasher")
    process.start([sys.executable, "-c", "print('bad config: x'); raise SystemExit(3)"])
    with pytest.raises(StackError) as info:
        process.wait_until(lambda: False, timeout=20, what="serving")
    assert "crasher exited before it was serving" in str(info.value)
    assert "bad config: x" in str(info.value)


def test_a_slow_process_times_out_with_a_clear_error(tmp_path: Path) -> None:
    process = managed(tmp_path)
    process.start(SLEEPER)
    started = time.monotonic()
    with pytest.raises(StackError, match="was not serving after 1 s"):
        process.wait_until(lambda: False, timeout=1, what="serving")
    assert time.monotonic() - started < 10
    process.stop()


def test_a_taken_port_is_one_clear_sentence() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_is_free(port)
        with pytest.raises(PortInUseError) as info:
            require_free_port("kafka-1", port, "PREFLOOP_KAFKA_PORT")
    assert str(info.value) == (
        f"port {port} on 127.0.0.1, which kafka-1 needs, is taken by another process: "
        "stop that process or set PREFLOOP_KAFKA_PORT to a free port"
    )
    assert port_is_free(port)
