"""Peak memory of `slmtune predict --input` as the input grows: streaming keeps it flat.

Builds CSVs of N rows (an id column and AG News test texts, repeated), runs `slmtune predict RUN --input F`
in a fresh process for each N, and prints rows, seconds, rows/s and the process's peak resident memory.

    python bench/predict_memory.py RUN_DIR [--rows 10000,100000,1000000]

RUN_DIR is any finished run folder (e.g. from `slmtune train`); with a tiny model the figures show the
pipeline's own memory, with a real one the model's share too.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--rows", default="10000,100000,1000000")
    parser.add_argument("--data-dir", default=os.environ.get("SLMTUNE_DATA_DIR"))
    args = parser.parse_args()
    from slmtune.data import load_ag_news

    texts = load_ag_news(args.data_dir)[1].texts
    print(f"{'rows':>10}{'seconds':>10}{'rows/s':>10}{'peak RSS MB':>14}{'output rows':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(v) for v in args.rows.split(",")):
            source, output = Path(tmp) / f"in-{n}.csv", Path(tmp) / f"out-{n}.csv"
            with source.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["id", "text"])
                writer.writerows((f"row-{i}", texts[i % len(texts)]) for i in range(n))
            start = time.perf_counter()
            log = Path(tmp) / "stderr.txt"
            with log.open("w") as err:
                proc = subprocess.Popen([sys.executable, "-m", "slmtune.cli", "predict", args.run_dir, "--input",
                                         str(source), "--output", str(output)], stdout=subprocess.DEVNULL, stderr=err)
                _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the largest so far
            seconds = time.perf_counter() - start
            if os.waitstatus_to_exitcode(status) != 0:
                sys.exit(log.read_text().strip().splitlines()[-1])
            with output.open(encoding="utf-8") as handle:
                written = sum(1 for _ in csv.reader(handle)) - 1
            print(f"{n:>10,}{seconds:>10.1f}{n / seconds:>10.0f}{usage.ru_maxrss / 1024:>14.0f}{written:>13,}",
                  flush=True)
            source.unlink()
            output.unlink()


if __name__ == "__main__":
    main()
