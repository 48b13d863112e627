"""Any causal LM through ``model=hf model.name_or_path=<folder>``: a Llama-style and a GPT-2-style
model, saved to folders, run every CKL strategy and continual pre-training; LoRA finds each one's
attention projections, K-Adapter its blocks; summary.json and the loggers name the real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _cli import run_continual
from test_lm_runs import CORPORA, KNOWLEDGE

from continual.types import ConfigError

ARCHITECTURES = ("tiny-llama", "tiny-gpt2")
HF_KNOWLEDGE = [a for a in KNOWLEDGE if not a.startswith("model=")] + ["model=hf"]
HF_CORPORA = [a for a in CORPORA if not a.startswith(("model=", "model."))] + ["model=hf"]


def save_tiny_model(arch: str, folder: Path) -> Path:
    """A random 2-block, 32-wide causal LM of ``arch`` and the byte tokenizer, saved to ``folder``."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from continual.models.lm import byte_tokenizer

    tok = byte_tokenizer()
    ids = {"vocab_size": len(tok), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
           "pad_token_id": tok.pad_token_id}
    torch.manual_seed(0)
    if arch == "tiny-llama":
        model = LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                             num_key_value_heads=4, intermediate_size=64,
                                             max_position_embeddings=256, **ids))
    else:
        model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, **ids))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {arch: save_tiny_model(arch, root / arch) for arch in ARCHITECTURES}


def _compose(*overrides: str):
    from hydra import compose, initialize_config_module

    from continual.config import register_configs

    register_configs()
    with initialize_config_module(config_module="continual.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _load(folder: Path, **options):
    from continual.models.lm import load_causal_lm

    return load_causal_lm(str(folder), **options)


# ---------------------------------------------------------------------- loading and naming
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_model_hf_loads_a_saved_folder_in_the_dtype_asked(folders, dtype):
    from continual.config import instantiate_checked

    cfg = _compose("model=hf", f"model.name_or_path={folders['tiny-gpt2']}", f"model.dtype={dtype}")
    model, tok = instantiate_checked(cfg.model, "model")
    assert type(model).__name__ == "GPT2LMHeadModel" and len(tok) == 259
    assert {p.dtype for p in model.parameters()} == {getattr(torch, dtype)}


def test_model_hf_without_name_or_path_says_what_to_add():
    from continual.experiment import build_lm_from_config
    from continual.streams.text import KnowledgeTextStream

    cfg = _compose("model=hf")
    with pytest.raises(ConfigError, match=r"model\.name_or_path="):
        build_lm_from_config(cfg.model, KnowledgeTextStream(), seed=0)


def test_an_unknown_dtype_is_refused_with_the_choices(folders):
    with pytest.raises(ConfigError, match="bfloat16"):
        _load(folders["tiny-llama"], dtype="float8")


def test_summary_and_loggers_name_the_model_by_its_folder_or_hub_name(folders):
    from omegaconf import OmegaConf

    from continual.experiment import summary_names
    from continual.loggers import run_names

    folder = str(folders["tiny-gpt2"])
    for given, shown in ((folder, "hf:tiny-gpt2"), (folder + "/", "hf:tiny-gpt2"),
                         ("HuggingFaceTB/SmolLM2-135M", "hf:HuggingFaceTB/SmolLM2-135M")):
        cfg = _compose("model=hf", f"model.name_or_path={given}")
        assert summary_names(cfg, {"model": "hf"}, None)["model"] == shown
        assert run_names(OmegaConf.to_container(cfg, resolve=True), {"model": "hf"})["model"] == shown
    assert summary_names(_compose("model=tiny_lm"), {"model": "tiny_lm"}, None)["model"] == "tiny_lm"


# ---------------------------------------------------------------------- per-architecture parts
@pytest.mark.parametrize(("arch", "targets"), [("tiny-llama", ["q_proj", "v_proj"]), ("tiny-gpt2", ["c_attn"])])
def test_lora_adapts_peft_s_attention_projections_of_each_architecture(folders, arch, targets):
    from continual.strategies.ckl.lora import LoRA

    model, tok = _load(folders[arch])
    lora = LoRA(model, tok)
    assert lora.target_modules == targets
    adapted = {name.rsplit(".", 1)[-1] for name, mod in lora.model.named_modules() if hasattr(mod, "lora_A")}
    assert adapted == set(targets)


def test_lora_target_modules_given_override_the_architecture_s(folders):
    from continual.strategies.ckl.lora import LoRA

    model, tok = _load(folders["tiny-gpt2"])
    lora = LoRA(model, tok, target_modules=["c_proj"])
    adapted = {name.rsplit(".", 1)[-1] for name, mod in lora.model.named_modules() if hasattr(mod, "lora_A")}
    assert adapted == {"c_proj"}  # both the attention's and the MLP's c_proj


def test_lora_target_modules_the_model_lacks_are_named_in_the_error(folders):
    from continual.strategies.ckl.lora import LoRA

    model, tok = _load(folders["tiny-gpt2"])
    with pytest.raises(ConfigError, match=r"\['q_proj'\].*strategy\.target_modules"):
        LoRA(model, tok, target_modules=["q_proj", "c_attn"])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_k_adapter_reads_the_blocks_of_each_architecture_and_changes_the_output(folders, arch):
    from continual.strategies.ckl.kadapter import KAdapter

    model, tok = _load(folders[arch])
    x = torch.tensor([tok("The capital of France is")["input_ids"]])
    with torch.no_grad():
        base = model(input_ids=x).logits
    strategy = KAdapter(model, tok, layer_ids=[1, 2])
    loss = strategy.lm_loss(x, x)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in strategy.adapters.blocks.parameters()
               if p.requires_grad)
    with torch.no_grad():
        assert not torch.allclose(strategy.predict(x), base)


