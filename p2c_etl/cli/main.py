"""The `p2c` group: options every command shares, and its commands."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="p2c-etl")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Progress and errors on stderr as text, or as one JSON object per event.",
)
@click.pass_context
def main(ctx: click.Context, log_format: str) -> None:
    """Keep Dynamics 365 Sales (CRM) and Finance and Operations (ERP) in step."""
    ctx.obj = {"log_format": log_format}
