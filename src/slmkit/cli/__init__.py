"""The `slm` command line. Each verb module in this package parses options, calls one library
function and formats the result; heavy imports happen inside the verbs so `slm --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import typer

from slmkit.cli.common import err
from slmkit.errors import SlmError

app = typer.Typer(
    help="slmkit: load, specialize, shrink, package and serve small language models on your own hardware.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

# One line per area; each module's register() adds its verbs to the app.
VERB_MODULES = [
    "generate",  # slm generate, slm chat
    "models",  # slm models list|show|import|rm
    "kb",  # slm kb ingest|list|show|rm|search|ask|eval
    "serve",  # slm serve
    "shrink",  # slm prune, slm distill
    "train",  # slm pretrain, slm finetune, slm eval
    "export",  # slm export gguf|onnx|docker, slm bench
    "recommend",  # slm recommend train|for|eval
    "docs",  # slm docs extract|classify|organize|eval
    "router",  # slm router train|eval|route|list|rm
]
for _module in VERB_MODULES:
    importlib.import_module(f"slmkit.cli.{_module}").register(app)


def main() -> None:
    """Entry point: user errors become one red line and exit code 1, never a traceback."""
    try:
        app()
    except SlmError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
