"""The exceptions p2c-etl raises, named by what the caller should do.

    P2CError                 base; `exit_code` is the CLI exit code it maps to
     ├── ConfigError         stop: p2c.toml is missing, unreadable or wrong (exit 2)
     ├── ConnectorError      stop: a system cannot be read or written as a whole (exit 2)
     │    └── AuthError      stop: the system refused the credentials (401 / 403) (exit 2)
     ├── ContractError       stop: a contract file is wrong, or a frame has the wrong shape (exit 2)
     ├── StageError          stop: a stage failed; names the stage, flow and run id (exit 2)
     └── LockedError         wait: another p2c-etl command holds the warehouse (exit 3)

Problems with single records are never exceptions: they become reject rows or failed
load results with a reason code, and the run goes on (see `p2c_etl.stages.validate`).
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class P2CError(Exception):
    """Base class for errors that stop a command with a clear one-line message."""

    exit_code = 2


class ConfigError(P2CError):
    """The configuration is missing or wrong; fix p2c.toml and run again."""


class ConnectorError(P2CError):
    """A whole system or entity set cannot be read or written."""


class AuthError(ConnectorError):
    """A system refused p2c-etl's credentials; nothing can be read or written there."""


class ContractError(P2CError):
    """A contract file is invalid, or data does not have the shape its contract declares."""


class StageError(P2CError):
    """A pipeline stage failed; wraps the cause with stage, flow and run id."""

    def __init__(self, stage: str, flow: str, run_id: str, cause: BaseException) -> None:
        self.stage, self.flow, self.run_id, self.cause = stage, flow, run_id, cause
        super().__init__(f"run {run_id}: {stage} of flow {flow!r} failed: {cause}")


class LockedError(P2CError):
    """Another p2c-etl command holds the warehouse; run again when it has finished."""

    exit_code = 3