def test_probes_reach_generate_without_token_type_ids(folders):
    from continual.lm.evaluation import greedy_answers

    model, tok = _load(folders["tiny-llama"])
    tok.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    assert "token_type_ids" in tok(["Paris"])  # the tokenizer adds them, as some do
    seen, generate = [], model.generate
    model.generate = lambda **kw: seen.append(set(kw)) or generate(**kw)
    out = greedy_answers(model, tok, ["The capital of France is", "Hi"], max_new_tokens=2)
    assert len(out) == 2 and seen and all("token_type_ids" not in kw for kw in seen)


# ---------------------------------------------------------------------- whole runs
@pytest.mark.parametrize("strategy", ["ckl_vanilla", "ckl_recadam", "ckl_mixreview", "ckl_modular",
                                      "ckl_ltm_retrieval"])
def test_the_other_ckl_strategies_run_a_knowledge_stream_on_a_gpt2_style_model(folders, tmp_path, strategy):
    from continual.experiment import run_experiment

    cfg = _compose(*HF_KNOWLEDGE, f"model.name_or_path={folders['tiny-gpt2']}", f"strategy={strategy}",
                   "checkpoint.enabled=false")
    summary = run_experiment(cfg, out_dir=str(tmp_path), choices={"model": "hf", "strategy": strategy},
                             report=False)
    assert summary["model"] == "hf:tiny-gpt2" and summary["strategy"] == strategy
    assert summary["steps"] > 0 and summary["probe_sizes"]["IL"] == 12


@pytest.mark.slow
def test_lora_and_k_adapter_run_on_llama_and_gpt2_folders_through_the_cli(folders, tmp_path):
    paths = ",".join(str(folders[a]) for a in ARCHITECTURES)
    r = run_continual("-m", *HF_KNOWLEDGE, f"model.name_or_path={paths}", "strategy=ckl_lora,ckl_kadapter",
                      f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = {(s["model"], s["strategy"]): s for s in
            (json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/summary.json"))}
    assert set(runs) == {(f"hf:{a}", s) for a in ARCHITECTURES for s in ("ckl_lora", "ckl_kadapter")}
    assert all(s["steps"] > 0 and s["score_name"] == "exact_match" for s in runs.values())


@pytest.mark.slow
def test_continual_pre_training_runs_on_llama_and_gpt2_folders_through_the_cli(folders, tmp_path):
    paths = ",".join(str(folders[a]) for a in ARCHITECTURES)
    r = run_continual("-m", *HF_CORPORA, f"model.name_or_path={paths}", "stream.steps_per_task=4",
                      f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/summary.json")]
    assert sorted(s["model"] for s in summaries) == sorted(f"hf:{a}" for a in ARCHITECTURES)
    assert all(s["strategy"] == "lm_vanilla" and s["steps"] == 12 for s in summaries)
    assert all(s["final_avg_loss"] < 6.0 for s in summaries)  # finite, below log(259) + a margin
