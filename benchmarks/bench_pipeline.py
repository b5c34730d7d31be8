"""Data-plane scale benchmark: ingest + scrub + pairs on generated events.

    .venv/bin/python benchmarks/bench_pipeline.py                 # 100k and 1M events
    .venv/bin/python benchmarks/bench_pipeline.py --sizes 30000 --json out.json

Each stage runs as its own process (as `dvc repro` runs it), so wall time and peak RSS
(``ru_maxrss`` from ``wait4``) are the stage's own. The named baseline is the smallest
size measured in the same run: the ratio column is the cost per event relative to it
(1.0 = perfectly linear). Targets from the data-plane issue: 1M events in <= 120 s with
peak RSS <= 3 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "scrub", "pairs")
EVENTS_PER_INTERACTION = (
    3.3  # measured on the generator's defaults; refined from the real count below
)
TARGET_SECONDS_1M = 120.0
TARGET_RSS_GB = 3.0


def timed_process(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS in GB) of that process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024**2


def bench_size(n_events: int, workdir: Path, params: Path) -> dict:
    """Generate about ``n_events`` raw events in ``workdir`` and time each data stage on them."""
    py = sys.executable
    n_interactions = max(1, int(n_events / EVENTS_PER_INTERACTION))
    gen_wall, _ = timed_process(
        [
            py,
            "-m",
            "pipelines",
            "generate",
            "--params",
            str(params),
            "--n-interactions",
            str(n_interactions),
            "--out",
            str(workdir / "data" / "raw"),
        ],
        ROOT,
    )
    events = sum(1 for f in (workdir / "data" / "raw" / "events").iterdir() for _ in f.open("rb"))
    row = {"events": events, "generate_s": round(gen_wall, 2), "stages": {}}
    for stage in STAGES:
        wall, rss = timed_process(
            [py, "-m", "pipelines", stage, "--params", str(params), "--root", str(workdir)], ROOT
        )
        row["stages"][stage] = {"seconds": round(wall, 2), "peak_rss_gb": round(rss, 3)}
    row["total_s"] = round(sum(s["seconds"] for s in row["stages"].values()), 2)
    row["peak_rss_gb"] = max(s["peak_rss_gb"] for s in row["stages"].values())
    row["us_per_event"] = round(row["total_s"] / events * 1e6, 2)
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[100_000, 1_000_000],
        help="approximate event counts",
    )
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--keep", action="store_true", help="keep the generated work folders")
    args = ap.parse_args(argv)
    results = []
    base = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        for size in sorted(args.sizes):
            work = base / f"n{size}"
            work.mkdir()
            # shared/ beside the work folder, as beside the repo (params refer to ../shared)
            (base / "shared").exists() or (base / "shared").symlink_to(ROOT.parent / "shared")
            params = ROOT / "params.yaml"
            print(f"== {size:,} events", flush=True)
            row = bench_size(size, work, params)
            results.append(row)
            print(json.dumps(row, indent=1), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    baseline = results[0]
    print("\nevents      ingest   scrub   pairs   total   peak RSS   us/event  vs baseline")
    for r in results:
        s = r["stages"]
        ratio = r["us_per_event"] / baseline["us_per_event"]
        print(
            f"{r['events']:>9,}  {s['ingest']['seconds']:6.1f}s {s['scrub']['seconds']:6.1f}s "
            f"{s['pairs']['seconds']:6.1f}s {r['total_s']:6.1f}s  {r['peak_rss_gb']:6.2f} GB  "
            f"{r['us_per_event']:8.1f}  {ratio:5.2f}x"
        )
    print(
        f"(baseline: the {baseline['events']:,}-event run; targets: 1M events <= {TARGET_SECONDS_1M:.0f} s, "
        f"peak RSS <= {TARGET_RSS_GB:.0f} GB)"
    )
    out = {"baseline": "smallest size in this run", "results": results}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
