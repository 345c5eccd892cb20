"""Processes started by tests: the operator as `tokensync run`, and whole tools run to their end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class OperatorProcess:
    """``tokensync run ARGS`` in a process of its own, its output in a log file; killed by ``close()``."""

    def __init__(self, args: list[str], log: Path, *, pod_name: str = "tokensync-0") -> None:
        self.log_path = log
        self._log = log.open("a")
        command = [sys.executable, "-m", "tokensync.cli", "run", *args]
        self.process = subprocess.Popen(
            command, env={**os.environ, "POD_NAME": pod_name}, stdout=self._log, stderr=subprocess.STDOUT
        )

    def signal(self, number: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(number)

    def close(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait(30)
        self._log.close()


def run_to_end(command: list[str], *, timeout: float) -> tuple[int, str, str]:
    """Run ``command`` from the checkout's root; returns (exit code, stdout, stderr).

    On a timeout it is stopped with SIGTERM, not SIGKILL, so that it stops its own children.
    """
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    finally:
        if child.poll() is None:
            child.terminate()
            child.communicate(timeout=60)
    return child.returncode, stdout, stderr
