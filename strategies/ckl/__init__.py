"""Continual knowledge learning (CKL) strategies for causal LMs (Jang et al., ICLR 2022).

One file per method; shared mechanics in ``continual.strategies.ckl.base``.
"""

CKL_METHODS = {
    "vanilla": "continual.strategies.ckl.vanilla.Vanilla",
    "recadam": "continual.strategies.ckl.recadam.RecAdamStrategy",
    "mixreview": "continual.strategies.ckl.mixreview.MixReview",
    "lora": "continual.strategies.ckl.lora.LoRA",
    "kadapter": "continual.strategies.ckl.kadapter.KAdapter",
    "modular": "continual.strategies.ckl.modular.Modular",
    "ltm_retrieval": "continual.strategies.ckl.ltm_retrieval.LTMRetrieval",
}
