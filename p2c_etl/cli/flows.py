"""`p2c flows` and `p2c flows show NAME`: the declarations as people read them."""

from __future__ import annotations

from pathlib import Path

import click

from p2c_etl.cli.output import errors_exit, settings_from, table
from p2c_etl.config import DEFAULT_CONFIG
from p2c_etl.errors import ConfigError
from p2c_etl.flows import ALL_FLOWS, flow_names, get_flow
from p2c_etl.jobs.describe import flow_header_lines, flow_markdown, mapping_rows
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.flow import dependency_order
from p2c_etl.model.overrides import apply_overrides
from p2c_etl.resources import contracts_dir


@click.group("flows", invoke_without_command=True)
@click.pass_context
@errors_exit
def flows_command(ctx: click.Context) -> None:
    """List every flow: direction, source, target, keys, dependencies."""
    if ctx.invoked_subcommand is not None:
        return
    rows = [
        (
            f.name,
            f.direction,
            str(f.source),
            str(f.target),
            ", ".join(f.keys),
            ", ".join(f.depends_on) or "—",
        )
        for f in dependency_order(ALL_FLOWS)
    ]
    table(("flow", "direction", "source", "target", "keys", "after"), rows)


@flows_command.command("show")
@click.argument("name")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Show the flow with the overrides of this p2c.toml [default: ./p2c.toml if present].",
)
@click.option("--markdown", is_flag=True, help="Print a Markdown section instead of a table.")
@errors_exit
def flows_show(name: str, config_path: Path | None, markdown: bool) -> None:
    """Print the mapping table of flow NAME: target field, source field, rule."""
    try:
        flow = get_flow(name)
    except KeyError:
        raise ConfigError(f"unknown flow {name} (flows: {', '.join(flow_names())})") from None
    if config_path is None and DEFAULT_CONFIG.is_file():
        config_path = DEFAULT_CONFIG  # like every other command: ./p2c.toml when present
    if config_path is not None:
        settings = settings_from(config_path)
        contracts = ContractSet.load(contracts_dir())
        flow = apply_overrides(flow, settings.flow(name), contracts, config_path.name)
    if markdown:
        click.echo(flow_markdown(flow))
        return
    click.echo(f"{flow.name}: {flow.source} → {flow.target}, keys {', '.join(flow.keys)}")
    for line in flow_header_lines(flow):
        click.echo(line)
    table(("target field", "source field", "rule"), mapping_rows(flow))
