"""Real `slm finetune` processes: killed with SIGKILL and resumed, and data-parallel on 2 CPU
processes (torchrun, gloo) against one process with the same global batch."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from training_helpers import VENV_BIN, json_output, run_slm

COMMON = ["--method", "full", "--batch-size", "4", "--micro-batch-size", "4", "--seq-len", "64",
          "--learning-rate", "3e-3", "--validation-fraction", "0.1", "--json"]


def test_kill_9_then_resume_repeats_the_uninterrupted_losses(model_copy, chat_file, tmp_path):
    home = tmp_path / "home"
    steps = ["--max-steps", "60", "--checkpoint-every", "5"]
    reference = json_output(run_slm(["finetune", str(model_copy), str(chat_file), *COMMON, *steps,
                                     "--name", "reference"], home))
    checkpoints = tmp_path / "ck"
    args = ["finetune", str(model_copy), str(chat_file), *COMMON, *steps, "--name", "resumed",
            "--checkpoint-dir", str(checkpoints)]
    env = {**os.environ, "SLM_HOME": str(home), "OMP_NUM_THREADS": "1"}
    victim = subprocess.Popen([str(VENV_BIN / "slm"), *args], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (checkpoints / "step-00000010" / "COMPLETE").exists():
        assert victim.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert not (home / "models" / "resumed").exists()

    refused = run_slm(args, home)
    assert refused.returncode == 1 and "--resume" in refused.stderr
    resumed = json_output(run_slm([*args, "--resume"], home))
    assert resumed["metrics"]["resumed_from_step"] >= 10
    assert len(resumed["losses"]) == 60
    assert resumed["losses"] == pytest.approx(reference["losses"], abs=1e-6)
    assert resumed["metrics"]["validation_loss"] == pytest.approx(reference["metrics"]["validation_loss"], abs=1e-6)
    assert not checkpoints.exists()  # removed once the artifact is written


def test_two_process_ddp_matches_one_process(model_copy, chat_file, tmp_path):
    home = tmp_path / "home"
    steps = ["--max-steps", "6", "--checkpoint-every", "3"]
    single = json_output(run_slm(["finetune", str(model_copy), str(chat_file), *COMMON, *steps,
                                  "--name", "single"], home))
    launcher = [str(VENV_BIN / "torchrun"), "--standalone", "--nproc-per-node", "2"]
    parallel = json_output(run_slm(["finetune", str(model_copy), str(chat_file), *COMMON, *steps,
                                    "--name", "parallel", "--micro-batch-size", "1"], home, launcher=launcher))
    assert parallel["losses"] == pytest.approx(single["losses"], rel=1e-5)
    assert parallel["losses"][0] > parallel["losses"][-1]
    assert parallel["metrics"]["validation_loss"] == pytest.approx(single["metrics"]["validation_loss"], rel=1e-5)
    assert parallel["metrics"]["train_tokens"] == single["metrics"]["train_tokens"]
