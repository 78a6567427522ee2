"""The `slm` command line, driven as a user would (in-process runner and real subprocesses)."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from slmkit.cli import app

runner = CliRunner()


def run_slm(*args, stdin=None, env=None):
    return subprocess.run([sys.executable, "-m", "slmkit", *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=300)


def test_generate_json(tiny_model_dir):
    result = runner.invoke(app, ["generate", str(tiny_model_dir), "Hello", "-n", "8", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["completion_tokens"] == 8 and data["finish_reason"] == "length"
    assert data["prompt_tokens"] > 0 and data["decode_tokens_per_s"] > 0


def test_generate_streams_the_same_text_as_the_library(tiny_model_dir, tiny_engine):
    from slmkit.generate import generate

    expected = generate(tiny_engine, "def f():", max_new_tokens=12).text
    result = runner.invoke(app, ["generate", str(tiny_model_dir), "def f():", "-n", "12"])
    assert result.exit_code == 0
    assert result.stdout == expected + "\n"


def test_prompt_from_stdin(tiny_model_dir):
    from_arg = runner.invoke(app, ["generate", str(tiny_model_dir), "Hello", "-n", "6", "--json"])
    from_stdin = runner.invoke(app, ["generate", str(tiny_model_dir), "-", "-n", "6", "--json"], input="Hello")
    assert json.loads(from_arg.stdout)["text"] == json.loads(from_stdin.stdout)["text"]


def test_user_errors_are_one_line_without_traceback(tiny_model_dir, slm_home):
    import os

    env = {**os.environ, "SLM_HOME": str(slm_home)}
    unknown = run_slm("generate", "no-such-model", "hi", env=env)
    assert unknown.returncode == 1
    assert unknown.stderr.strip().startswith("error: Unknown model 'no-such-model'. Known models:")
    assert "Traceback" not in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1

    too_long = run_slm("generate", str(tiny_model_dir), "word " * 600, "--raw", "-n", "4", env=env)
    assert too_long.returncode == 1 and "over the model's context of 512 tokens" in too_long.stderr
    assert "Traceback" not in too_long.stderr


def test_help_does_not_import_torch():
    code = "import sys; from slmkit.cli import app; print('torch' in sys.modules, 'transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False False"


@pytest.mark.parametrize("command", [["generate"], ["chat"], ["models", "list"], ["models", "show"],
                                     ["models", "import"], ["models", "rm"]])
def test_every_command_has_help_with_an_example(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Example:" in result.stdout


def test_models_commands(tiny_model_dir, slm_home):
    assert runner.invoke(app, ["models", "import", str(tiny_model_dir), "--name", "t1"]).exit_code == 0
    listed = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    assert [m["name"] for m in listed] == ["t1"] and listed[0]["card"]["stage"] == "import"
    shown = json.loads(runner.invoke(app, ["models", "show", "t1", "--json"]).stdout)
    assert shown["lineage"] == ["t1"] and shown["card"]["content_sha256"]
    table = runner.invoke(app, ["models", "list"]).stdout
    assert "t1" in table and "LlamaForCausalLM" in table
    assert runner.invoke(app, ["models", "rm", "t1"]).exit_code == 0
    assert json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout) == []


def test_chat_keeps_history_and_resets(tiny_model_dir, tiny_engine):
    from slmkit.chat import Conversation

    conversation = Conversation(tiny_engine, system="sys", max_new_tokens=5)
    first = "".join(c.text for c in conversation.say("one"))
    "".join(c.text for c in conversation.say("two"))
    assert [m["role"] for m in conversation.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert conversation.messages[2]["content"] == first
    conversation.reset()
    assert conversation.messages == [{"role": "system", "content": "sys"}]

    session = run_slm("chat", str(tiny_model_dir), "-n", "4", stdin="hello\n/reset\nagain\n/exit\n")
    assert session.returncode == 0, session.stderr
    assert "History cleared." in session.stderr and session.stderr.count("tok/s") == 2


def test_generate_with_a_draft_model(tiny_model_dir):
    plain = json.loads(runner.invoke(app, ["generate", str(tiny_model_dir), "Hello", "-n", "12", "--json"]).stdout)
    result = runner.invoke(app, ["generate", str(tiny_model_dir), "Hello", "-n", "12", "--json",
                                 "--draft", str(tiny_model_dir)])
    assisted = json.loads(result.stdout)
    assert assisted["text"] == plain["text"]
    assert assisted["draft_tokens"] > 0 and assisted["accepted_draft_tokens"] == assisted["draft_tokens"]


def test_draft_tokens_sets_how_many_tokens_each_step_drafts(tiny_model_dir):
    result = runner.invoke(app, ["generate", str(tiny_model_dir), "Hello", "-n", "12", "--json",
                                 "--draft", str(tiny_model_dir), "--draft-tokens", "2"])
    assisted = json.loads(result.stdout)
    # A perfect draft: after the first token, steps draft 2, 2, 2 and (room for one) 1 token, each
    # keeping them all and adding one of the model's own: 1 + 3 + 3 + 3 + 2 = 12 tokens.
    assert assisted["draft_tokens"] == 7 == assisted["accepted_draft_tokens"]
    bad = runner.invoke(app, ["generate", str(tiny_model_dir), "Hello", "--draft", str(tiny_model_dir),
                              "--draft-tokens", "0"])
    assert bad.exit_code != 0
