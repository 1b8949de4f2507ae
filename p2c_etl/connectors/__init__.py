"""Connectors: how p2c-etl reads and writes each system, behind one interface (`base.Connector`):
`files` (the embedded default), `dataverse` and `finops` over `odata`; and the readers of
files-layout and export files (`exports`, `export_csv`, `badrows`). Import `model`, `config`
and `errors` only."""
