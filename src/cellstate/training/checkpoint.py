"""Checkpoints that survive interruption: written atomically, holding everything a bit-exact
resume needs (parameters, optimiser, every random number generator, counters)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

FORMAT = "cellstate-checkpoint-v1"


def save_atomic(state: dict, path: str | Path) -> None:
    """torch.save to a temporary file beside ``path``, fsync, then rename over ``path``.

    A crash or a signal mid-write leaves the previous checkpoint intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
