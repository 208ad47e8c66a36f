"""Child processes with health checks and restart-on-death, as Kubernetes would do.

Deliberately small: start a process, wait for its health URL, restart it with a
logged reason when it dies, stop everything in reverse dependency order.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

log = logging.getLogger("sdeks.local")


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    health_url: str | None = None
    stop_timeout_s: float = 15.0
    proc: subprocess.Popen | None = None
    restarts: int = 0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        if not self.alive:
            return False
        if self.health_url is None:
            return True
        try:
            return httpx.get(self.health_url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout_s: float, should_stop: Callable[[], bool] = lambda: False) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not should_stop():
            if self.proc is not None and self.proc.poll() is not None:
                raise ChildFailedError(self, f"exited with code {self.proc.returncode} while starting")
            if self.healthy():
                return
            time.sleep(0.2)
        if not should_stop():
            raise ChildFailedError(self, f"not healthy after {timeout_s:.0f}s")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the grace period."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", self.name, self.stop_timeout_s)
            self.proc.kill()
            self.proc.wait(5)


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if the supervisor dies, even by SIGKILL; no orphans."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class ChildFailedError(RuntimeError):
    def __init__(self, child: Child, reason: str) -> None:
        super().__init__(f"{child.name} {reason}; see {child.log_path}")
        self.child = child


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Supervisor:
    """Keeps children alive until asked to stop; restarts are logged with their cause."""

    children: list[Child] = field(default_factory=list)
    stopping: bool = False
    restart_backoff_s: float = 1.0

    def add(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def watch_once(self) -> None:
        for child in self.children:
            if self.stopping or child.proc is None or child.proc.poll() is None:
                continue
            code = child.proc.returncode
            cause = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            child.restarts += 1
            log.warning("%s %s; restarting it (restart #%d)", child.name, cause, child.restarts)
            time.sleep(min(self.restart_backoff_s * child.restarts, 10.0))
            child.start()

    def run_until_stopped(self, poll_s: float = 0.5) -> None:
        while not self.stopping:
            self.watch_once()
            time.sleep(poll_s)

    def stop_budget_s(self) -> float:
        """Longest a clean :meth:`stop_all` may take: children stop one after another, each within its timeout."""
        return sum(child.stop_timeout_s for child in self.children) + 5.0

    def stop_all(self) -> None:
        """Stop in reverse start order: agents release their tasks while runtimes and AWS are still up."""
        self.stopping = True
        for child in reversed(self.children):
            child.stop()

    def install_signal_handlers(self) -> None:
        def _stop(signum: int, _frame: object) -> None:
            log.info("received %s; stopping", signal.Signals(signum).name)
            self.stopping = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The parent's environment plus ``extra``; unbuffered output so logs are live."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
