"""Ratios of each diffusers-geo sampler to the best diffusers built-in of its kind, from `diffusers-geo bench`
results: ODE error (RMSE) against the best deterministic built-in for deterministic samplers, Fréchet distance
against the best stochastic built-in for stochastic ones. Below 1: ours is better.

    python scripts/ratio_to_builtins.py bench-out/sd3 [--nfe 5,6,8,10]

The folder holds one sub-folder per problem (``bench --problem all``) or a single ``results.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffusers_geo.registry import BUILTINS, FLOW_BUILTINS, SCHEDULERS, parse_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--nfe", default="5,6,8,10")
    args = parser.parse_args()
    nfes = [int(n) for n in args.nfe.split(",")]
    files = sorted(args.folder.glob("*/results.json")) or [args.folder / "results.json"]
    builtin_names = set(BUILTINS) | set(FLOW_BUILTINS)
    print(f"| problem | sampler | vs | {' | '.join(f'NFE {n}' for n in nfes)} |")
    print(f"|---|---|---|{'---|' * len(nfes)}")
    for path in files:
        summary = json.loads(path.read_text())["summary"]
        table = {(s["sampler"], s["nfe_target"]): s for s in summary}
        samplers = list(dict.fromkeys(s["sampler"] for s in summary))
        builtins = [s for s in samplers if parse_name(s)[0].removesuffix("-karras") in builtin_names]
        for name in samplers:
            if parse_name(name)[0].removesuffix("-karras") not in SCHEDULERS:
                continue
            cells = []
            for n in nfes:
                ours = table.get((name, n))
                if ours is None:
                    cells.append("–")
                    continue
                key = "fd" if ours["stochastic"] else "rmse"
                pool = [
                    table[(b, n)]["metrics"][key][0]
                    for b in builtins
                    if (b, n) in table and table[(b, n)]["stochastic"] == ours["stochastic"]
                ]
                cells.append(f"{ours['metrics'][key][0] / min(pool):.2f}" if pool else "–")
            kind = (
                "best stochastic (FD)"
                if table[(name, nfes[0])]["stochastic"]
                else "best deterministic (RMSE)"
            )
            print(f"| {path.parent.name} | {name} | {kind} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
