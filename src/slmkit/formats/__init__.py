"""Model file formats: reading GGUF into Hugging Face artifacts (and, later, exporting)."""
