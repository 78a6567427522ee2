"""`slm recommend train|for|eval` driven as a user would."""

import json

from rec_helpers import cyclic_rows, write_csv
from typer.testing import CliRunner

from slmkit.cli import app

runner = CliRunner()


def test_train_for_and_eval_from_the_command_line(tmp_path, slm_home):
    log = write_csv(tmp_path / "log.csv", cyclic_rows(users=20, length=10))
    trained = runner.invoke(app, ["recommend", "train", str(log), "--name", "cli-rec", "--max-steps", "6",
                                  "--batch-size", "8", "--hidden-size", "16", "--layers", "1", "--max-length", "8",
                                  "--validate-every", "3", "--threads", "1", "--json"])
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 6 and [p["step"] for p in summary["curve"]] == [3, 6]

    for_user = runner.invoke(app, ["recommend", "for", "cli-rec", "u3", "-k", "4", "--json"])
    assert for_user.exit_code == 0, for_user.output
    result = json.loads(for_user.stdout)
    assert result["source"] == "model" and len(result["items"]) == 4

    for_history = runner.invoke(app, ["recommend", "for", "cli-rec", "--history", "i1,i2", "-k", "3"])
    assert for_history.exit_code == 0 and "cli-rec" in for_history.stdout and "│ 3 │" in for_history.stdout

    evaluated = runner.invoke(app, ["recommend", "eval", "cli-rec", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert report["users"] == 20 and set(report["baselines"]) == {"MostPop", "Markov-1", "ItemKNN"}


def test_bad_log_is_one_line_naming_file_and_line(tmp_path, slm_home):
    from slmkit.cli import main

    log = tmp_path / "bad.csv"
    log.write_text("user,item,timestamp\nu1,a,1\nu1,b,soon\n")
    import subprocess
    import sys

    completed = subprocess.run([sys.executable, "-m", "slmkit", "recommend", "train", str(log), "--name", "x"],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1
    assert f"{log}:3: timestamp 'soon'" in completed.stderr and "Traceback" not in completed.stderr
    assert main  # the entry point the subprocess ran


def test_for_needs_a_user_or_a_history(slm_home):
    result = runner.invoke(app, ["recommend", "for", "anything"])
    assert result.exit_code != 0
