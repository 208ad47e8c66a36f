"""``sdeks webhook-secret``: print the secret receivers verify webhook signatures with."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console

from sdeks.config import ConfigError, load_config, resource_layout
from sdeks.local.provision import local_session
from sdeks.local.state import read_state, state_path
from sdeks.webhook_secret import read_secret

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command("webhook-secret")(webhook_secret)


def webhook_secret(
    config: Path = typer.Option(
        None, "--config", "-c", help="deployment config of a cloud stack (default: the running local stack)"
    ),
    region: str = typer.Option(None, "--region", help="AWS region of the cloud stack (default: the config's)"),
) -> None:
    """Print the whsec_ signing secret (Standard Webhooks) of the local stack, or of a deployed one with --config."""
    if config is None:
        state = read_state(state_path())
        if state is None or not state.webhook_secret_id:
            _fail("no local stack found (.sdeks/local.json); run `sdeks local up`, or pass --config for a cloud stack")
        client = local_session(state.region).client("secretsmanager", endpoint_url=state.aws_endpoint_url)
        secret_id = state.webhook_secret_id
    else:
        try:
            cfg = load_config(config)
        except ConfigError as exc:
            _fail(str(exc), 2)
        import boto3

        client = boto3.session.Session(region_name=region or cfg.region).client("secretsmanager")
        secret_id = resource_layout(cfg).webhooks.secret_name
    try:
        typer.echo(read_secret(client, secret_id))
    except (ClientError, BotoCoreError) as exc:
        _fail(f"cannot read the webhook secret {secret_id!r}: {exc}")


def _fail(message: str, code: int = 1) -> NoReturn:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)
