"""The ``sdeks`` command: contract schemas, local mode, task submission and status."""

from __future__ import annotations

import typer

from sdeks.cli import dlq_cmd, local_cmd, models_cmd, schema_cmd, smoke_cmd, task_cmd, top_cmd, webhook_cmd

app = typer.Typer(
    name="sdeks",
    help="Asynchronous Stable Diffusion inference on AWS, and the same pipeline on one machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
schema_cmd.register(app)
local_cmd.register(app)
task_cmd.register(app)
dlq_cmd.register(app)
top_cmd.register(app)
webhook_cmd.register(app)
models_cmd.register(app)
smoke_cmd.register(app)


@app.callback()
def _root() -> None:
    """Asynchronous Stable Diffusion inference on AWS, and the same pipeline on one machine."""


def main() -> None:
    app()
