"""Removed: the language-model studies run through the main ``continual`` CLI (one engine).

``python -m continual.lm.run experiment=...`` only prints the command that replaces it.
"""

from __future__ import annotations

import sys

NEW_COMMANDS = {
    "ckl_smollm2": "continual -m +experiment=ckl_smollm2 strategy=ckl_vanilla,ckl_recadam,ckl_mixreview,"
                   "ckl_lora,ckl_kadapter,ckl_modular,ckl_ltm_retrieval seed=0,1,2",
    "infinite_lr": "continual -m +experiment=infinite_lr schedule=infinite,repeated_cosine,constant,wsd seed=0,1,2",
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = [a.split("=", 1)[1] for a in argv if a.startswith("experiment=")]
    lines = [NEW_COMMANDS[n] for n in names if n in NEW_COMMANDS] or list(NEW_COMMANDS.values())
    raise SystemExit("python -m continual.lm.run was removed: language models run through the main CLI "
                     "(docs/language_models.md). Use:\n  " + "\n  ".join(lines))


if __name__ == "__main__":
    main()
