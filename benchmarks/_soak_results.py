"""Markdown and chart for `benchmarks/soak.py` (benchmarks/results/soak.{md,png})."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path


def write_markdown(result: dict[str, Any], path: Path, rss_limit: float) -> None:
    edge, client, host = result["edge"], result["client"], result["machine"]
    verdict = {True: "**pass**", False: "**FAIL**", None: "not run"}
    lines = [
        "# Soak: the edge under load, the client across edge crashes",
        "",
        f"`python benchmarks/soak.py{' --quick' if result['quick'] else ''}` — {host['summary']}, "
        f"{result['when']}.",
        "",
    ]
    if edge:
        lines += [
            f"## Edge: {edge['concurrency']} connections for {edge['duration_s']:.0f} s "
            f"(binary OIP, batch 1) — {verdict[edge['passed']]}",
            "",
            "| requests | errors | req/s | p50 ms | p99 ms | max ms | RSS start → end (max) MiB | RSS growth |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {edge['requests']:,} | {edge['errors']} | {edge['throughput_rps']:,.0f} | "
            f"{edge['p50_ms']:.2f} | {edge['p99_ms']:.2f} | {edge['max_ms']:.1f} | "
            f"{edge['rss_start_mib']:.1f} → {edge['rss_end_mib']:.1f} ({edge['rss_max_mib']:.1f}) | "
            f"{edge['rss_growth'] * 100:+.1f} % (limit {rss_limit * 100:.0f} %) |",
            "",
        ]
    if client:
        tiers = ", ".join(f"{k}: {v:,}" for k, v in client["served_by"].items())
        events = "; ".join(f"{what} at {t:.1f} s" for t, what in client["events"])
        lines += [
            f"## Client: {client['concurrency']} threads for {client['duration_s']:.0f} s, edge "
            f"SIGKILLed twice — {verdict[client['passed']]}",
            "",
            "| calls | failed | calls/s | p50 ms | p99 ms | max ms | served by |",
            "|---:|---:|---:|---:|---:|---:|---|",
            f"| {client['calls']:,} | {client['failed']} | {client['throughput_cps']:,.0f} | "
            f"{client['p50_ms']:.2f} | {client['p99_ms']:.2f} | {client['max_ms']:.1f} | {tiers} |",
            "",
            f"Events: {events}. `Client(edge=Edge(...), cloud=Lambda(<strato cloud local>))`, "
            "default policy (edge first, cloud on `TransportError`), circuit breaker per backend.",
            "",
        ]
        lines += [f"- failure: `{f}`" for f in client["failures"]]
    lines += ["", "![soak](soak.png)", ""]
    path.write_text("\n".join(lines))


def write_chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    edge, client = result["edge"], result["client"]
    if edge:
        axis = axes[0]
        axis.plot(edge["rps_series"], color="#2a7", label="req/s")
        axis.set_xlabel("s")
        axis.set_ylabel("edge req/s")
        twin = axis.twinx()
        twin.plot(
            [t for t, _ in edge["rss_series"]], [r for _, r in edge["rss_series"]], color="#c53"
        )
        twin.set_ylabel("edge RSS, MiB", color="#c53")
        twin.set_ylim(0, max(r for _, r in edge["rss_series"]) * 1.3)
        axis.set_title(f"edge, {edge['concurrency']} connections: throughput and RSS")
    if client:
        axis = axes[1]
        for name, series in client["series"].items():
            axis.plot(series, label=name)
        for t, what in client["events"]:
            axis.axvline(t, color="#c53" if "killed" in what else "#2a7", linestyle="--", lw=1)
        axis.set_xlabel("s (dashed: edge killed / back)")
        axis.set_ylabel("calls/s")
        axis.legend(loc="upper right", fontsize=8)
        axis.set_title(f"Client, {client['concurrency']} threads: who answered")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
