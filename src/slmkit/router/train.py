"""``slm router train``: a router from a routes file.

Each prompt becomes a sentence vector of the embedding model (``minilm-l6`` by default, run
offline through :mod:`slmkit.embeddings`); a multinomial logistic regression (scikit-learn)
maps vectors to routes. The regularization ``C`` and the confidence threshold are chosen on a
stratified validation split **of the training routes** (never on an evaluation file): the
threshold is the one that makes the most validation prompts land on the right specialist when
every prediction below it goes to the fallback (ties: the lowest threshold). The final
classifier is then fitted on all training routes.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from slmkit.artifact import Card, finalize_card, staged_directory, write_text_atomic
from slmkit.errors import InvalidRequestError
from slmkit.router.model import CLASSIFIER_FILE, CONFIG_FILE, ROUTING_CHARS, routers_dir, softmax
from slmkit.router.routes import GENERAL, read_routes


@dataclasses.dataclass
class RouterConfig:
    """Router settings; the defaults are the ones docs/router.md measures."""

    embedding_model: str = "minilm-l6"  # sentence vectors for the classifier
    fallback: str = GENERAL  # who answers when the router is unsure
    threshold: float | None = None  # None = chosen on the validation split
    validation_fraction: float = 0.2  # of the training routes, for choosing C and the threshold
    regularization: tuple[float, ...] = (1.0, 10.0, 100.0)  # logistic regression C values tried
    max_tokens: int = 128  # prompts are cut to this many tokens before embedding
    seed: int = 0

    def check(self) -> None:
        if not 0.05 <= self.validation_fraction <= 0.5:
            raise InvalidRequestError("validation_fraction must be between 0.05 and 0.5.")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise InvalidRequestError(f"threshold must be between 0 and 1, got {self.threshold}.")
        if not 8 <= self.max_tokens <= 512:
            raise InvalidRequestError("max_tokens must be between 8 and 512.")


@dataclasses.dataclass
class RouterResult:
    name: str
    path: Path
    card: Card
    metrics: dict


def choose_threshold(probabilities: np.ndarray, routes: Sequence[str], truth: Sequence[str],
                     fallback: str) -> tuple[float, float]:
    """(threshold, accuracy): the confidence below which the fallback answers that is right
    most often on these examples; ties go to the lowest threshold."""
    best = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    predicted = np.array([routes[i] for i in best])
    truth = np.asarray(truth)
    best_threshold, best_accuracy = 0.0, -1.0
    for threshold in [0.0, *sorted(set(confidence.round(6).tolist()))]:
        chosen = np.where(confidence < threshold, fallback, predicted)
        accuracy = float((chosen == truth).mean())
        if accuracy > best_accuracy + 1e-12:
            best_threshold, best_accuracy = float(threshold), accuracy
    return best_threshold, best_accuracy


def fit_classifier(vectors: np.ndarray, labels: Sequence[str], regularization: float, seed: int):
    """(weight, bias, routes) of a multinomial logistic regression; two routes give a
    two-row weight whose softmax equals the binary model's sigmoid."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=regularization, max_iter=5000, random_state=seed).fit(vectors, labels)
    # C order: scikit-learn may hand back a Fortran-ordered array, which safetensors would store scrambled.
    weight = np.ascontiguousarray(model.coef_, dtype=np.float32)
    bias = np.ascontiguousarray(model.intercept_, dtype=np.float32)
    if weight.shape[0] == 1:
        weight = np.ascontiguousarray(np.vstack([np.zeros_like(weight), weight]))
        bias = np.array([0.0, bias[0]], dtype=np.float32)
    return weight, bias, [str(c) for c in model.classes_]


def train_router(routes_files: Sequence[str | Path], name: str, config: RouterConfig | None = None,
                 progress=None) -> RouterResult:
    """Train router ``name`` on ``routes_files`` and write it to ``$SLM_HOME/routers/NAME``."""
    from safetensors.numpy import save_file
    from sklearn.model_selection import train_test_split

    from slmkit.data import data_sha256
    from slmkit.embeddings import load_embedding_model
    from slmkit.models import check_name

    config = config or RouterConfig()
    config.check()
    destination = routers_dir() / check_name(name)
    if destination.exists():
        raise InvalidRequestError(f"Cannot write router {name}: it exists. Delete {destination.name} from the "
                                  "routers folder (slm router rm) or choose another --name.")
    examples = read_routes(routes_files)
    counts = Counter(e.route for e in examples)
    if len(counts) < 2:
        raise InvalidRequestError(f"A router needs at least two routes; the routes file has only {list(counts)}.")
    too_few = [route for route, n in counts.items() if n < 4]
    if too_few:
        raise InvalidRequestError(f"Routes {', '.join(too_few)} have fewer than 4 examples; give each route at "
                                  "least 4 (ideally 20 or more) prompts.")
    _report(progress, "embedding", 0, len(examples))
    embedder = load_embedding_model(config.embedding_model)
    embedder.model.max_seq_length = config.max_tokens
    vectors = embedder.embed([e.prompt[:ROUTING_CHARS] for e in examples])
    labels = [e.route for e in examples]
    _report(progress, "choosing the threshold", 1, 3)
    train_x, valid_x, train_y, valid_y = train_test_split(vectors, labels, test_size=config.validation_fraction,
                                                          stratify=labels, random_state=config.seed)
    trials = []
    for c in config.regularization:
        weight, bias, routes = fit_classifier(train_x, train_y, c, config.seed)
        probabilities = softmax(valid_x @ weight.T + bias)
        if config.threshold is None:
            threshold, accuracy = choose_threshold(probabilities, routes, valid_y, config.fallback)
        else:
            threshold = config.threshold
            accuracy = choose_threshold(probabilities, routes, valid_y, config.fallback)[1]
        raw = float(np.mean(np.array([routes[i] for i in probabilities.argmax(axis=1)]) == np.array(valid_y)))
        trials.append({"C": c, "threshold": threshold, "validation_accuracy": accuracy,
                       "validation_accuracy_without_threshold": raw})
    chosen = max(trials, key=lambda t: (t["validation_accuracy"], -t["C"]))  # ties: the strongest regularization
    threshold = chosen["threshold"] if config.threshold is None else config.threshold
    _report(progress, "fitting on all routes", 2, 3)
    weight, bias, routes = fit_classifier(vectors, labels, chosen["C"], config.seed)
    metrics = {"validation_accuracy": chosen["validation_accuracy"],
               "validation_accuracy_without_threshold": chosen["validation_accuracy_without_threshold"],
               "regularization_C": chosen["C"], "threshold": threshold, "trials": trials,
               "train_examples": len(examples), "validation_examples": len(valid_y), "routes": dict(counts)}
    files = [Path(f) for f in routes_files]
    card = Card(name=name, stage="router", architecture="LogisticRegression", format="router",
                parameters=int(weight.size + bias.size),
                args={**dataclasses.asdict(config), "routes_files": [str(f) for f in files],
                      "data_sha256": data_sha256(files)}, metrics=metrics)
    with staged_directory(destination) as staging:
        save_file({"weight": weight, "bias": bias}, str(staging / CLASSIFIER_FILE))
        write_text_atomic(staging / CONFIG_FILE, json.dumps(
            {"routes": routes, "threshold": threshold, "fallback": config.fallback,
             "embedding_model": config.embedding_model, "max_tokens": config.max_tokens}, indent=2) + "\n")
        finalize_card(staging, card)
    _report(progress, "done", 3, 3)
    return RouterResult(name, destination, card, metrics)


def _report(progress, step: str, done: int, total: int) -> None:
    if progress is not None:
        progress(step, done, total)
