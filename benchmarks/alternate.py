"""Run one benchmark command on another revision and on this checkout, alternating, in one sitting.

This machine's speed drifts by tens of percent between minutes, so a speed comparison between two
revisions is only fair when their runs take turns. The other revision is checked out as a git
worktree beside the repository (so ``../shared`` resolves the same), and every run gets its own
tree first on ``PYTHONPATH``; subprocesses the command starts inherit it.

    python benchmarks/alternate.py --against 8eca3dc --rounds 2 -- \\
        python benchmarks/gru4rec_rsc15.py --configs official_retailrocket,official_rsc15 --threads 2

``--warmup`` runs the command once in each tree first and discards it (numba compiles its loops
on the first run in a tree and caches them on disk).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worktree(rev: str) -> Path:
    """A worktree of ``rev`` beside the repository (reused when it is already there)."""
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    path = ROOT.parent / f".nextclick-against-{sha}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), sha], cwd=ROOT, check=True, capture_output=True)
    return path


def run(tree: Path, label: str, cmd: list[str], show: bool = True) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if show:
        print(f"\n===== {label} ({tree}) at {time.strftime('%H:%M:%S', time.gmtime())} UTC, {dt:.1f} s, exit {p.returncode}")
        print(p.stdout.rstrip())
        if p.returncode:
            print(p.stderr[-3000:].rstrip())
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", required=True, help="the other git revision")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", action="store_true", help="run once in each tree first, output discarded")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command, run from each tree's root")
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        sys.exit("give the command after --")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    trees = [(f"against {args.against}", worktree(args.against)), (f"this checkout (HEAD {head})", ROOT)]
    if args.warmup:
        for label, tree in trees:
            run(tree, label, cmd, show=False)
    for r in range(args.rounds):
        for label, tree in trees if r % 2 == 0 else trees[::-1]:
            run(tree, f"round {r + 1}: {label}", cmd)


if __name__ == "__main__":
    main()
