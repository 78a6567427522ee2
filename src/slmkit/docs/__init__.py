"""Document processing: fields out of PDFs into JSON that always fits a schema, on your own CPU.

- :mod:`slmkit.docs.pdf` — page text with its layout (pypdf, isolated; scans are refused: no OCR)
- :mod:`slmkit.docs.schemas` — built-in ``invoice``, ``contract``, ``ticket`` schemas and user JSON Schemas
- :mod:`slmkit.docs.extract` — the model copies each field under a JSON-schema constraint; code
  checks it is document text, normalizes it, finds its source and confidence
- :mod:`slmkit.docs.normalize` — dates (dateparser), amounts (price-parser), currencies (babel)
- :mod:`slmkit.docs.classify` — the kind of a document
- :mod:`slmkit.docs.summarize` — parties from the extraction, subject and section gists chosen from the document
- :mod:`slmkit.docs.batch` — many documents in one process, local worker processes or Ray, results in order
- :mod:`slmkit.docs.organize` — ``slm docs organize``: a resumable index of a folder
- :mod:`slmkit.docs.evaluate` — ``slm docs eval``: field and kind accuracy on a gold file
- :mod:`slmkit.docs.synthetic` — generated documents with known answers, to train and score on
"""
