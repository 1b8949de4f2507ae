"""The `p2c` command: thin click commands, one module per command group, each calling a job.

The CLI parses options, prints and chooses the exit code (0 clean; 1 finished with
record-level rejects or failures; 2 failed, an unexpected exception included; 3 another run
holds the lock; 130 / 143 interrupted by SIGINT / SIGTERM); it does no work of its own.
Human progress goes to stderr; `--json` prints one JSON summary on stdout.
May import every layer below it.
"""

from p2c_etl.cli.check import check
from p2c_etl.cli.demo import demo
from p2c_etl.cli.flows import flows_command
from p2c_etl.cli.history import history, prune
from p2c_etl.cli.main import main
from p2c_etl.cli.migrate import migrate
from p2c_etl.cli.reconcile import reconcile
from p2c_etl.cli.run import retry, run
from p2c_etl.cli.sandbox import sandbox

for command in (
    run,
    demo,
    migrate,
    reconcile,
    retry,
    prune,
    check,
    sandbox,
    flows_command,
    history,
):
    main.add_command(command)

__all__ = ["main"]
