"""The OpenAI-compatible HTTP server (`slm serve`): FastAPI app, model pool, security, metrics."""
