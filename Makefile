# slmkit developer commands. `make install` is idempotent: it reinstalls only when
# pyproject.toml changed since the last install.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.slmkit-installed

.PHONY: install demo test test-fast lint bench clean example-finetune example-kb example-kb-heldout example-kb-specialist example-distill example-docs example-router example-router-serve

install: $(STAMP)

# llama.cpp is built from source without OpenMP: in one process with PyTorch, which loads its own
# libgomp under the same name, the two would share one OpenMP runtime, and once any other thread
# has run PyTorch work llama.cpp's barriers stop spinning (8 streams decoded 27 % slower,
# docs/llamacpp.md#openmp). Rebuilt (about 5 minutes) only when the installed one differs.
LLAMA_CPP := $(shell grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if ! $(BIN)/python -c "import sys, llama_cpp; from llama_cpp import llama_cpp as low; \
		sys.exit(b'OPENMP = 1' in low.llama_print_system_info() or '$(LLAMA_CPP)' != 'llama-cpp-python==' + llama_cpp.__version__)" \
		2>/dev/null; then \
		echo "building $(LLAMA_CPP) without OpenMP (about 5 minutes)"; \
		CMAKE_ARGS="-DGGML_OPENMP=OFF" $(BIN)/python -m pip install --quiet --no-cache-dir --force-reinstall \
			--no-deps '$(LLAMA_CPP)'; \
	fi
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The main job: serve the bundled SmolLM2-135M-Instruct with an OpenAI-compatible API and a
# web chat page on http://127.0.0.1:8000 (Ctrl-C stops it).
demo: install
	$(BIN)/slm generate smollm2-135m "What is the capital of France? Answer in one sentence."
	$(BIN)/slm serve --model smollm2-135m

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

# Each bench/*.py measures slmkit against a peer in the same run and prints a markdown table;
# the tables are recorded in docs/benchmarks.md. Not part of the tests.
bench: install
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

# The worked example of docs/finetune.md: base vs LoRA vs full fine-tune on a license-naming task
# built from Debian's copyright files (about 20 minutes on 2 CPU cores).
example-finetune: install
	$(BIN)/python examples/finetune/run_example.py

# The worked example of docs/support-bot.md: a knowledge base of Python's language reference
# (pydoc_data.topics) and its QA eval with SmolLM2-135M (about 10 minutes on 2 CPU cores).
example-kb: install
	$(BIN)/python examples/pydoc-kb/build_corpus.py build/pydoc-kb/docs
	$(BIN)/slm kb ingest pydoc build/pydoc-kb/docs
	$(BIN)/slm kb eval pydoc examples/pydoc-kb/qa.jsonl --mode generate --details build/pydoc-kb/answers.jsonl

# The support bot's headline numbers (docs/support-bot.md): the two tuning sets (pydoc; the zlib,
# fontconfig and base-passwd manuals) and the held-out set (bzip2, libffi and bc manuals from
# /usr/share/doc, never used for a tuning decision) in the default `select` mode, per-question
# details and the accuracy-vs-threshold plot (the threshold rule reads both tuning sets).
example-kb-heldout: install
	$(BIN)/python examples/pydoc-kb/build_corpus.py build/pydoc-kb/docs
	$(BIN)/python examples/tuning-manuals-kb/build_corpus.py build/tuning-manuals-kb/docs
	$(BIN)/python examples/manuals-kb/build_corpus.py build/manuals-kb/docs
	$(BIN)/slm kb ingest pydoc build/pydoc-kb/docs
	$(BIN)/slm kb ingest tuning-manuals build/tuning-manuals-kb/docs
	$(BIN)/slm kb ingest manuals build/manuals-kb/docs
	$(BIN)/slm kb eval pydoc examples/pydoc-kb/qa.jsonl tuning-manuals examples/tuning-manuals-kb/qa.jsonl \
		manuals examples/manuals-kb/qa.jsonl --mode select --details build/kb-eval/answers.jsonl \
		--plot docs/img/kb-threshold.png

# The support bot's grounded-QA specialist (docs/support-bot.md#the-grounded-qa-specialist):
# template questions over Debian manuals that are in neither QA set, LoRA on SmolLM2-135M-Instruct,
# stored as smollm2-135m-kb (then `slm kb ask` uses it by default). A killed run resumes; then
# both QA sets with and without the specialist in one `slm kb eval`.
example-kb-specialist: install
	$(BIN)/python examples/kb-specialist/run_example.py
	$(BIN)/python examples/pydoc-kb/build_corpus.py build/pydoc-kb/docs
	$(BIN)/python examples/manuals-kb/build_corpus.py build/manuals-kb/docs
	$(BIN)/slm kb ingest pydoc build/pydoc-kb/docs
	$(BIN)/slm kb ingest manuals build/manuals-kb/docs
	$(BIN)/slm kb eval pydoc examples/pydoc-kb/qa.jsonl manuals examples/manuals-kb/qa.jsonl \
		--model smollm2-135m-kb,smollm2-135m --mode specialist,select \
		--details build/kb-eval/specialist.jsonl --plot docs/img/kb-threshold.png

# The evidence of docs/distill.md: a student with a third of SmolLM2-135M's parameters built from
# scratch, by pruning, and by pruning + distillation at one token budget; then a distilled draft
# model for assisted decoding (about an hour on 2 CPU cores; a killed run continues where it stopped).
example-distill: install
	$(BIN)/python examples/distill/run_evidence.py
	$(BIN)/python examples/distill/build_draft.py

# The worked example of docs/documents.md: synthetic invoices, contracts and tickets (PDF), a LoRA
# extractor fine-tuned from SmolLM2-135M on the tune layouts, scored on held-out layouts against
# the untuned model and a regex baseline (bench/docs.py). About 1.5 hours on 2 busy CPU cores;
# a killed run continues where it stopped.
example-docs: install
	$(BIN)/python examples/docs/run_example.py

lint: install
	$(BIN)/ruff check src tests bench examples

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache

# The example router of docs/router.md: routes files over four specialists (general chat, the pydoc
# knowledge base, the invoice extractor, a MovieLens recommender) rebuilt from their sources, the
# router trained on train.jsonl and scored on heldout.jsonl (never used for tuning); about a minute.
example-router: install
	$(BIN)/python examples/router/build_routes.py ../shared/data/ml-100k examples/router
	-$(BIN)/slm router rm helpdesk
	$(BIN)/slm router train examples/router/train.jsonl --name helpdesk
	$(BIN)/slm router eval helpdesk examples/router/heldout.jsonl --details build/router/heldout-report.json

# The example router served end to end (docs/router.md#serving-the-example-router): its specialists
# built when missing (the pydoc knowledge base, a MovieLens recommender trained for 3 minutes, the
# router), then `slm serve --model smollm2-135m --model movies --router helpdesk` asked one held-out
# prompt per route with model "auto"; prints who answered and what.
ML100K ?= ../shared/data/ml-100k
example-router-serve: install
	$(BIN)/python -c "from slmkit.kb.index import kb_names; exit('pydoc' not in kb_names())" || \
		($(BIN)/python examples/pydoc-kb/build_corpus.py build/pydoc-kb/docs && $(BIN)/slm kb ingest pydoc build/pydoc-kb/docs)
	$(BIN)/python -c "from slmkit.models import store_path; exit(not (store_path('movies') / 'catalogue.json').is_file())" || \
		$(BIN)/slm recommend train $(ML100K)/ml-100k.inter --items $(ML100K)/ml-100k.item --name movies --max-minutes 3
	$(BIN)/python -c "from slmkit.router.model import router_names; exit('helpdesk' not in router_names())" || \
		$(BIN)/slm router train examples/router/train.jsonl --name helpdesk
	$(BIN)/python examples/router/serve_example.py
