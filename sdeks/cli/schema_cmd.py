"""``sdeks schema NAME``: print the JSON Schema of a contract document."""

from __future__ import annotations

import json

import typer

from sdeks.contract import SCHEMAS, json_schema


def register(app: typer.Typer) -> None:
    @app.command("schema")
    def schema(
        name: str = typer.Argument("request", help=f"one of: {', '.join(SCHEMAS)}"),
    ) -> None:
        """Print the JSON Schema of a task request, status, completion event, ..."""
        if name not in SCHEMAS:
            typer.echo(f"error: unknown schema {name!r}; choose one of: {', '.join(SCHEMAS)}", err=True)
            raise typer.Exit(2)
        typer.echo(json.dumps(json_schema(name), indent=2))
