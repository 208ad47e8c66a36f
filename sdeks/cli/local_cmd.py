"""``sdeks local up|status|down``: run the whole pipeline on this machine."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.table import Table

from sdeks.config import ConfigError, load_config
from sdeks.local.stack import ChildFailedError, LocalOptions, LocalStack, PortBusyError, wait_for_exit
from sdeks.local.state import pid_alive, read_state, state_path
from sdeks.local.supervisor import tail

local_app = typer.Typer(
    help="Run the whole pipeline on 127.0.0.1 (moto server, API, runtimes, agents).", no_args_is_help=True
)
console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.add_typer(local_app, name="local")


@local_app.command("up")
def up(
    config: Path = typer.Option(None, "--config", "-c", help="deployment config (default config/default.yaml)"),
    model: str = typer.Option(None, "--model", help="model for every runtime: diffusers dir or .safetensors"),
    api_port: int = typer.Option(8090, help="port of the local API on 127.0.0.1"),
    aws_port: int = typer.Option(4566, help="port of the local AWS endpoint (moto server)"),
    detach: bool = typer.Option(False, "--detach", "-d", help="run in the background; stop with `sdeks local down`"),
    timeout: float = typer.Option(300.0, help="seconds to wait for every component to become healthy"),
) -> None:
    """Start the local stack and keep it running until Ctrl-C / SIGTERM (or `local down` with --detach)."""
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None
    options = LocalOptions(root=Path.cwd(), api_port=api_port, aws_port=aws_port, model=model, start_timeout_s=timeout)
    existing = read_state(state_path())
    if existing and pid_alive(existing.supervisor_pid):
        console.print(
            f"[red]error:[/red] a local stack is already running (pid {existing.supervisor_pid}); "
            "`sdeks local down` stops it"
        )
        raise typer.Exit(1)
    if detach:
        _up_detached(sys.argv[1:], options, timeout)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    stack = LocalStack(cfg, options)
    stack.supervisor.install_signal_handlers()
    try:
        with console.status("starting") as status:
            state = stack.start(progress=lambda msg: status.update(msg))
    except (PortBusyError, ChildFailedError) as exc:
        stack.stop()
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        if isinstance(exc, ChildFailedError):
            console.print(tail(exc.child.log_path), highlight=False, markup=False)
        raise typer.Exit(1) from None
    except Exception as exc:  # e.g. provisioning against a moto server that went away
        stack.stop()
        logging.getLogger("sdeks.local").exception("local stack failed to start")
        console.print(f"[red]error:[/red] the local stack failed to start: {exc}", highlight=False)
        raise typer.Exit(1) from None
    if stack.supervisor.stopping:
        stack.stop()
        raise typer.Exit(130)
    _print_summary(state)
    console.print("local stack is up; Ctrl-C stops it")
    try:
        stack.run()
    finally:
        console.print("stopping the local stack")
        stack.stop()


def _up_detached(argv: list[str], options: LocalOptions, timeout: float) -> None:
    args = [a for a in argv if a not in ("--detach", "-d")]
    options.log_dir.mkdir(parents=True, exist_ok=True)
    log_file = options.log_dir / "supervisor.log"
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sdeks", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=options.root,
        )
    deadline = time.monotonic() + timeout + 30
    with console.status("starting the local stack in the background"):
        while time.monotonic() < deadline:
            state = read_state(state_path(options.root))
            if state and state.supervisor_pid == proc.pid:
                _print_summary(state)
                console.print(f"local stack is up in the background (pid {proc.pid}); `sdeks local down` stops it")
                return
            if proc.poll() is not None:
                console.print(f"[red]error:[/red] the local stack failed to start:\n{tail(log_file)}", highlight=False)
                raise typer.Exit(1)
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGTERM)
    console.print(f"[red]error:[/red] the local stack did not start within {timeout:.0f}s; see {log_file}")
    raise typer.Exit(1)


def _print_summary(state) -> None:
    table = Table(title="sdeks local stack", show_header=False)
    table.add_row("API", state.api_url)
    table.add_row("AWS endpoint", state.aws_endpoint_url)
    table.add_row("output bucket", state.output_bucket)
    table.add_row("results topic", state.results_topic_arn)
    for name, rt in state.runtimes.items():
        table.add_row(f"runtime {name} ({rt.type})", f"{rt.runtime_url}  agent {rt.agent_url}")
    table.add_row("state file", str(state_path()))
    console.print(table)


@local_app.command("status")
def status() -> None:
    """Health of each component of the running local stack."""
    state = read_state(state_path())
    if state is None or not pid_alive(state.supervisor_pid):
        console.print("no local stack is running")
        raise typer.Exit(1)
    checks = {"api": f"{state.api_url}/healthz", "aws": f"{state.aws_endpoint_url}/moto-api/"}
    for name, rt in state.runtimes.items():
        checks[f"runtime {name}"] = f"{rt.runtime_url}/healthz"
        checks[f"agent {name}"] = f"{rt.agent_url}/healthz"
    table = Table(title=f"sdeks local stack (pid {state.supervisor_pid})")
    table.add_column("component")
    table.add_column("url")
    table.add_column("health")
    healthy = True
    for name, url in checks.items():
        try:
            ok = httpx.get(url, timeout=3).status_code == 200
        except httpx.HTTPError:
            ok = False
        healthy &= ok
        table.add_row(name, url, "[green]ok[/green]" if ok else "[red]down[/red]")
    Console().print(table)
    raise typer.Exit(0 if healthy else 1)


@local_app.command("down")
def down(
    timeout: float | None = typer.Option(
        None, help="seconds to wait for a clean stop; default: the agents' shutdown grace and the rest"
    ),
) -> None:
    """Stop a local stack started with --detach (or in another terminal)."""
    path = state_path()
    state = read_state(path)
    if state is None or not pid_alive(state.supervisor_pid):
        path.unlink(missing_ok=True)
        console.print("no local stack is running")
        return
    timeout = state.stop_timeout_s if timeout is None else timeout
    os.kill(state.supervisor_pid, signal.SIGTERM)
    with console.status("stopping the local stack"):
        stopped = wait_for_exit(state.supervisor_pid, timeout)
    if not stopped:
        os.killpg(state.supervisor_pid, signal.SIGKILL)
        console.print(f"[yellow]the stack did not stop within {timeout:.0f}s; killed it[/yellow]")
    path.unlink(missing_ok=True)
    console.print("local stack stopped")
