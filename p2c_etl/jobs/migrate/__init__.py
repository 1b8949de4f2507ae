"""`p2c migrate`: the job (`job`: flows in order, the run and its ledger), one flow a chunk at
a time (`flow_job`), and what it is asked to do (`options`). The export files are read by
`connectors.exports`."""
