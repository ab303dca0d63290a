"""The table, goals and chart of benchmarks/edge_latency.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from _edge_latency_uint8 import headline_rows

if TYPE_CHECKING:
    from pathlib import Path

MODELS = {"mlp": "MLP, 1x1x28x28 float32 (3 KB)", "image": "image, 1x3x224x224 float32 (602 KB)"}


def _met(value: float, goal: float, *, at_most: bool = True) -> str:
    ok = value <= goal if at_most else value >= goal
    return "met" if ok else "not met"


def headline(report: dict[str, Any]) -> list[dict[str, Any]]:
    """REPORT.md's headline rows: each goal's ratio with its verdict."""
    r = report.get("ratios", {})
    rows = [] if "throughput" not in r else [
        ("Client(Edge) / raw socket, MLP b1 p50", r["mlp"]["client_vs_raw"], "client", True),
        ("edge / asyncio-streams responder, MLP b1 p50", r["mlp"]["server_vs_floor"], "server", True),
        ("shared memory / Client(Local), 602 KB image p50", r["image"]["shm_vs_local"], "shm_vs_local", True),
        ("edge c=64 MLP binary / bare Starlette+ORT", r["throughput"]["binary_vs_bare"], "throughput", False),
    ]  # fmt: skip
    rows += headline_rows(report)
    out = []
    for metric, value, goal, at_most in rows:
        target = report["goals"].get(goal, goal)
        met = value <= target if at_most else value >= target
        bound = "<=" if at_most else ">="
        verdict = "met" if met else "not met"
        out.append({"metric": metric, "value": f"{value:.2f}x (goal {bound} {target}x: {verdict})"})
    return out


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


def _uint8_lines(u: dict[str, Any]) -> list[str]:
    """The uint8-on-the-wire section: bytes and latency, float32 NCHW vs uint8 NHWC-baked."""
    goals, r, b, settings = u["goals"], u["ratios"], u["bytes"], u["settings"]
    float_, uint8 = "image", "image-uint8"
    lines = [
        "",
        "## uint8 images on the wire (same 3x224x224 model, float32 NCHW vs uint8 NHWC baked)",
        "",
        "`image-uint8` is `image` with `strato_training.graph.bake_preprocessing` "
        "(uint8 NHWC → cast → ×1/255 → NCHW) ahead of the same weights; the float request "
        "carries the same pixels already divided by 255, so both answer the same (largest "
        f"logit difference {u['max_abs_logit_diff']:.1e}, checked before timing). Same edge "
        "daemon; one `strato cloud local` per model. "
        f"{settings['calls']} `Client(Edge)` and {settings['cloud_calls']} Lambda calls per "
        f"model in {settings['rounds']} interleaved rounds (load average at the end: "
        f"{', '.join(f'{v:.1f}' for v in u['machine']['load_average_at_end'])})"
        + (
            "; measured in a run of its own (`--only-uint8`), after the sections above."
            if u.get("own_run")
            else "."
        ),
        "",
        "| bytes | float32 NCHW | uint8 NHWC | uint8 / float |",
        "|---|---:|---:|---:|",
    ]
    names = {"tensor": "tensor", "body": "binary OIP request body",
             "invoke_payload": "Lambda invoke payload (base64 envelope)"}  # fmt: skip
    for key, what in names.items():
        if key in b[float_]:
            ratio = r["tensor_bytes" if key == "tensor" else f"{key}_bytes"]
            lines.append(f"| {what} | {b[float_][key]:,} | {b[uint8][key]:,} | {ratio:.4f}x |")
    lines += ["", "| path | float32 p50 / p99 µs | uint8 p50 / p99 µs | uint8 / float p50 / p99 |"]
    lines.append("|---|---:|---:|---:|")
    for path, stats in u["latency"].items():
        f, q = stats[float_], stats[uint8]
        lines.append(
            f"| {path} | {f['p50_us']:,.0f} / {f['p99_us']:,.0f} | {q['p50_us']:,.0f} / "
            f"{q['p99_us']:,.0f} | {r[f'{path} p50_us']:.2f}x / {r[f'{path} p99_us']:.2f}x |"
        )
    edge = r["Client(Edge) TCP p50_us"]
    header = b[float_]["body"] - b[float_]["tensor"]
    lines += [
        "",
        f"- Size: tensor {r['tensor_bytes']:.4f}x, whole request body {r['body_bytes']:.4f}x "
        f"(both carry a JSON header of about {header} bytes) — goal <= {goals['size']}x "
        f"of the tensor bytes: {_met(r['tensor_bytes'], goals['size'])}.",
        f"- Latency, `Client(Edge)` p50: {edge:.2f}x — goal <= {goals['latency']}x: "
        f"{_met(edge, goals['latency'])}.",
    ]
    lam = r.get("Client(cloud=Lambda) → strato cloud local p50_us")
    if lam is not None:
        lines.append(
            f"- Latency, `Client(cloud=Lambda)` → emulator p50: {lam:.2f}x — goal <= "
            f"{goals['latency']}x: {_met(lam, goals['latency'])}."
        )
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
    lines += _uint8_lines(report["uint8"]) if "uint8" in report else []
    path.write_text("\n".join(lines) + "\n")


def write_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {m: (t, report["latency"][m]) for m, t in MODELS.items()}
    if "uint8" in report:  # each path's float and uint8 rows
        stats = {f"{path}, {m}": s for path, by in report["uint8"]["latency"].items()
                 for m, s in by.items()}  # fmt: skip
        panels["uint8"] = ("image float32 vs uint8 (log scale)", stats)
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5))
    for ax, (panel, (title, stats)) in zip(axes, panels.items(), strict=True):
        if panel == "uint8":  # Lambda calls are ms, edge calls µs
            ax.set_xscale("log")
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
