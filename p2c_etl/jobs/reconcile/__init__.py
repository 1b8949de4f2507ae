"""`p2c reconcile`, read-only: records (`records`), money (`money`, over the document tables
of `documents`), the tie-out that explains the money's differences (`tieout`), what a filter
keeps (`scope`), ageing (`ageing`), the evidence block (`evidence`), the job that runs them and
stores the verdict (`job`), the frozen result (`data`), and what it files: HTML and JSON
(`report`), the CSV and the XLSX workpaper (`workpaper`, `exports`)."""
