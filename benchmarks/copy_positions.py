"""Where a copy run's errors are: the symbol error per copied position (RESULTS.md, copy T = 1000).

Loads a ``cellstate train --task copy`` run folder's checkpoint and scores its model on the run's
own held-out set (regenerated from ``test_seed`` in the trainer's chunks, so the mean over the
positions is the ``symbol_error`` the run logged), then prints the error of each of the 10 copied
symbols: position 1 was written first and is held longest.

    PYTHONPATH=src python benchmarks/copy_positions.py /work/runs/copy1000-s1 [more run folders]
"""

from __future__ import annotations

import argparse

import torch

from cellstate.tasks.copy_memory import N_COPY
from cellstate.training import checkpoint as ckpt
from cellstate.training.config import RunConfig
from cellstate.training.trainer import Trainer


@torch.no_grad()
def errors_by_position(run: str) -> tuple[int, torch.Tensor]:
    """(sequences trained, (N_COPY,) fraction of test sequences whose symbol there is wrong)."""
    state = ckpt.load(f"{run}/checkpoint.pt")
    config = RunConfig.from_dict(state["config"])
    if config.task.name != "copy":
        raise SystemExit(f"{run}: a {config.task.name!r} run; this script reads copy runs")
    trainer = Trainer(config, out=None, progress=False)
    trainer.model.load_state_dict(state["model"])
    trainer.model.eval()
    t = config.training
    generator = torch.Generator().manual_seed(t.test_seed)
    chunk, wrong, start = trainer._test_chunk(), torch.zeros(N_COPY), 0
    while start < t.test_size:
        batch = trainer.task.batch(min(chunk, t.test_size - start), generator)
        outputs = trainer.model(batch.inputs)
        wrong += (outputs[-N_COPY:].argmax(dim=2) != batch.targets[-N_COPY:]).sum(dim=1)
        start += batch.targets.shape[1]
    return state["monitor"].sequences, wrong / t.test_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders (each with a checkpoint.pt)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for run in args.runs:
        sequences, error = errors_by_position(run)
        by_position = " / ".join(f"{100 * e:.1f}" for e in error.tolist())
        print(f"{run} at {sequences:,} sequences: symbol error {100 * error.mean():.2f}%;")
        print(f"  by copied position 1..{N_COPY} (%): {by_position}")


if __name__ == "__main__":
    main()
