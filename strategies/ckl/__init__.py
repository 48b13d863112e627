"""Continual knowledge learning (CKL) strategies for causal LMs (Jang et al., ICLR 2022).

One file per method; shared mechanics in ``strategies.ckl.base``.
"""

CKL_METHODS = {
    "vanilla": "strategies.ckl.vanilla.Vanilla",
    "recadam": "strategies.ckl.recadam.RecAdamStrategy",
    "mixreview": "strategies.ckl.mixreview.MixReview",
    "lora": "strategies.ckl.lora.LoRA",
    "kadapter": "strategies.ckl.kadapter.KAdapter",
    "ltm_retrieval": "strategies.ckl.ltm_retrieval.LTMRetrieval",
}
