"""`make bench`: run every benchmark, keep the figures, draw them, and table them in the README.

Each script under bench/ prints its own figure beside its floor (`--json`); this runner only
collects: `bench/results.json` (with the machine it ran on), `bench/results.png` (one panel
per figure: figure vs floor), and the README's performance table between the markers
`<!-- bench:start -->` and `<!-- bench:end -->`.

Run: .venv/bin/python bench/run_all.py [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

Row = dict[str, Any]  # figure, value, floor, unit, better ("higher"|"lower"), note


def _seal(r: dict[str, Any]) -> list[Row]:
    return [
        {
            "figure": "seal + commit",
            "value": r["value"],
            "floor": r["floor"],
            "unit": "events/s",
            "better": "higher",
            "target": "ratio >= 0.8",
        }
    ]


def _scan(r: dict[str, Any]) -> list[Row]:
    return [
        {
            "figure": f"scan latency p{p} ({r['framing']})",
            "value": r["reader"][f"p{p}_us"],
            "floor": r["floor"][f"p{p}_us"],
            "unit": "µs",
            "better": "lower",
            "target": "p99 <= 2x floor + 1 ms" if p == 99 else "",
        }
        for p in (50, 99)
    ]


def _drain(r: dict[str, Any]) -> list[Row]:
    return [
        {
            "figure": "drain to HQ",
            "value": r["value"],
            "floor": r["floor"],
            "unit": "envelopes/s",
            "better": "higher",
            "target": f"RSS {r['peak_rss_mb']} MB ({r['peak_rss_mb_at_tenth']} MB at 1/10)",
        }
    ]


def _prompt(r: dict[str, Any]) -> list[Row]:
    return [
        {
            "figure": f"card -> prompt rendered p{p}",
            "value": r["page"]["painted"][f"p{p}_ms"],
            "floor": r["floor"]["painted"][f"p{p}_ms"],
            "unit": "ms",
            "better": "lower",
            "target": "",
        }
        for p in (50, 99)
    ]


def _footprint(r: dict[str, Any]) -> list[Row]:
    a, f = r["agent"], r["floor"]
    return [
        {
            "figure": "start to READY",
            "value": a["ready_s"],
            "floor": f["ready_s"],
            "unit": "s",
            "better": "lower",
            "target": "< 1.5 s",
        },
        {
            "figure": "idle CPU",
            "value": a["idle_cpu_pct"],
            "floor": f["idle_cpu_pct"],
            "unit": "%",
            "better": "lower",
            "target": "< 1 %",
        },
        {
            "figure": "RSS, two readers",
            "value": a["rss_mb"],
            "floor": f["rss_mb"],
            "unit": "MB",
            "better": "lower",
            "target": "< 60 MB",
        },
    ]


def _hq_ingest(r: dict[str, Any]) -> list[Row]:
    floor = r["floor_ed25519_verify"][f"{r['cores']} processes"]
    return [
        {
            "figure": f"HQ ingest, {n} serve process{'es' if n != '1' else ''} (PostgreSQL)",
            "value": v,
            "floor": floor,
            "unit": "envelopes/s",
            "better": "higher",
            "target": f"floor: bare Ed25519 verify on {r['cores']} cores",
        }
        for n, v in r["figures"].items()
    ]


def _generic(r: dict[str, Any]) -> list[Row]:
    """Scripts that already print rows: {"rows": [{figure, value, floor, unit, ...}]}."""
    return list(r.get("rows", []))


BENCHES: dict[str, tuple[list[str], list[str], Callable[[dict[str, Any]], list[Row]]]] = {
    # name: (args, quick args, parser)
    "seal": ([], ["--n", "1000", "--rounds", "10"], _seal),
    "scan_latency": ([], ["--scans", "300"], _scan),
    "drain": ([], ["--n", "10000"], _drain),
    "prompt_latency": ([], ["--cards", "60"], _prompt),
    "footprint": ([], ["--idle", "10"], _footprint),
    "pcsc_latency": ([], ["--taps", "50"], _generic),
    "hq_ingest": ([], ["--rounds", "1", "--envelopes", "100"], _hq_ingest),
}


def run(name: str, quick: bool) -> list[Row]:
    script = BENCH / f"{name}.py"
    if not script.exists():
        return []
    args, quick_args, parse = BENCHES[name]
    out = subprocess.run(
        [sys.executable, str(script), "--json", *(quick_args if quick else args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if out.returncode != 0:
        print(f"{name}: failed ({out.returncode}): {out.stderr.strip()[-500:]}", file=sys.stderr)
        return [
            {
                "figure": name,
                "value": None,
                "floor": None,
                "unit": "",
                "better": "",
                "target": "",
                "error": out.stderr.strip()[-300:],
            }
        ]
    text = out.stdout.strip()
    data = json.loads(text[text.index("{") :])
    rows = parse(data)
    for row in rows:
        row["bench"] = name
    return rows


def machine() -> dict[str, Any]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def ratio(row: Row) -> float | None:
    v, f = row.get("value"), row.get("floor")
    if not v or not f:
        return None
    return float(v) / float(f) if row["better"] == "higher" else float(f) / float(v)


def chart(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = [r for r in rows if r.get("value") is not None]
    cols = 3
    n = max(1, len(good))
    fig, axes = plt.subplots(
        (n + cols - 1) // cols, cols, figsize=(12, 2.6 * ((n + cols - 1) // cols))
    )
    flat = list(axes.flat) if hasattr(axes, "flat") else [axes]
    for ax, r in zip(flat, good, strict=False):
        ax.barh(["floor", "cumulus"], [r["floor"], r["value"]], color=["#9e9e9e", "#1565c0"])
        ax.set_title(f"{r['figure']}\n({r['unit']}, {r['better']} is better)", fontsize=8)
        ax.tick_params(labelsize=8)
        for i, v in enumerate([r["floor"], r["value"]]):
            ax.text(v, i, f" {num(v)}", va="center", fontsize=8)
    for ax in flat[len(good) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def table(rows: list[Row], mach: dict[str, Any]) -> str:
    lines = [
        f"Measured by `make bench` on {mach['cpu']} ({mach['cores']} cores), "
        f"Python {mach['python']}, {mach['at']}. Chart: `bench/results.png`.",
        "",
        "| figure | cumulus | floor | unit | ratio to floor | target |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("value") is None:
            lines.append(f"| {r['figure']} | failed | | | | {r.get('error', '')[:60]} |")
            continue
        q = ratio(r)
        lines.append(
            f"| {r['figure']} | {num(r['value'])} | {num(r['floor'])} | {r['unit']} | "
            f"{'' if q is None else f'{q:.2f}'} | {r.get('target', '')} |"
        )
    return "\n".join(lines)


def update_readme(text: str) -> None:
    readme = ROOT / "README.md"
    body = readme.read_text()
    if START in body and END in body:
        head, rest = body.split(START, 1)
        _, tail = rest.split(END, 1)
        body = f"{head}{START}\n{text}\n{END}{tail}"
    else:
        body += f"\n{START}\n{text}\n{END}\n"
    readme.write_text(body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    ap.add_argument("--only", nargs="*", choices=sorted(BENCHES))
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--chart-only", action="store_true", help="redraw from bench/results.json")
    args = ap.parse_args()
    if args.chart_only:
        chart(json.loads((BENCH / "results.json").read_text())["rows"], BENCH / "results.png")
        return
    rows: list[Row] = []
    for name in args.only or BENCHES:
        print(f"== {name}", file=sys.stderr, flush=True)
        rows += run(name, args.quick)
    mach = machine()
    results = BENCH / "results.json"
    if args.only and results.exists():  # keep the other benchmarks' last figures
        kept = [
            r for r in json.loads(results.read_text())["rows"] if r.get("bench") not in args.only
        ]
        rows = [*kept, *rows]
        rows.sort(key=lambda r: list(BENCHES).index(r.get("bench", "seal")))
    results.write_text(json.dumps({"machine": mach, "rows": rows}, indent=2))
    chart(rows, BENCH / "results.png")
    text = table(rows, mach)
    if not args.no_readme:
        update_readme(text)
    print(text)


if __name__ == "__main__":
    main()
