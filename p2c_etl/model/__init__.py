"""The shared vocabulary every layer speaks: flow declarations (`flow`), contracts and their
pandera schemas (`contracts`), exact casting, money, record keys, ids, rejects, overrides and
run summaries. Pure definitions and functions; imports only `config` and `errors`, never a
layer above it (flows, warehouse, connectors, stages, sandbox, jobs, cli)."""
