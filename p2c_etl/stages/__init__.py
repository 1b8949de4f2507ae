"""The stages of a run, each a module named for it: `extract`, `prepare` (`transform` and
`validate`, pure polars), `compare` (`diff`, pure polars), `load`, `report`. Each reads its
inputs from the warehouse by run id and commits its outputs. Imports `model`, `warehouse`,
`connectors`, `config` and `errors`; never `flows` (no stage knows a flow by name), `jobs`,
`sandbox` or `cli`."""
