"""Many documents through one per-document function: in this process, in local worker processes
(``--workers N``) or on a Ray cluster (``--ray ADDRESS``, Ray Data).

Every mode runs the same :func:`process_document` with an :class:`Extractor` that each worker
builds once (one model load per process or Ray actor), and every mode yields the results in the
input order, so ``slm docs organize`` writes the same index bytes whichever mode ran it (and
``slm docs extract`` the same lines, apart from the measured ``seconds``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator

from slmkit.errors import InvalidRequestError, SlmError

Run = Callable[[list[str]], dict]  # pages → {"kind", ["kind_confidence"], "values", "fields", ...}


@dataclasses.dataclass(frozen=True)
class Extractor:
    """What reads the documents, as plain data a worker process or Ray actor can receive and build."""

    model: str
    schema: str | None = None  # built-in name or JSON Schema file; None: classify each document first
    constrained: bool = True
    confidence: bool = True
    threads: int | None = None  # torch/llama.cpp threads per worker (None: the backend's default)

    def load(self, load_engine: Callable | None = None) -> Run:
        """Load the model and schemas once; returns pages → result."""
        from slmkit.docs.classify import classify_pages
        from slmkit.docs.extract import extract_pages
        from slmkit.docs.schemas import load_schema

        if load_engine is None:
            from slmkit.engine import load_engine
        # No prefix cache (llama.cpp; other backends drop the option): with it, a document's
        # log-probabilities depend on which documents the engine read before (SmolLM2, one
        # classification: 0.3430 after another document, 0.3438 fresh; without it 0.3432 both ways),
        # and a worker's results must not depend on which documents it was given.
        # No prompt-lookup drafts either (llama.cpp honours the request's only when loaded with
        # prompt_lookup=True): with the copy schema on the f16 default file they gave 1.26x but 11
        # of 12 held-out extractions identical to plain greedy decoding (bench/prompt_lookup.py
        # --task extract, idle): multi-token verification is not bit-identical there, and an
        # extraction must not depend on how it was decoded.
        # One stream: a worker reads one document at a time (llama.cpp keeps KV room per stream).
        engine = load_engine(self.model, prefix_cache_tokens=0, max_batch_size=1,
                             **({"threads": self.threads} if self.threads else {}))
        fixed = load_schema(self.schema) if self.schema else None
        embedder = None
        if fixed is None:  # the kind is classified by the embedding centroids (slmkit.docs.classify)
            from slmkit.embeddings import load_embedding_model

            embedder = load_embedding_model("minilm-l6", **({"threads": self.threads} if self.threads else {}))

        def run(pages: list[str]) -> dict:
            kind, schema = None, fixed
            if schema is None:
                kind = classify_pages(pages, engine, embedder=embedder)
                schema = load_schema(kind["kind"])
            result = extract_pages(pages, schema, engine, constrained=self.constrained,
                                   with_confidence=self.confidence)
            return {"kind": schema.name, **({"kind_confidence": kind["confidence"]} if kind else {}), **result}

        return run


def process_document(path: str, run: Run) -> dict:
    """The step every mode runs for one document: ``{"result", "pages", "seconds"}``, or
    ``{"error"}`` naming why this document could not be read or extracted."""
    from slmkit.docs.pdf import read_pages

    started = time.perf_counter()
    try:
        pages = read_pages(path)
        result = run(pages)
    except SlmError as exc:
        return {"error": exc.message}
    return {"result": result, "pages": len(pages), "seconds": round(time.perf_counter() - started, 3)}


def run_documents(paths: list[str], extractor: Extractor | Run, workers: int = 1, ray: str | None = None,
                  load_engine: Callable | None = None) -> Iterator[dict]:
    """:func:`process_document` for each of ``paths``, yielded in their order. ``workers`` > 1:
    that many local processes; ``ray``: an address (``local`` starts a private Ray on this machine
    with ``workers`` CPUs, ``auto`` joins the running cluster or starts one). ``extractor`` may be a
    plain function only when everything runs in this process."""
    paths = [str(p) for p in paths]
    if workers < 1:
        raise InvalidRequestError(f"--workers must be at least 1, got {workers}.")
    if (workers > 1 or ray) and not isinstance(extractor, Extractor):
        raise InvalidRequestError("Parallel runs need an Extractor (model and schema names), not a function.")
    if not paths:
        return
    if ray:
        yield from _on_ray(paths, extractor, ray, workers)
    elif workers > 1:
        yield from _on_processes(paths, extractor, workers)
    else:
        run = extractor.load(load_engine) if isinstance(extractor, Extractor) else extractor
        for path in paths:
            yield process_document(path, run)


# --- local processes ---------------------------------------------------------------------------

_WORKER_RUN: Run | None = None


def _start_worker(extractor: Extractor) -> None:
    global _WORKER_RUN
    _WORKER_RUN = extractor.load()


def _in_worker(path: str) -> dict:
    return process_document(path, _WORKER_RUN)


def _on_processes(paths: list[str], extractor: Extractor, workers: int) -> Iterator[dict]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Each worker keeps the backend's default thread count (as the sequential run does), even
    # though that oversubscribes the cores.
    # Spawned, not forked: a fork of a process running torch's thread pools can crash the child.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(paths)), mp_context=context,
                             initializer=_start_worker, initargs=(extractor,)) as pool:
        yield from pool.map(_in_worker, paths)  # in input order, each yielded as soon as it and those before are done


# --- Ray ---------------------------------------------------------------------------------------

class RayWorker:
    """A Ray Data actor: builds the extractor once, then runs :func:`process_document` per row.
    The result travels as JSON text (one string column), so Arrow never reshapes the nested values."""

    def __init__(self, extractor: Extractor):
        self.run = extractor.load()

    def __call__(self, row: dict) -> dict:
        return {"index": row["index"], "output": json.dumps(process_document(row["path"], self.run))}


def _on_ray(paths: list[str], extractor: Extractor, address: str, workers: int) -> Iterator[dict]:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address == "local":
            ray.init(num_cpus=workers, **options)
        elif address == "auto":
            try:
                ray.init(address="auto", **options)
            except ConnectionError:
                ray.init(num_cpus=workers, **options)
        else:
            ray.init(address=address, **options)
    try:
        from ray.data import ActorPoolStrategy, DataContext

        context = DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False  # the CLI shows its own
        dataset = ray.data.from_items([{"index": i, "path": p} for i, p in enumerate(paths)])
        dataset = dataset.map(RayWorker, fn_constructor_kwargs={"extractor": extractor}, num_cpus=1,
                              compute=ActorPoolStrategy(size=workers))
        waiting, next_index = {}, 0
        for row in dataset.iter_rows():  # streamed as rows finish; put back in input order below
            waiting[row["index"]] = json.loads(row["output"])
            while next_index in waiting:
                yield waiting.pop(next_index)
                next_index += 1
    finally:
        if started_here:
            ray.shutdown()
