"""The prediction server under concurrent clients: throughput and latency of `slmtune serve RUN`.

Starts the server on a free local port, then for each concurrency level sends `--requests` requests of
`--texts` texts each (AG News test texts, or the run's own test rows) from that many client threads, and prints
texts/s, requests/s and the p50 / p95 / max latency per request; then `slmtune predict`'s own in-process rate on
the same texts, for scale. Run it alone on the machine.

    python bench/serve.py RUN [--concurrency 1,4,16] [--requests 200] [--texts 1] [--backend auto]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def texts_of(run_dir: str, n: int) -> list[str]:
    from slmtune.data import load_splits
    from slmtune.serve.loading import load_run

    run = load_run(run_dir)
    test = load_splits(run.config.data, run.config.seed).test.texts
    return [test[i % len(test)] for i in range(n)]


def main() -> None:
    import httpx

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--texts", type=int, default=1, help="texts per request")
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    pool = texts_of(args.run_dir, args.requests * args.texts)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "slmtune.cli", "serve", args.run_dir, "--port", str(port),
                               "--backend", args.backend, "--max-texts", str(max(256, args.texts))],
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)  # a benchmark polling a starting server, not a test
        httpx.post(f"{url}/predict", json={"texts": pool[:8]}, timeout=120)  # warm-up
        print(f"{'clients':>8}{'texts/s':>10}{'requests/s':>12}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
        for clients in [int(c) for c in args.concurrency.split(",")]:
            batches = [pool[i * args.texts:(i + 1) * args.texts] for i in range(args.requests)]

            def ask(texts, client) -> float:
                start = time.perf_counter()
                answer = client.post(f"{url}/predict", json={"texts": texts}, timeout=300)
                answer.raise_for_status()
                return time.perf_counter() - start

            with httpx.Client(limits=httpx.Limits(max_connections=clients)) as client, \
                    ThreadPoolExecutor(clients) as threads:
                start = time.perf_counter()
                latencies = list(threads.map(lambda texts, client=client: ask(texts, client), batches))
                wall = time.perf_counter() - start
            ms = np.asarray(latencies) * 1000
            print(f"{clients:>8}{args.requests * args.texts / wall:>10.1f}{args.requests / wall:>12.1f}"
                  f"{np.percentile(ms, 50):>9.1f}{np.percentile(ms, 95):>9.1f}{ms.max():>9.1f}", flush=True)
    finally:
        server.terminate()
        server.wait()
    from slmtune.serve.inference import predict

    start = time.perf_counter()
    predict(args.run_dir, pool, backend=args.backend)
    print(f"slmtune predict, in process, the same {len(pool)} texts in one call: "
          f"{len(pool) / (time.perf_counter() - start):.1f} texts/s")


if __name__ == "__main__":
    main()
