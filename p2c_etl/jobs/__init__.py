"""What a user runs, each job composing the stages: `run` (the nightly batch), `retry`,
`reconcile/`, `migrate/`, `check`, `demo`, `describe`, `history`, `alerts`; `wiring` gives
each its flows, connectors and warehouse. May import every layer but `cli`."""
