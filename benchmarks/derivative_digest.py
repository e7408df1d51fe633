"""Print a digest of every derivative under a folder, to compare two runs file by file.

Usage: ``python benchmarks/derivative_digest.py OUT_DIR [--compare OTHER_DIR]``.

A ``.nii.gz`` is digested on its uncompressed bytes (header + data): gzip stamps the write
time into its own header, so two identical images compress to different files. Logs,
reports, figures and the work folder are left out (they name the run, its time or its
paths); everything else (images, sidecars, tables) must match byte for byte. Used to show
that a refactoring changed no output (the architecture issue).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
from pathlib import Path

SKIP_PARTS = {"log", "figures", "group_figures"}
SKIP_SUFFIXES = (".html", ".png", ".svg")


def digest(path: Path) -> str:
    data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    return hashlib.sha256(data).hexdigest()[:16]


def digests(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or SKIP_PARTS & set(rel.parts) or path.name.endswith(SKIP_SUFFIXES):
            continue
        out[rel.as_posix()] = digest(path)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--compare", type=Path, help="another output folder to compare with")
    opts = parser.parse_args(argv)
    mine = digests(opts.root)
    if opts.compare is None:
        for rel, value in mine.items():
            print(f"{value}  {rel}")
        return 0
    theirs = digests(opts.compare)
    differ = 0
    for rel in sorted(set(mine) | set(theirs)):
        a, b = mine.get(rel, "missing"), theirs.get(rel, "missing")
        if a != b:
            differ += 1
            print(f"DIFFERS  {rel}  {a}  {b}")
    same = len(set(mine) & set(theirs)) - sum(
        1 for r in set(mine) & set(theirs) if mine[r] != theirs[r]
    )
    print(f"{same} files identical, {differ} differ or are missing on one side")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
