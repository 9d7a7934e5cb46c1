"""Build a real short-text dataset offline: Debian package synopses labelled with the package's archive section.

Source: the Packages index apt downloads (`apt-get update` on Debian 12 "bookworm" writes it under
/var/lib/apt/lists/, lz4-compressed or plain). Each binary package has a one-line synopsis ("Real-time strategy
game of ancient warfare", about 6 words) and a section (games, libs, python, net, ...): many classes, short,
keyword-heavy and imbalanced, the kind of labelled texts (item names, titles) a bag of words does well on.

Rows: one per distinct synopsis (a synopsis shared by packages of different sections is dropped as ambiguous);
packages whose section the synopsis spells out by construction are dropped (debug symbols, `-dev` files,
documentation, translations, transitional dummies); sections with at least --min-rows rows are kept. A seeded,
stratified --test share goes to test.csv (at most --test-rows of it), at most --train rows to train.csv
(columns text,label).

    apt-get update && python bench/data/build_debian.py [--lists /var/lib/apt/lists] [--out data/debian-sections]

Keep the output out of the repository (data/ is git-ignored).
"""

from __future__ import annotations

import argparse
import collections
import csv
import random
import re
import subprocess
from pathlib import Path

BY_CONSTRUCTION = re.compile(r"debug symbols|development files|header files|documentation|transitional|dummy package|"
                             r"translations? |language pack|locale|\(data files\)|data files for|-dbg", re.I)
LEFT_OUT_SECTIONS = {"libdevel", "doc", "debug", "oldlibs", "localization"}


def _read(path: Path) -> str:
    if path.suffix == ".lz4":
        return subprocess.run(["lz4", "-dc", str(path)], check=True, capture_output=True).stdout.decode("utf-8")
    return path.read_text(encoding="utf-8")


def packages(lists: Path) -> list[dict[str, str]]:
    found = sorted(p for p in lists.glob("*_main_binary-*_Packages*") if "security" not in p.name)
    if not found:
        raise SystemExit(f"no Packages index under {lists}: run apt-get update first")
    rows = []
    for path in found:
        for stanza in _read(path).split("\n\n"):
            fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", stanza, re.M))
            if "Package" in fields and "Description" in fields and "Section" in fields:
                rows.append(fields)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists", default="/var/lib/apt/lists")
    parser.add_argument("--out", default="data/debian-sections")
    parser.add_argument("--min-rows", type=int, default=400)
    parser.add_argument("--train", type=int, default=8500)
    parser.add_argument("--test", type=float, default=0.2)
    parser.add_argument("--test-rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    by_text: dict[str, set[str]] = collections.defaultdict(set)
    for fields in packages(Path(args.lists)):
        section = fields["Section"].split("/")[-1]  # contrib/games -> games
        text = " ".join(fields["Description"].split())
        if section in LEFT_OUT_SECTIONS or BY_CONSTRUCTION.search(text):
            continue
        by_text[text].add(section)
    rows = [(text, next(iter(sections))) for text, sections in sorted(by_text.items()) if len(sections) == 1]
    counts = collections.Counter(label for _, label in rows)
    kept = {label for label, n in counts.items() if n >= args.min_rows}
    rows = [row for row in rows if row[1] in kept]
    rng = random.Random(args.seed)
    by_label = collections.defaultdict(list)
    for row in rows:
        by_label[row[1]].append(row)
    train, test = [], []
    share = min(1.0, args.train / max(1, len(rows) * (1 - args.test)))
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        cut = round(len(group) * args.test)
        test += group[:cut]
        train += group[cut:cut + max(1, round((len(group) - cut) * share))]
    rng.shuffle(train)
    rng.shuffle(test)
    test = test[:args.test_rows]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train.csv", train), ("test.csv", test)):
        with (out / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(part)
    sizes = collections.Counter(label for _, label in train)
    words = sum(len(t.split()) for t, _ in train) / max(1, len(train))
    print(f"{out}: {len(train)} train, {len(test)} test rows, {len(kept)} sections, {words:.1f} words a text; "
          f"largest {sizes.most_common(1)[0]}, smallest {sizes.most_common()[-1]}")


if __name__ == "__main__":
    main()
