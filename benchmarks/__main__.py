"""Run every benchmark and print its figures: ``python -m benchmarks [--quick]``.

Each benchmark is also a script of its own (see benchmarks/README.md); this runner
calls them one after another and writes all figures to ``benchmarks/out/``.
``--quick`` uses small sizes (a smoke run, not figures to report).
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"

# (script, full-size arguments, quick arguments)
BENCHMARKS: list[tuple[str, list[str], list[str]]] = [
    ("bench_scrub.py", [], ["--rounds", "1", "--presidio-sample", "200", "--synthetic", "20000"]),
    ("pii_quality.py", [], []),
    ("bench_pipeline.py", ["--sizes", "100000", "1000000"], ["--sizes", "10000", "30000"]),
    ("bench_drift.py", [], ["--quick"]),
    # the real-data DPO check of issue 10 (baseline: the shorter-response rule and the
    # starting model, on the same held-out hh-rlhf pairs); ~15-25 min at full size on 2 cores
    ("hh_rlhf_dpo.py", [], ["--quick"]),
    # train + evaluate on each device present (baseline: the CPU in the same run);
    # needs data/pairs from `make run`
    ("bench_train.py", [], ["--quick"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="small sizes: check the harness, not the figures"
    )
    ap.add_argument("--only", nargs="*", help="run only these scripts (e.g. bench_pipeline.py)")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    for script, full, quick in BENCHMARKS:
        if args.only and script not in args.only:
            continue
        path = HERE / script
        if not path.exists():
            print(f"-- {script}: not present, skipped")
            continue
        argv = [
            str(path),
            *(quick if args.quick else full),
            "--json",
            str(OUT / f"{path.stem}.json"),
        ]
        print(f"\n==================== {script} {' '.join(argv[1:])}", flush=True)
        sys.argv = argv
        try:
            runpy.run_path(str(path), run_name="__main__")
        except SystemExit as stop:  # one benchmark's refusal (no data, say) ends only that one
            if stop.code not in (None, 0):
                print(f"-- {script}: stopped ({stop.code})", flush=True)


if __name__ == "__main__":
    main()
