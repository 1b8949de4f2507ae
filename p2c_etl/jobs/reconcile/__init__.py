"""`p2c reconcile`, read-only: records (`records`), money (`money`, over the document tables
of `documents`), the job that runs both and stores the verdict (`job`), and the evidence it
writes: HTML, JSON, CSV, XLSX (`report`)."""
