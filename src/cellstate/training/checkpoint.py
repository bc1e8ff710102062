"""Checkpoints that survive interruption: written atomically, holding everything a bit-exact
resume needs (parameters, optimiser, every random number generator, counters)."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import sys
from pathlib import Path

import torch
from torch import nn

FORMAT = "cellstate-checkpoint-v1"


def save_atomic(state: dict, path: str | Path) -> None:
    """torch.save to a temporary file beside ``path``, fsync, then rename over ``path``.

    A crash or a signal mid-write leaves the previous checkpoint intact; a failed write (a full
    disk) removes its temporary file and raises OSError saying where and how much was needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            needed = f"~{buffer.getbuffer().nbytes / 1e6:.1f} MB"
            message = f"no space left on {path.parent} (the checkpoint needs {needed})"
            raise OSError(error.errno, message) from None
        raise


def load(path: str | Path) -> dict:
    """Load a checkpoint written by :func:`save_atomic` (ValueError if it is not one)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated or foreign file: say which, not a pickle trace
        raise ValueError(f"{path} is not a readable cellstate checkpoint ({error})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a cellstate checkpoint")
    return state


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """The global CPU (and CUDA) RNG states plus named generators', for an exact resume."""
    state = {"torch": torch.get_rng_state(), "generators": {}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    for name, gen in (generators or {}).items():
        state["generators"][name] = gen.get_state()
    return state


def restore_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, gen in (generators or {}).items():
        gen.set_state(state["generators"][name])


def params_sha256(module: nn.Module) -> str:
    """SHA-256 of the parameters' names, dtypes, shapes and bytes: equal iff bit-identical."""
    digest = hashlib.sha256()
    for name, param in sorted(module.state_dict().items()):
        tensor = param.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def continue_backends(saved: list[str], now: str, what: str = "backend") -> list[str]:
    """The backends (or devices, ``what``) a run's steps ran on, in order, once the steps from
    now run on ``now``. Says so on stderr when a resume changes it: the run is then not
    bit-exact."""
    if saved and saved[-1] != now:
        print(
            f"cellstate: warning: resuming on the {now} {what}, but the checkpoint's steps ran "
            f"on {saved[-1]}; the run will not be bit-identical to an uninterrupted one",
            file=sys.stderr,
        )
    return saved if saved and saved[-1] == now else [*saved, now]


def load_kind(path: str | Path, kind: str, what: str) -> dict:
    """A checkpoint of ``kind`` (:func:`load`; ValueError for another kind, saying it is not
    ``what``'s)."""
    state = load(path)
    if state.get("kind") != kind:
        raise ValueError(f"{path} is a cellstate checkpoint, but not {what}")
    return state
