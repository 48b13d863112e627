"""The Runner's language-model path against a hand-written loop doing the same work.

Continual pre-training of the tiny Llama-style LM (``model=tiny_lm``: hidden 64, 2 layers,
byte-level) over the corpus stream (``stream=corpora``: wiki -> code -> facts, 64-byte blocks,
batch 16, ``--steps`` steps per corpus), AdamW (lr 3e-3, weight decay 0.1, clip 1.0), constant
schedule, the held-out loss of every corpus (``--eval-blocks`` blocks each) before training and
after each corpus. Two competitors from the same initial weights, alternated in one process:

- ``runner``: ``continual.runner.Runner`` with ``CorpusTextStream`` and the CKL ``Vanilla``
  strategy, as the CLI runs it (log every 10 steps, records written to a temporary folder,
  no checkpoints);
- ``hand``: a plain loop over the same batches doing forward, loss, backward, clip, AdamW step,
  and the same evaluations with the same function (``block_loss``).

Printed: medians of wall and process-CPU seconds, the ratio runner / hand (target <= 1.10,
issue 14) with each repeat's ratio so the noise shows, and each competitor's final losses
(identical when the work is the same).

    OMP_NUM_THREADS=1 python3 benchmarks/lm_engine_overhead.py [--repeats 5] [--steps 100]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import alternate  # noqa: E402

from continual.config import CheckpointConfig, LogConfig
from continual.lm.evaluation import block_loss  # noqa: E402
from continual.models.lm import tiny_causal_lm  # noqa: E402
from continual.runner import Runner  # noqa: E402
from continual.strategies.ckl.vanilla import Vanilla  # noqa: E402
from continual.streams.text import CorpusTextStream  # noqa: E402

LR, WEIGHT_DECAY, CLIP = 3e-3, 0.1, 1.0


def make_stream(steps: int, eval_blocks: int, tokenizer) -> CorpusTextStream:
    stream = CorpusTextStream(n_chars=60_000, seq_len=64, batch_size=16, steps_per_task=steps,
                              max_eval_blocks=eval_blocks, seed=0)
    stream.prepare(None, tokenizer)
    return stream


def runner_competitor(stream, state, tokenizer):
    def prepare():
        model, _ = tiny_causal_lm(seed=0, max_positions=256)
        model.load_state_dict(state)
        strategy = Vanilla(model, tokenizer, lr=LR, weight_decay=WEIGHT_DECAY, grad_clip=CLIP)
        folder = tempfile.mkdtemp(prefix="lm_overhead_")

        def run():
            summary = Runner(stream, strategy, out_dir=folder, checkpoint=CheckpointConfig(enabled=False),
                             log=LogConfig(every=10)).run()
            return {"final": [round(v, 6) for v in summary["final_loss"].values()]}

        return run

    return prepare


def hand_competitor(stream, state):
    def prepare():
        model, _ = tiny_causal_lm(seed=0, max_positions=256)
        model.load_state_dict(state)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), weight_decay=WEIGHT_DECAY)
        blocks = [stream.inner.eval_blocks(k)[:stream.max_eval_blocks] for k in range(stream.n_tasks)]

        def evaluate():
            return [block_loss(model, b) for b in blocks]

        def run():
            evaluate()
            for k in range(stream.n_tasks):
                model.train()
                for batch in stream.inner.batches(k):
                    loss = model(input_ids=batch.x, labels=batch.y).loss
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, CLIP)
                    opt.step()
                final = evaluate()
            return {"final": [round(v, 6) for v in final]}

        return run

    return prepare


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=100, help="steps per corpus")
    p.add_argument("--eval-blocks", type=int, default=16)
    args = p.parse_args()
    torch.set_num_threads(1)
    model, tokenizer = tiny_causal_lm(seed=0, max_positions=256)
    state = copy.deepcopy(model.state_dict())
    stream = make_stream(args.steps, args.eval_blocks, tokenizer)
    out = alternate({"runner": runner_competitor(stream, state, tokenizer), "hand": hand_competitor(stream, state)},
                    repeats=args.repeats, warmup=1)
    for kind in ("wall", "cpu"):
        ratios = [r / h for r, h in zip(out["runner"][kind], out["hand"][kind])]
        print(f"{kind}: runner {statistics.median(out['runner'][kind]):.3f} s, hand "
              f"{statistics.median(out['hand'][kind]):.3f} s, runner / hand (median of ratios) "
              f"{statistics.median(ratios):.3f}; per repeat {', '.join(f'{r:.3f}' for r in ratios)}")
    for name in ("runner", "hand"):
        print(f"{name} final held-out losses (wiki, code, facts): {out[name]['results'][-1]['final']}")
    print(f"{stream.n_steps()} steps, batch 16 x 64 tokens, eval at init and {stream.n_tasks} task ends; "
          f"threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
