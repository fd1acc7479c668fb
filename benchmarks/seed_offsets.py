"""Do the verdicts hang on one draw? The quick reproduction under several seed offsets, claim by claim.

Runs ``gapscope reproduce --scale quick --seed-offset N`` once per offset (each into its own
folder, so a rerun resumes), then prints, for every claim, how often each status came out, the
exit status of every run, and the claims whose status flips between supported and not
supported (there should be none: a claim the runs cannot decide is inconclusive instead).

    python benchmarks/seed_offsets.py --offsets 0 10 20 30 --out seed-offsets
    python benchmarks/seed_offsets.py --only trained_smoothing training_scaling_skip

The table it printed for the shipped experiments is kept in benchmarks/seed_offsets.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

SHORT = {
    "supported": "supported",
    "inconclusive": "inconclusive",
    "known not to reproduce": "known",
    "not supported": "NOT SUPPORTED",
    "unexpectedly supported": "UNEXPECTED",
}


def run(offset: int, out: Path, only: list[str], workers: int) -> dict:
    """One quick reproduction at ``offset``; its JSON outcome, with its exit status and time."""
    command = [str(Path(sys.executable).with_name("gapscope")), "reproduce", "--scale", "quick", "--json"]
    command += [
        "--seed-offset",
        str(offset),
        "--out",
        str(out / f"offset-{offset}"),
        "--workers",
        str(workers),
    ]
    for name in only:
        command += ["--only", name]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1, 3):
        raise SystemExit(f"offset {offset}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return json.loads(done.stdout) | {"seconds": round(time.perf_counter() - start, 1)}


def table(results: dict[int, dict]) -> str:
    """Markdown: the runs, then per claim the count of each status over the offsets."""
    lines = ["| offset | exit status | summary | seconds |", "|---|---|---|---|"]
    for offset, result in results.items():
        lines.append(f"| {offset} | {result['exit_code']} | {result['summary']} | {result['seconds']} |")
    statuses: dict[tuple[str, int], Counter] = {}
    claims: dict[tuple[str, int], str] = {}
    for result in results.values():
        for experiment in result["experiments"]:
            for i, verdict in enumerate(experiment["verdicts"]):
                key = (experiment["name"], i)
                claims.setdefault(key, verdict["claim"])
                statuses.setdefault(key, Counter())[SHORT[verdict["status"]]] += 1
    flips = [k for k, c in statuses.items() if c["supported"] and c["NOT SUPPORTED"]]
    varied = [k for k, c in statuses.items() if len(c) > 1]
    lines += [
        "",
        f"{len(claims)} claims; {len(varied)} change status across the {len(results)} offsets; "
        f"{len(flips)} flip between supported and not supported.",
        "",
    ]
    lines += ["| experiment | claim | statuses over the offsets |", "|---|---|---|"]
    for key in sorted(statuses, key=lambda k: (k not in varied, k)):
        counts = ", ".join(f"{status} {n}" for status, n in statuses[key].most_common())
        claim = claims[key] if len(claims[key]) <= 110 else claims[key][:107] + "..."
        lines.append(
            f"| {key[0]} | {claim.replace('|', '/')} | {counts}{' (flips)' if key in flips else ''} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offsets", type=int, nargs="+", default=[0, 10, 20, 30])
    parser.add_argument("--only", nargs="*", default=[], help="shipped experiments (default: all)")
    parser.add_argument("--out", type=Path, default=Path("seed-offsets"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if len(args.offsets) < 3:
        parser.error("--offsets needs at least three offsets")
    results = {offset: run(offset, args.out, args.only, args.workers) for offset in args.offsets}
    print(table(results))


if __name__ == "__main__":
    main()
