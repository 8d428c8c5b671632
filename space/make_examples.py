"""Write the Space's synthetic examples into ``space/examples/`` (run once; the output is committed).

Specimens come from the package's synthetic data set with the settings ``make demo`` trains on
(``--size demo --seed 0``): two ``test`` specimens, whose species are in the demo key bank, and
two ``test_unseen`` specimens, whose species the bank lacks. Each gets its drawn photo (JPEG) and
its simulated barcode (FASTA); ``examples.json`` says which inputs each example row uses.
Everything here is synthetic and labelled so in the page.

Example:
    $ .venv/bin/python space/make_examples.py            # about 40 s on a CPU
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bioscan_clip_hf.synthetic import generate_synthetic_records
from bioscan_clip_hf.taxonomy import RANKS

OUT = Path(__file__).resolve().parent / "examples"
# (split, which inputs the example row fills, how the page describes the species)
PLAN = (
    ("test", ("image", "dna"), "species in the library"),
    ("test", ("dna",), "species in the library"),
    ("test_unseen", ("image", "dna"), "species missing from the library"),
    ("test_unseen", ("image",), "species missing from the library"),
)


def pick(records: list[dict], split: str, used_orders: set[str]) -> dict:
    """The first record of ``split`` with an image, preferring an order not shown yet."""
    candidates = [r for r in records if r["split"] == split and r.get("image")]
    fresh = [r for r in candidates if r["order"] not in used_orders]
    chosen = (fresh or candidates)[0]
    used_orders.add(chosen["order"])
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--size", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    records = generate_synthetic_records(args.size, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest, used_orders = [], set()
    for n, (split, inputs, status) in enumerate(PLAN, start=1):
        rec = pick(records, split, used_orders)
        lineage = " › ".join(rec[r] for r in RANKS if rec.get(r))
        item = {"label": f"{lineage} ({status}; {' + '.join('photo' if i == 'image' else 'barcode' for i in inputs)})",
                "processid": rec["processid"], "split": split, **{r: rec.get(r) for r in RANKS}}
        if "image" in inputs:
            item["image"] = f"synthetic-{n}.jpg"
            (args.out / item["image"]).write_bytes(rec["image"]["bytes"])
        if "dna" in inputs:
            item["fasta"] = f"synthetic-{n}.fasta"
            (args.out / item["fasta"]).write_text(f">{rec['processid']} synthetic specimen\n{rec['dna_barcode']}\n", encoding="utf-8")
        manifest.append(item)
    (args.out / "examples.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(manifest)} synthetic examples to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
