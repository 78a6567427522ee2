"""Knowledge bases for the support bot: ``ingest`` (documents → chunks), ``index`` (the SQLite
file), ``retrieve`` (hybrid search), ``answer`` (grounded answers), ``select`` (answer sentences
ranked by the model's likelihood), ``evaluate`` (``slm kb eval``), ``calibrate`` (the abstention
threshold: sweep, rule, plot)."""
