"""Child processes: each in its own process group, logged to a file, and never leaked.

Every child is registered with a :class:`Children` registry; leaving the registry (normally, on an
exception, on Ctrl-C or on SIGTERM, which ``__main__`` turns into SystemExit) kills whatever is
still running, whole process groups at once, so an operator's own children go too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

# Proxies from the environment would send loopback traffic elsewhere: everything here is 127.0.0.1.
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the child binds it soon after; a race is unlikely on a bench box)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARIABLES}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"  # logs reach the file before a SIGKILL
    env.update(extra or {})
    return env


class Child:
    """One process in a new session (so its own process group), stdout and stderr to ``log_path``."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = log_path.open("ab")
        self._log.write(f"\n### {time.strftime('%H:%M:%S')} start: {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(  # noqa: S603 - our own argv, no shell
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else child_environment(),
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (a graceful stop), SIGKILL if it is still there after ``timeout``; returns the exit code."""
        self._signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()
        finally:
            self._close_log()

    def kill(self) -> int:
        """SIGKILL the whole group (a crash, as a node failure looks to the other replica)."""
        self._signal(signal.SIGKILL)
        code = self.proc.wait()
        self._close_log()
        return code

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def _close_log(self) -> None:
        if not self._log.closed:
            self._log.close()


class Children:
    """A registry that kills every child still running when it is left, whatever the reason."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._children: list[Child] = []

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Child:
        child = Child(name, argv, self.log_dir / f"{name}.log", env)
        self._children.append(child)
        return child

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill_all()

    def kill_all(self) -> None:
        # A second Ctrl-C or SIGTERM must not cut the cleanup short (this runs in the main thread).
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for child in reversed(self._children):
                if child.alive():
                    child.kill()
            self._children.clear()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def wait_for_file(path: Path, child: Child, timeout: float) -> str:
    """The non-empty contents of ``path`` once the child has written it (it must stay alive meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child.check_alive()
        with contextlib.suppress(FileNotFoundError):
            text = path.read_text().strip()
            if text:
                return text
        time.sleep(0.05)
    raise TimeoutError(f"{child.name} did not write {path} within {timeout:.0f}s; see {child.log_path}")


@dataclass(frozen=True)
class Standin:
    """A running API stand-in: its process, URL and a kubeconfig that points at it."""

    child: Child
    base_url: str
    kubeconfig: Path


def start_standin(children: Children, name: str, module: str, workdir: Path) -> Standin:
    """``python -m MODULE --port 0`` (the API stand-in), once it serves and has written its kubeconfig."""
    kubeconfig, port_file = workdir / f"{name}.kubeconfig", workdir / f"{name}.port"
    argv = [sys.executable, "-m", module, "--port", "0", "--kubeconfig", str(kubeconfig), "--port-file", str(port_file)]
    child = children.start(name, argv)
    port = int(wait_for_file(port_file, child, 60))
    wait_for_file(kubeconfig, child, 60)
    return Standin(child, f"http://127.0.0.1:{port}", kubeconfig)
