"""``cellstate cache``: the compiled kernel's cache, one line per build.

    cellstate cache            # the cache root, each build's size, last use and state
    cellstate cache --clear    # remove every build not in use (the next use compiles, ~1 min)

After each build, builds unused for a while are removed anyway (``kernels/cpu/cache.py``).
Exit 0, or 1 when --clear could not remove a build (named on stdout).
"""

from __future__ import annotations

import time

from cellstate.kernels.cpu import build, cache


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="the compiled kernel's cache: its builds, or --clear them",
        description=f"List the kernel builds in the cache ({cache.root()}). After each build, "
        f"builds unused for {cache.PRUNE_AFTER_DAYS} days or beyond the {cache.KEEP_BUILDS} most "
        "recently used are removed.",
    )
    parser.add_argument(
        "--clear",
        action="store_true",
        help="remove every build that no process is building or loading now",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    root = cache.root()
    if args.clear:
        removal = cache.clear(root)
        print(removal.summary() or f"no kernel build to remove in {root}")
        for key in removal.in_use:
            print(f"  kept {key}: in use")
        return 1 if removal.failed else 0
    found = cache.builds(root)
    megabytes = sum(b.size for b in found) / 1e6
    print(f"{root}: {len(found)} kernel builds, {megabytes:.1f} MB")
    current = build.build_dir().name
    for b in found:
        state = "this torch, CPU and source" if b.key == current else ""
        if not b.built:
            state = "unfinished (being built, or killed)"
        used = _ago(time.time() - b.last_used)
        print(f"  {b.key}  {b.size / 1e6:5.1f} MB  used {used}  {state}".rstrip())
    return 0


def _ago(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"
