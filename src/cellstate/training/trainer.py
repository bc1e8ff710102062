"""The training loop: full BPTT, gradient-norm clipping, the paper's stopping criteria, a fixed
held-out test set, atomic checkpoints with a bit-exact resume, and DDP under torchrun.

Files in the run directory (training/run_dir.py; written by rank 0 only): config.json (the
resolved RunConfig), metrics.jsonl (one line per evaluation), checkpoint.pt, result.json.

Example:
    result = Trainer(RunConfig(TaskConfig("adding", 50)), out="runs/a50").run()
    result.solved, result.sequences
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from cellstate.kernels import dispatch
from cellstate.tasks import CriterionMonitor, Task
from cellstate.training import checkpoint as ckpt
from cellstate.training import memory
from cellstate.training.config import RunConfig
from cellstate.training.distributed import (
    World,
    any_rank,
    gather_flags,
    init_world,
    rank_slice,
    sum_scalar,
)
from cellstate.training.divergence import check_loss
from cellstate.training.interrupt import GracefulStop
from cellstate.training.lr_schedule import Plateau, scheduled_lr
from cellstate.training.model import SequenceModel
from cellstate.training.run_dir import RunDir

# Test inputs are generated in chunks of at most this many floats, so that 2560 sequences of
# long-lag-distractors at q = 1000 (1004 inputs per step) never sit in memory at once.
_TEST_CHUNK_FLOATS = 2**24


class ResumeError(ValueError):
    """A --resume that cannot continue the run in the directory (config mismatch, no run)."""


@dataclass
class Result:
    """What result.json holds. `sequences`: training sequences presented until the criterion held
    or training stopped; `wrong` of `test_size` held-out sequences after training."""

    task: str
    length: int | None
    model: str
    solved: bool
    sequences: int
    test_error: float
    wrong: int
    seconds: float
    params_sha256: str
    stopped: str  # "solved", "budget" (max_sequences), "gave_up" (the paper's limit)
    test_loss: float
    test_size: int
    paper_sequences: int | None


@dataclass
class _Window:
    """Training statistics accumulated between two evaluations."""

    loss: float = 0.0
    correct: int = 0
    sequences: int = 0
    steps: int = 0
    grad_norm: float = 0.0
    grad_norm_max: float = 0.0
    clipped: int = 0
    skipped: int = 0


@dataclass
class _Counters:
    """Progress that a checkpoint carries across a resume."""

    steps: int = 0
    seconds: float = 0.0
    next_eval: int = 0
    last_eval: dict | None = None
    stopped: str | None = None
    window: _Window = field(default_factory=_Window)
    plateau: Plateau = field(default_factory=Plateau)  # the lr decay's state


class Trainer:
    """Trains one model on one task as `config` says; `run()` returns the Result.

    out: run directory (None: write nothing). resume: continue from out/checkpoint.pt.
    progress: show a tqdm bar (rank 0 only). world: set by torchrun's environment by default.
    """

    def __init__(
        self,
        config: RunConfig,
        out: str | Path | None = None,
        *,
        resume: bool = False,
        progress: bool = True,
        description: str | None = None,
        world: World | None = None,
    ) -> None:
        self.config = config
        t = config.training
        self.out = Path(out) if out is not None else None
        self.run_dir = RunDir(out) if out is not None else None
        self.world = world if world is not None else init_world(t.device)
        self.device = torch.device(f"cuda:{self.world.local_rank}" if t.device == "cuda" else "cpu")
        self.progress = progress and self.world.is_main
        self.description = description
        self.stop_signal: str | None = None  # the signal that interrupted run(), if one did
        self.task: Task = config.task.build()
        memory.check(config, self.task)
        torch.manual_seed(t.seed)
        self.model = SequenceModel(config.model, self.task).to(self.device)
        self.trained: nn.Module = (
            DistributedDataParallel(
                self.model, device_ids=[self.device] if t.device == "cuda" else None
            )
            if self.world.distributed
            else self.model
        )
        self.optimizer = self._optimizer()
        # Batches are drawn on the CPU from this generator, so that the data, and with it the
        # result, is the same on any device and for any number of ranks.
        self.generator = torch.Generator().manual_seed(t.seed)
        self.monitor: CriterionMonitor = self.task.criterion.monitor()
        self.counters = _Counters(next_eval=t.eval_every)
        self.resumed = resume
        self.backends: list[str] = []  # what the checkpoint's steps ran on, in order
        if resume:
            self._resume()

    # ---------------------------------------------------------------- the loop

    def run(self) -> Result | None:
        """Train until the criterion holds or the budget is spent. Returns None when a signal
        stopped it (a checkpoint was written; `--resume` continues)."""
        t, c = self.config.training, self.counters
        if self.world.is_main and self.run_dir is not None:
            if not self.resumed:
                self.run_dir.start_fresh()
            self.run_dir.write_json(self.run_dir.config, self.config.to_dict())
        dtype = self.model.head.weight.dtype  # builds the kernel here, before the clock starts
        self.backends = ckpt.continue_backends(
            self.backends, dispatch.resolve(self.config.model.backend, self.device, dtype)
        )
        bar = tqdm(
            total=t.max_sequences,
            initial=min(self.monitor.sequences, t.max_sequences),
            unit="seq",
            unit_scale=True,
            desc=self.description,
            disable=not self.progress,
            dynamic_ncols=True,
            leave=self.description is None,
        )
        interrupted = False
        next_checkpoint = (self.monitor.sequences // t.checkpoint_every + 1) * t.checkpoint_every
        with GracefulStop() as stop:
            start = time.perf_counter()
            while c.stopped is None and not self._out_of_budget():
                if any_rank(stop.requested, self.world, self.device):
                    interrupted = True
                    break
                before = self.monitor.sequences
                self._step(bar)
                bar.update(
                    min(self.monitor.sequences, t.max_sequences) - min(before, t.max_sequences)
                )
                if self.monitor.satisfied():
                    c.stopped = "solved"
                elif self.monitor.gave_up():
                    c.stopped = "gave_up"
                if self.monitor.sequences >= c.next_eval:
                    c.seconds += time.perf_counter() - start
                    start = time.perf_counter()
                    self._evaluate_and_log(bar)
                    c.next_eval = (self.monitor.sequences // t.eval_every + 1) * t.eval_every
                    if self.monitor.satisfied():  # "test" and "metric" are decided here
                        c.stopped = "solved"
                if self.monitor.sequences >= next_checkpoint and c.stopped is None:
                    c.seconds += time.perf_counter() - start
                    start = time.perf_counter()
                    self._save_checkpoint()
                    next_checkpoint = (
                        self.monitor.sequences // t.checkpoint_every + 1
                    ) * t.checkpoint_every
            c.seconds += time.perf_counter() - start
        bar.close()
        if interrupted:
            # Another rank may have been the one signalled: then this one has no name for it.
            self.stop_signal = stop.signal_name
            self._save_checkpoint()
            if self.world.is_main:
                where = f" in {self.out}" if self.out is not None else ""
                print(
                    f"interrupted by {stop.signal_name} at {self.monitor.sequences} sequences; "
                    f"checkpoint written{where}; continue with --resume"
                )
            return None
        if c.stopped is None:
            c.stopped = "budget"
        return self._finish()

    def _out_of_budget(self) -> bool:
        return self.monitor.sequences >= self.config.training.max_sequences

    def _step(self, bar: tqdm) -> None:
        """One optimiser step on one global batch: full BPTT, clip, update, record."""
        t, w = self.config.training, self.counters.window
        batch = self.task.batch(t.batch_size, self.generator)
        local, weight = rank_slice(batch, self.world)
        local = local.to(self.device)
        inputs = local.inputs.to(self.model.head.weight.dtype)
        self.trained.train()
        outputs = self.trained(inputs)  # (T, B_local, O)
        loss = self.task.loss(outputs, local)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * weight).backward()
        norm = clip_gradients(self.model.parameters(), t.clip)
        if math.isfinite(norm):
            self.optimizer.step()
        else:  # a non-finite gradient would poison every parameter; skip the update
            w.skipped += 1
        with torch.no_grad():
            correct = gather_flags(self.task.correct(outputs, local), self.world).cpu()
        global_loss = (
            sum_scalar(float(loss.detach()) * weight, self.world, self.device) / self.world.size
        )
        check_loss(
            global_loss,
            f"sequence {self.monitor.sequences + t.batch_size:,}",
            self.run_dir.checkpoint if self.run_dir is not None else None,
            f"lower --lr ({t.lr:g}) or clip gradients (--clip)",
        )
        self.monitor.update(global_loss, correct)
        self.counters.steps += 1
        w.loss += global_loss * correct.numel()
        w.correct += int(correct.sum())
        w.sequences += correct.numel()
        w.steps += 1
        w.grad_norm += norm
        w.grad_norm_max = max(w.grad_norm_max, norm)
        w.clipped += int(t.clip > 0 and norm > t.clip)
        if self.progress and (self.counters.steps % 10 == 0 or w.steps == 1):
            bar.set_postfix(
                loss=f"{w.loss / w.sequences:.4f}",
                acc=f"{w.correct / w.sequences:.3f}",
                gnorm=f"{norm:.3g}",
                refresh=False,
            )

    # ---------------------------------------------------------------- evaluation

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Loss, wrong count and the task's `test_metrics` on the fixed held-out set (regenerated
        from `test_seed`).

        Under DDP each rank scores every size-th chunk and the counts are summed.
        """
        t = self.config.training
        generator = torch.Generator().manual_seed(t.test_seed)
        chunk = self._test_chunk()
        self.model.eval()
        wrong, loss_sum, index, start = 0, 0.0, 0, 0
        extra = dict.fromkeys(self.task.test_metric_names, 0.0)  # sums over sequences
        while start < t.test_size:
            size = min(chunk, t.test_size - start)
            batch = self.task.batch(size, generator)
            if index % self.world.size == self.world.rank:
                batch = batch.to(self.device)
                outputs = self.model(batch.inputs.to(self.model.head.weight.dtype))
                wrong += int((~self.task.correct(outputs, batch)).sum())
                loss_sum += float(self.task.loss(outputs, batch)) * size
                for name, value in self.task.test_metrics(outputs, batch).items():
                    extra[name] += value * size
            start += size
            index += 1
        self.model.train()
        wrong = int(sum_scalar(float(wrong), self.world, self.device))
        loss_sum = sum_scalar(loss_sum, self.world, self.device)
        return {
            "test_loss": loss_sum / t.test_size,
            "wrong": wrong,
            "test_error": wrong / t.test_size,
            **{
                name: sum_scalar(total, self.world, self.device) / t.test_size
                for name, total in extra.items()
            },
        }

    def _test_chunk(self) -> int:
        steps = 1.1 * (self.task.length or 40) + 40
        return int(max(1, min(512, _TEST_CHUNK_FLOATS // (steps * self.task.input_size))))

    def _evaluate_and_log(self, bar: tqdm | None, *, final: bool = False) -> dict:
        c, w = self.counters, self.counters.window
        test = self.evaluate()
        # The "test" criterion (Reber, two-sequence) only looks at whether every test sequence
        # was right: flags with `wrong` False entries say exactly that; "metric" (copy) at its
        # test metric.
        # The final evaluation (at the budget) is not one of the periodic checks the criterion
        # is decided on: feeding it would let a resumed run stop where an uninterrupted one goes on.
        if not final:
            flags = torch.ones(self.config.training.test_size, dtype=torch.bool)
            flags[: test["wrong"]] = False
            self.monitor.update_test(
                flags, {name: test[name] for name in self.task.test_metric_names}
            )
        line = {
            "sequences": self.monitor.sequences,
            "steps": c.steps,
            "seconds": round(c.seconds, 3),
            "train_loss": w.loss / w.sequences if w.sequences else None,
            "train_accuracy": w.correct / w.sequences if w.sequences else None,
            "grad_norm": w.grad_norm / w.steps if w.steps else None,
            "grad_norm_max": w.grad_norm_max if w.steps else None,
            "clipped": w.clipped / w.steps if w.steps else None,
            "skipped": w.skipped,
            "lr": self.optimizer.param_groups[0]["lr"],  # the step of the updates logged here
            **test,
            "final": final,
        }
        if not final:  # the final evaluation must not change what later lines would say
            c.window = _Window()
            self._decay_lr(test["test_loss"])
        c.last_eval = line
        if self.world.is_main and self.run_dir is not None:
            self.run_dir.append_metrics(line)
        if bar is not None and self.progress and self.description is None:
            bar.write(
                f"{self.monitor.sequences:>9} seq  loss {line['train_loss'] or 0:.4f}  "
                f"test wrong {test['wrong']}/{self.config.training.test_size}"
                + "".join(f"  {name} {test[name]:.4f}" for name in self.task.test_metric_names)
            )
        return line

    def _decay_lr(self, test_loss: float) -> None:
        """Reduce-on-plateau (training/lr_schedule.py), where lr_decay < 1, down to lr_min."""
        t, plateau = self.config.training, self.counters.plateau
        if t.lr_decay == 1 or self._scheduled_lr() <= t.lr_min:
            return  # a constant lr, or at the floor: no more cuts
        if plateau.update(test_loss, t.lr_patience, self.task.baseline_loss):
            self._set_scheduled_lr()

    def _scheduled_lr(self) -> float:
        t = self.config.training
        return scheduled_lr(t.lr, t.lr_decay, self.counters.plateau.cuts, t.lr_min)

    def _set_scheduled_lr(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self._scheduled_lr()

    # ---------------------------------------------------------------- results and checkpoints

    def _finish(self) -> Result:
        c = self.counters
        last = c.last_eval
        if last is None or last["sequences"] != self.monitor.sequences:
            last = self._evaluate_and_log(None, final=True)
        self._save_checkpoint()
        t = self.config.training
        result = Result(
            task=self.task.name,
            length=self.task.length,
            model=self.config.model.kind,
            solved=c.stopped == "solved",
            sequences=self.monitor.sequences,
            test_error=last["test_error"],
            wrong=last["wrong"],
            seconds=round(c.seconds, 3),
            params_sha256=ckpt.params_sha256(self.model),
            stopped=c.stopped,
            test_loss=last["test_loss"],
            test_size=t.test_size,
            paper_sequences=self.task.paper_sequences,
        )
        if self.world.is_main and self.run_dir is not None:
            self.run_dir.write_json(self.run_dir.result, asdict(result))
        return result

    def _save_checkpoint(self) -> None:
        if not self.world.is_main or self.run_dir is None:
            return
        state = {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": ckpt.rng_state({"train": self.generator}),
            "monitor": self.monitor,
            "counters": asdict(self.counters),
            "backends": self.backends,
        }
        ckpt.save_atomic(state, self.run_dir.checkpoint)

    def _resume(self) -> None:
        path = self.run_dir.checkpoint if self.run_dir is not None else None
        if path is None or not path.is_file():
            raise ResumeError(f"--resume: no checkpoint in {self.out}")
        state = ckpt.load(path)
        if "config" not in state:
            raise ResumeError(
                f"--resume: {path} is not a cellstate train checkpoint "
                f"(it holds a {state.get('kind', 'different')} run)"
            )
        saved = RunConfig.from_dict(state["config"])
        differ = self.config.differences(saved)
        if differ:
            raise ResumeError(
                "--resume: the arguments differ from the checkpoint's run in "
                + ", ".join(f"{k} ({_get(self.config, k)!r} vs {_get(saved, k)!r})" for k in differ)
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        ckpt.restore_rng_state(state["rng"], {"train": self.generator})
        self.monitor = state["monitor"]
        self.backends = state.get("backends", [])
        counters = dict(state["counters"])
        window = _Window(**counters.pop("window"))
        plateau = Plateau(**counters.pop("plateau", {}))  # absent: written before lr decay
        self.counters = _Counters(**counters, window=window, plateau=plateau)
        # The schedule's lr, not the saved one: the same float for a run under today's rule, and
        # the floor for one cut below it before the floor existed.
        self._set_scheduled_lr()
        if self.counters.stopped == "budget":  # a larger budget continues the run
            self.counters.stopped = None
        if self.world.is_main and self.counters.stopped is None:
            # Drop the lines a crashed run logged after its last checkpoint (the resume logs them
            # again) and the final evaluation of a run that stopped at its budget (it goes on).
            sequences = self.monitor.sequences
            self.run_dir.truncate_metrics(
                lambda r: r.get("sequences", math.inf) <= sequences and not r.get("final")
            )

    def _optimizer(self) -> torch.optim.Optimizer:
        t = self.config.training
        params = self.model.parameters()
        if t.optimizer == "adam":
            return torch.optim.Adam(params, lr=t.lr, betas=(0.9, t.adam_beta2))
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum)


def clip_gradients(parameters: Iterable[nn.Parameter], threshold: float) -> float:
    """Gradient-norm clipping (Pascanu et al. 2013, the seed's rule): if ||g|| >= threshold,
    g <- (threshold / ||g||) g, over all parameters' gradients as one vector. Returns ||g|| before
    clipping; threshold 0 only measures it (max_norm=inf scales by exactly 1)."""
    norm = nn.utils.clip_grad_norm_(parameters, threshold if threshold > 0 else math.inf)
    return float(norm)


def _get(config: RunConfig, key: str):
    section, name = key.split(".")
    return getattr(getattr(config, section), name)
