"""The table, goals and chart of benchmarks/edge_latency.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

MODELS = {"mlp": "MLP, 1x1x28x28 float32 (3 KB)", "image": "image, 1x3x224x224 float32 (602 KB)"}


def _met(value: float, goal: float, *, at_most: bool = True) -> str:
    ok = value <= goal if at_most else value >= goal
    return "met" if ok else "not met"


def _goal_lines(report: dict[str, Any]) -> list[str]:
    goals, r = report["goals"], report["ratios"]
    lines = ["", "## Goals (p50 ratios in this run)", ""]
    lines += ["| goal | MLP | image | target | verdict (MLP / image) |", "|---|---:|---:|---:|---|"]
    rows = [
        ("`Client(Edge)` TCP / raw socket, same server", "client_vs_raw", goals["client"]),
        ("server: raw→edge / raw→asyncio streams responder", "server_vs_floor", goals["server"]),
        (
            "server: raw→edge / raw→uvloop protocol responder",
            "server_vs_uvloop_floor",
            goals["server"],
        ),
        ("`Client(Edge)` shared memory / `Client(Local)`", "shm_vs_local", goals["shm_vs_local"]),
    ]
    for what, key, goal in rows:
        mlp, image = r["mlp"][key], r["image"][key]
        lines.append(
            f"| {what} | {mlp:.2f}x | {image:.2f}x | <= {goal}x | "
            f"{_met(mlp, goal)} / {_met(image, goal)} |"
        )
    lines.append(
        f"| UDS / TCP, `Client(Edge)` | {r['mlp']['uds_vs_tcp']:.2f}x | "
        f"{r['image']['uds_vs_tcp']:.2f}x | — | — |"
    )
    t = r["throughput"]
    lines += [
        "",
        f"- c=64 MLP throughput, strato binary / bare Starlette+ORT (JSON, the only body it "
        f"takes): **{t['binary_vs_bare']:.2f}x** (goal >= {goals['throughput']}x: "
        f"{_met(t['binary_vs_bare'], goals['throughput'], at_most=False)}); strato JSON / bare "
        f"JSON {t['json_vs_bare']:.2f}x. Server CPU per answer (steadier than req/s on a shared "
        f"machine), strato / bare: binary {t['binary_cpu_vs_bare']:.2f}x, JSON "
        f"{t['json_cpu_vs_bare']:.2f}x (below 1: strato spends less).",
        "- The shared-memory goal is for the 602 KB image. The 3 KB MLP input is under "
        "`Edge(shm_min_bytes=64 KiB)`, so its shared-memory row is a binary request over the "
        "Unix socket, like the row above it.",
    ]
    return lines


def write_markdown(report: dict[str, Any], path: Path) -> None:
    machine, settings = report["machine"], report["settings"]
    lines = [
        "# Edge data path at batch 1",
        "",
        f"Machine: {machine['cpus']} CPUs, {machine['platform']}, Python {machine['python']}. "
        f"{settings['calls']} timed calls per client and model in {settings['rounds']} "
        f"interleaved rounds after {settings['warmup_calls']} warm-up calls; throughput: best "
        f"of {settings['throughput_rounds']} interleaved rounds of {settings['duration']:g} s "
        "per point. The daemon runs "
        "`strato edge serve --uds … --allow-shm --threads 1`, `Client(Local)` one ORT thread. "
        "Clients and servers share the CPUs with other work (load average at the end: "
        f"{', '.join(f'{v:.1f}' for v in machine['load_average_at_end'])}): compare ratios "
        "within this run.",
    ]
    for model, title in MODELS.items():
        stats = report["latency"][model]
        floor = stats["floor: raw socket → asyncio streams responder"]["p50_us"]
        lines += ["", f"## {title}", "", "| client | p50 µs | p99 µs | p50 / streams floor |"]
        lines.append("|---|---:|---:|---:|")
        for name, s in stats.items():
            lines.append(
                f"| {name} | {s['p50_us']:,.0f} | {s['p99_us']:,.0f} | {s['p50_us'] / floor:.2f}x |"
            )
    lines += _goal_lines(report)
    lines += ["", "| server | body | c | req/s | server CPU µs/answer | p50 ms | p99 ms | errors |"]
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in report["throughput"]:
        lines.append(
            f"| {row['server']} | {row['body']} | {row['concurrency']} | "
            f"{row['throughput']:,.0f} | {row['server_cpu_us']:.0f} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | "
            f"{row['errors']} |"
        )
    path.write_text("\n".join(lines) + "\n")


def write_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(MODELS), figsize=(7 * len(MODELS), 4.5))
    for ax, (model, title) in zip(axes, MODELS.items(), strict=True):
        stats = report["latency"][model]
        names = list(stats)
        ax.barh(names, [stats[n]["p50_us"] for n in names], label="p50")
        ax.scatter([stats[n]["p99_us"] for n in names], names, color="black", s=12, label="p99")
        ax.set_title(title)
        ax.set_xlabel("µs per call")
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
