"""``python -m queue_agent``: configured by the environment (see :mod:`queue_agent.settings`)."""

from __future__ import annotations

import os
import signal
import sys
import threading

from pydantic import ValidationError

from queue_agent import logs
from queue_agent.logs import log


def main() -> int:
    from queue_agent.settings import Settings

    try:
        settings = Settings()  # type: ignore[call-arg]
    except ValidationError as exc:
        logs.setup()
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '?'}: {e['msg']}" for e in exc.errors())
        log.error("invalid configuration", extra={"problems": problems})
        return 2
    logs.setup(settings.log_level)

    from queue_agent.server import serve
    from queue_agent.worker import Agent

    agent = Agent(settings)
    server = serve(agent, settings.agent_host, settings.agent_port)
    log.info(
        "agent starting",
        extra={
            "runtime": settings.runtime_name,
            "runtime_type": settings.runtime_type,
            "prefetch": settings.prefetch,
            "port": server.server_address[1],
        },
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.start()
    while not stop.wait(1.0):
        pass
    agent.shutdown()
    server.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # a runtime call may still block a daemon thread; its message was released


if __name__ == "__main__":
    sys.exit(main())
