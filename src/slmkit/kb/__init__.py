"""Knowledge bases for the support bot: ``ingest`` (documents → chunks), ``index`` (the SQLite
file), ``retrieve`` (hybrid search), ``answer`` (grounded answers), ``evaluate`` (``slm kb eval``)."""
