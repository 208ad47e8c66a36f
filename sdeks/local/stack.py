"""``sdeks local up``: the whole pipeline on 127.0.0.1.

Start order follows the dependencies (AWS → API → webhook deliverer → runtimes → agents) and stop
order is the reverse, so agents finish or release their tasks while everything
they talk to is still up.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sdeks.api.environment import api_environment
from sdeks.config import Config
from sdeks.local.agent_env import agent_env
from sdeks.local.provision import provision
from sdeks.local.state import STATE_DIR, LocalState, RuntimeEndpoints, pid_alive, state_path, write_state
from sdeks.local.supervisor import Child, ChildFailedError, Supervisor, child_env
from sdeks.local.webhooks_env import webhooks_env

log = logging.getLogger("sdeks.local")

HOST = "127.0.0.1"
REGION = "us-east-1"
LOCAL_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
TINY_MODEL_NAME = "tiny-sd"


class PortBusyError(RuntimeError):
    pass


@dataclass(frozen=True)
class LocalOptions:
    root: Path
    api_port: int = 8090
    aws_port: int = 4566
    model: str | None = None
    wait_time_s: int = 5
    start_timeout_s: float = 180.0

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"


def ensure_port_free(port: int, what: str) -> None:
    """Refuse a port something listens on; one left in TIME_WAIT by a stack just stopped is free.

    The servers set SO_REUSEADDR themselves, so the check does too: without it, ``local up``
    right after ``local down`` fails for up to a minute on connections still closing.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortBusyError(
                    f"port {port} on {HOST} is already in use, so the {what} cannot start there; "
                    f"stop whatever holds it (is a local stack already up? `sdeks local down`) "
                    f"or pick another port"
                ) from None
            raise


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def ensure_tiny_model(models_dir: Path) -> Path:
    """Build the tiny random-weight model and its companions (LoRA, VAE ...) where missing; no download.

    The builder is always run: it writes only the files a models dir lacks (a dir made by an
    older sdeks gains the newer companions) and returns in well under a second when all exist.
    """
    subprocess.run([sys.executable, "-m", "sd_runtime.tiny", str(models_dir)], check=True, stdout=subprocess.DEVNULL)
    return models_dir / TINY_MODEL_NAME


def model_for(config_model_path: str | None, override: str | None, models_dir: Path) -> Path:
    chosen = override or config_model_path
    return Path(chosen).resolve() if chosen else ensure_tiny_model(models_dir)


