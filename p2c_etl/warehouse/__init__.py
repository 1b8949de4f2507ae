"""The DuckDB warehouse (`store`): where stages hand over by run id, and what every run leaves
behind (ledger, rejects, changes, load results, last-written values, reconciliations); and the
run lock (`lock`). Imports `model`, `config` and `errors` only."""
