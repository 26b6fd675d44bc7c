"""Markdown tables and the error-vs-NFE plot of a benchmark run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .quality import Summary

METRIC_TITLES = {
    "rmse": "RMSE to the exact PF-ODE solution (deterministic samplers)",
    "fd": "Fréchet distance to the exact mixture",
    "mode_error": "Mode-frequency error (total variation)",
}


def markdown_table(summaries: Sequence[Summary], metric: str, nfes: Sequence[int]) -> str:
    """One row per sampler, one column per target NFE; cells ``mean ± std over seeds`` (the mean alone from
    one seed, where no spread was measured); a cell whose
    sampler made fewer model calls than the column's NFE shows the actual count in brackets."""
    cells: dict[str, dict[int, str]] = {}
    floor_rows: list[str] = []
    for s in summaries:
        if metric not in s.metrics:
            continue
        mean, std = s.metrics[metric]
        text = f"{mean:.4g}" if std is None else f"{mean:.4g} ± {std:.2g}"
        if s.nfe_target == 0:
            floor_rows.append(f"| {s.sampler} | " + " | ".join([text] * len(nfes)) + " |")
            continue
        if s.nfe != s.nfe_target:
            text += f" [{s.nfe}]"
        cells.setdefault(s.sampler, {})[s.nfe_target] = text
    header = "| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |"
    lines = [f"**{METRIC_TITLES[metric]}**", "", header, "|" + "---|" * (len(nfes) + 1)]
    lines += [
        f"| {name} | " + " | ".join(row.get(n, "–") for n in nfes) + " |" for name, row in cells.items()
    ]
    return "\n".join(lines + floor_rows)


def plot(summaries: Sequence[Summary], path: Path, title: str) -> None:
    """Error vs NFE (log scale), one panel per metric, shaded band = ± one std over seeds."""
    import matplotlib  # optional dependency, imported when used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional dependency, imported when used

    metrics = ["rmse", "fd", "mode_error"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5))
    names = list(dict.fromkeys(s.sampler for s in summaries if s.nfe_target > 0))
    cmap = plt.get_cmap("tab20")
    for ax, metric in zip(axes, metrics, strict=True):
        for i, name in enumerate(names):
            rows = sorted(
                (s for s in summaries if s.sampler == name and metric in s.metrics), key=lambda s: s.nfe
            )
            if not rows:
                continue
            nfe = [s.nfe for s in rows]
            mean = [s.metrics[metric][0] for s in rows]
            std = [s.metrics[metric][1] or 0.0 for s in rows]
            style = "-" if not name.endswith("-karras") else "--"
            ax.plot(nfe, mean, style, marker="o", ms=3, color=cmap(i % 20), label=name)
            ax.fill_between(
                nfe,
                [m - d for m, d in zip(mean, std, strict=True)],
                [m + d for m, d in zip(mean, std, strict=True)],
                color=cmap(i % 20),
                alpha=0.15,
            )
        for s in summaries:
            if s.nfe_target == 0 and metric in s.metrics:
                ax.axhline(s.metrics[metric][0], color="k", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE (model calls)")
        ax.set_title(METRIC_TITLES[metric], fontsize=9)
    axes[-1].legend(fontsize=7, ncol=2)
    fig.suptitle(title + "   (dotted: floors from exact data samples / exact PF-ODE)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