class LocalStack:
    """Builds the children for a config and supervises them."""

    def __init__(self, config: Config, options: LocalOptions) -> None:
        self.config = config
        self.options = options
        self.supervisor = Supervisor()
        self.api_key = secrets.token_urlsafe(24)

    def _child(self, name: str, argv: list[str], env: dict[str, str], health_url: str | None, **kw) -> Child:
        return self.supervisor.add(
            Child(name, argv, child_env(env), self.options.log_dir / f"{name}.log", health_url, **kw)
        )

    def start(self, progress: Callable[[str], None] = lambda message: None) -> LocalState:
        """Start everything; raise :class:`ChildFailedError` or :class:`PortBusyError` with a clear message."""
        opts = self.options
        ensure_port_free(opts.aws_port, "local AWS endpoint (moto server)")
        ensure_port_free(opts.api_port, "local API")
        aws_url = f"http://{HOST}:{opts.aws_port}"

        progress("starting the local AWS endpoint (moto server)")
        moto = self._child(
            "moto",
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(opts.aws_port)],
            LOCAL_AWS_ENV,
            f"{aws_url}/moto-api/",
        )
        moto.start()
        moto.wait_healthy(60, lambda: self.supervisor.stopping)

        progress("provisioning topics, queues, DLQs, table and bucket")
        res = provision(self.config, aws_url, REGION)
        aws_env = {**LOCAL_AWS_ENV, "AWS_ENDPOINT_URL": aws_url}

        progress("starting the API")
        api = self._child(
            "api",
            [sys.executable, "-m", "sdeks.api.local_server", "--host", HOST, "--port", str(opts.api_port)],
            {
                **aws_env,
                "SDEKS_API_KEY": self.api_key,
                **api_environment(
                    self.config,
                    tasks_topic_arn=res.tasks_topic_arn,
                    task_table=res.task_table,
                    output_bucket=res.output_bucket,
                    webhook_allow_loopback=True,  # local receivers listen on 127.0.0.1
                ),
            },
            f"http://{HOST}:{opts.api_port}/healthz",
        )
        api.start()

        progress("starting the webhook deliverer")
        self._child(
            "webhooks",
            [sys.executable, "-m", "webhooks"],
            {**LOCAL_AWS_ENV, **webhooks_env(res, allow_loopback=True, wait_time_s=opts.wait_time_s)},
            None,
        ).start()

        progress("preparing models")
        models_dir = opts.state_dir / "models"
        runtimes: dict[str, RuntimeEndpoints] = {}
        agents: list[Child] = []
        servers: list[Child] = [api]  # what agents need healthy before they start
        for runtime in self.config.runtimes:
            model = model_for(runtime.model.local_path, opts.model, models_dir)
            rt_port, agent_port = free_port(), free_port()
            rt_url = f"http://{HOST}:{rt_port}"
            rt = self._child(
                f"runtime-{runtime.name}",
                [
                    sys.executable,
                    "-m",
                    "sd_runtime",
                    "--model",
                    str(model),
                    "--models-dir",
                    str(model.parent),
                    "--host",
                    HOST,
                    "--port",
                    str(rt_port),
                ],
                {},
                f"{rt_url}/healthz",
                stop_timeout_s=10,
            )
            queue = res.queues[runtime.name]
            agents.append(
                self._child(
                    f"agent-{runtime.name}",
                    [sys.executable, "-m", "queue_agent"],
                    {
                        **LOCAL_AWS_ENV,
                        **agent_env(
                            res,
                            runtime.name,
                            rt_url,
                            runtime.type,
                            port=agent_port,
                            inputs=self.config.inputs,
                            status_ttl_days=self.config.output.expire_days,
                            agent_host=HOST,
                            prefetch=runtime.prefetch,
                            task_timeout_s=runtime.task_timeout_s,
                            shutdown_grace_s=runtime.shutdown_grace_s,
                            wait_time_s=opts.wait_time_s,
                        ),
                    },
                    f"http://{HOST}:{agent_port}/healthz",
                    stop_timeout_s=runtime.shutdown_grace_s + 5,
                )
            )
            runtimes[runtime.name] = RuntimeEndpoints(
                type=runtime.type,
                runtime_url=rt_url,
                agent_url=f"http://{HOST}:{agent_port}",
                queue_url=queue.url,
                dlq_url=queue.dlq_url,
            )
            rt.start()
            servers.append(rt)

        progress("waiting for the API and runtimes to load their models")
        self._wait_all(servers)
        progress("starting queue agents")
        for agent in agents:
            agent.start()
        self._wait_all(agents)

        state = LocalState(
            api_url=f"http://{HOST}:{opts.api_port}",
            api_key=self.api_key,
            aws_endpoint_url=aws_url,
            region=REGION,
            output_bucket=res.output_bucket,
            tasks_topic_arn=res.tasks_topic_arn,
            results_topic_arn=res.results_topic_arn,
            task_table=res.task_table,
            queues={name: q.url for name, q in res.queues.items()},
            webhook_queue_url=res.webhook_queue.url if res.webhook_queue else "",
            webhook_secret_id=res.webhook_secret_id,
            runtimes=runtimes,
            supervisor_pid=os.getpid(),
            log_dir=str(opts.log_dir),
            stop_timeout_s=self.supervisor.stop_budget_s(),
        )
        write_state(state, state_path(opts.root))
        return state

    def _wait_all(self, children: list[Child]) -> None:
        with ThreadPoolExecutor(max_workers=max(1, len(children))) as pool:
            futures = [
                pool.submit(c.wait_healthy, self.options.start_timeout_s, lambda: self.supervisor.stopping)
                for c in children
            ]
            for future in futures:
                future.result()

    def run(self) -> None:
        self.supervisor.run_until_stopped()

    def stop(self) -> None:
        self.supervisor.stop_all()
        state_path(self.options.root).unlink(missing_ok=True)


def wait_for_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.2)
    return not pid_alive(pid)


__all__ = ["ChildFailedError", "LocalOptions", "LocalStack", "PortBusyError", "wait_for_exit"]
