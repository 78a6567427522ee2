"""Several LoRA adapters served on one shared base (torch engine): a batch mixing sequences of
different adapters (and the plain base) gives, greedily, exactly what each adapter merged into
its own model gives alone; the adapters cost only their low-rank weights; ranks may differ."""

import shutil
import threading

import pytest

PROMPTS = ["The for statement is used", "Exceptions are raised", "A class definition", "The import statement"]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    """Two random (non-zero) LoRA adapters of the tiny model, each also merged into a model of its own."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from slmkit.engine.torch_backend import load_causal_lm

    root = tmp_path_factory.mktemp("adapters")
    out = {}
    for seed, name in enumerate(["alpha", "beta"], 1):
        torch.manual_seed(seed)
        config = LoraConfig(r=4 if name == "alpha" else 2, lora_alpha=8, target_modules="all-linear", init_lora_weights=False,
                            task_type="CAUSAL_LM")
        peft_model = get_peft_model(load_causal_lm(tiny_model_dir), config)
        with torch.no_grad():  # big enough to change greedy choices
            for parameter_name, parameter in peft_model.named_parameters():
                if "lora_B" in parameter_name:
                    parameter.normal_(0, 0.5)
        peft_model.save_pretrained(root / name)
        merged = PeftModel.from_pretrained(load_causal_lm(tiny_model_dir), str(root / name)).merge_and_unload()
        merged.save_pretrained(root / f"{name}-merged")
        for file in tiny_model_dir.iterdir():
            if "token" in file.name or file.suffix == ".jinja" or file.name == "generation_config.json":
                shutil.copy(file, root / f"{name}-merged" / file.name)
        out[name] = root / name
    return out


def greedy(engine, prompt, tokens=12):
    from slmkit.engine import GenerationRequest, SamplingParams
    from slmkit.generate import collect

    return collect(engine.stream(GenerationRequest(prompt=prompt, max_new_tokens=tokens,
                                                   sampling=SamplingParams(temperature=0)))).token_ids


def test_mixed_adapter_batch_equals_each_merged_model_alone(tiny_model_dir, adapters):
    from slmkit.engine.torch_backend import TorchEngine

    shared = TorchEngine(tiny_model_dir, adapters=adapters, max_batch_size=8)
    views = {"alpha": shared.adapter("alpha"), "beta": shared.adapter("beta"), None: shared}
    jobs = [(adapter, prompt) for prompt in PROMPTS for adapter in views]
    results, barrier = {}, threading.Barrier(len(jobs))

    def run(adapter, prompt):
        barrier.wait()  # all start together, so they share decoding steps
        results[(adapter, prompt)] = greedy(views[adapter], prompt)

    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert shared.scheduler.mixed_adapter_steps > 0  # the batch really mixed adapters

    alone = {"alpha": TorchEngine(adapters["alpha"].parent / "alpha-merged"),
             "beta": TorchEngine(adapters["beta"].parent / "beta-merged"), None: TorchEngine(tiny_model_dir)}
    for adapter, prompt in jobs:
        assert results[(adapter, prompt)] == greedy(alone[adapter], prompt), (adapter, prompt)
    # The adapters change the output (the comparison above would not notice a no-op adapter).
    assert len({tuple(results[(a, PROMPTS[0])]) for a in views}) == 3
    for engine in (shared, *alone.values()):
        engine.close()


def test_adapters_cost_only_their_own_weights(tiny_model_dir, adapters):
    from safetensors.torch import load_file

    from slmkit.engine.lora_stack import STACK_DTYPE
    from slmkit.engine.torch_backend import TorchEngine

    base = TorchEngine(tiny_model_dir)
    shared = TorchEngine(tiny_model_dir, adapters=adapters)
    assert STACK_DTYPE.itemsize == 2  # the stacks are 16-bit: half of the float32 files
    alpha = sum(t.numel() * STACK_DTYPE.itemsize for t in load_file(adapters["alpha"] / "adapter_model.safetensors").values())
    # Held once (peft's own copies are dropped); beta (r=2) is zero-padded to alpha's r=4 in the stacks.
    assert shared.memory_bytes == base.memory_bytes + len(adapters) * alpha
    assert shared.token_logprobs([5, 6, 7]) == pytest.approx(base.token_logprobs([5, 6, 7]), abs=1e-5)
    assert shared.adapter("alpha").token_logprobs([5, 6, 7]) != pytest.approx(base.token_logprobs([5, 6, 7]), abs=1e-3)
    base.close()
    shared.close()


def test_continuation_scores_through_an_adapter_use_it(tiny_model_dir, adapters):
    from slmkit.engine.torch_backend import TorchEngine

    shared = TorchEngine(tiny_model_dir, adapters=adapters)
    alpha = shared.adapter("alpha")
    prompt, continuations = [5, 6, 7, 8], [[9, 10, 11], [12], [13, 14]]
    got = alpha.continuation_logprobs(prompt, continuations)
    for row, continuation in zip(got, continuations, strict=True):
        assert row == pytest.approx(alpha.token_logprobs(prompt + continuation)[len(prompt) - 1:], abs=1e-4)
    assert got[0] != pytest.approx(shared.continuation_logprobs(prompt, continuations)[0], abs=1e-3)
    shared.close()


def test_bad_adapters_are_refused(tiny_model_dir, tmp_path, adapters):
    from slmkit.engine.torch_backend import TorchEngine
    from slmkit.errors import CorruptModelError, InvalidRequestError

    with pytest.raises(InvalidRequestError, match="not a LoRA adapter"):
        TorchEngine(tiny_model_dir, adapters={"x": tmp_path})
    pickled = tmp_path / "pickled"
    shutil.copytree(adapters["alpha"], pickled)
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    with pytest.raises(CorruptModelError, match="pickle"):
        TorchEngine(tiny_model_dir, adapters={"x": pickled})
    engine = TorchEngine(tiny_model_dir, adapters={"alpha": adapters["alpha"]})
    with pytest.raises(InvalidRequestError, match="No adapter 'gamma'"):
        engine.adapter("gamma")
    engine.close()


def test_server_serves_adapters_on_one_base(tiny_model_dir, adapters):
    from fastapi.testclient import TestClient

    from slmkit.engine import GenerationRequest, SamplingParams
    from slmkit.engine.torch_backend import TorchEngine
    from slmkit.generate import collect
    from slmkit.server.app import create_app
    from slmkit.server.settings import ServerSettings

    settings = ServerSettings(models=[str(tiny_model_dir)], embedding_models=[], allowed_hosts=["testserver"],
                              adapters={name: str(path) for name, path in adapters.items()})
    messages = [{"role": "user", "content": "What does the pass statement do?"}]
    with TestClient(create_app(settings)) as client:
        assert {"alpha", "beta", tiny_model_dir.name} <= {m["id"] for m in client.get("/v1/models").json()["data"]}
        answers = {name: client.post("/v1/chat/completions", json={"model": name, "messages": messages,
                                                                   "max_tokens": 10, "temperature": 0}).json()
                   for name in ("alpha", "beta")}
        pool = client.app.state.pool
        assert list(pool.loaded) == [tiny_model_dir.name]  # one engine: the base holds both adapters
    merged = TorchEngine(adapters["alpha"].parent / "alpha-merged")
    expected = collect(merged.stream(GenerationRequest(messages=messages, max_new_tokens=10,
                                                       sampling=SamplingParams(temperature=0)))).text
    assert answers["alpha"]["choices"][0]["message"]["content"] == expected
    assert answers["alpha"]["model"] == "alpha" and answers["beta"]["choices"][0]["message"]["content"] != expected
    merged.close()


def test_serve_adapter_option_names_the_adapter():
    from slmkit.cli.serve import _adapter_option

    assert _adapter_option("legal=./adapters/legal-v2") == ("legal", "./adapters/legal-v2")
    assert _adapter_option("support-lora") == ("support-lora", "support-lora")
    assert _adapter_option("/data/adapters/billing/") == ("billing", "/data/adapters/billing/")


def test_adapter_named_like_a_model_is_refused(tiny_model_dir, adapters):
    from slmkit.errors import InvalidRequestError
    from slmkit.server.pool import ModelPool
    from slmkit.server.settings import ServerSettings

    with pytest.raises(InvalidRequestError, match="already a model id"):
        ModelPool(ServerSettings(models=[str(tiny_model_dir)], embedding_models=[],
                                 adapters={tiny_model_dir.name: str(adapters["alpha"])}))


def test_memory_budget_counts_the_adapters_before_loading(tiny_model_dir, adapters, monkeypatch):
    """--max-memory makes room for the base and its adapters (16-bit stacks), not the base alone."""
    import asyncio

    from safetensors.torch import load_file

    from slmkit.server.pool import ModelPool, _estimate_bytes
    from slmkit.server.settings import ServerSettings

    pool = ModelPool(ServerSettings(models=[str(tiny_model_dir)], embedding_models=[], max_memory_bytes=10**12,
                                    adapters={name: str(path) for name, path in adapters.items()}))
    asked = []
    monkeypatch.setattr(pool, "_make_room", asked.append)

    async def load():
        (await pool.checkout("alpha")).release()

    asyncio.run(load())
    adapter_numbers = sum(t.numel() for path in adapters.values()
                          for t in load_file(path / "adapter_model.safetensors").values())
    assert asked == [_estimate_bytes(tiny_model_dir) + 2 * adapter_numbers]
    pool.close()
