"""`broker bench --plot FILE.png`: latency percentiles per mode and rate, ours beside the
peers (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from broker.bench.report import dig

PERCENTILES = ("p50", "p95", "p99", "max")
COLOURS = {"ours": "#1f4e9c", "nats": "#2a9d4b", "rabbitmq": "#e07b1a"}


def write(report: dict[str, Any], path: Path) -> None:
    """Write the latency plot of a report to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pipelines = {"ours": report["ours"]}
    pipelines.update({n: p for n, p in report["peers"].items() if p.get("available")})
    tags = [t for t in report["ours"] if t == "closed" or t.startswith("paced-") or t == "soak"]
    fig, axes = plt.subplots(1, max(1, len(tags)), figsize=(3.6 * max(1, len(tags)), 4.4))
    axes_list = list(axes) if len(tags) > 1 else [axes]
    for ax, tag in zip(axes_list, tags, strict=False):
        for name, results in pipelines.items():
            if tag not in results:
                continue
            for kind, style in (("delivered", "-"), ("receipted", ":")):
                values = [dig(results[tag], f"latency_ms.{kind}.{p}") for p in PERCENTILES]
                if any(v is None for v in values):
                    continue
                label = f"{name} ({kind})" if kind == "delivered" else f"{name} (receipt/ack)"
                ax.plot(
                    PERCENTILES, values, style, marker="o", color=COLOURS.get(name), label=label
                )
        title = "closed loop" if tag == "closed" else tag.replace("paced-", "paced ") + "/s"
        if tag == "soak":
            title = f"soak {report['config']['soak_rate']:g}/s"
        ax.set_title(title)
        ax.set_yscale("log")
        ax.set_xlabel("percentile")
        ax.grid(True, which="both", alpha=0.3)
    axes_list[0].set_ylabel("ms from publish (log)")
    legend: dict[str, Any] = {}
    for ax in axes_list:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(
        list(legend.values()), list(legend), loc="lower center", ncol=min(6, len(legend)),
        fontsize=8, frameon=False,
    )  # fmt: skip
    cfg = report["config"]
    fig.suptitle(
        f"broker bench: {cfg['recipients']} recipients, ~{cfg['notice_bytes']} B notices, "
        f"{report['machine']['cores']} cores" + (" (--quick)" if report["quick"] else ""),
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
