"""Write the Space's synthetic examples into ``space/examples/`` from the current demo model, bank and data.

Each example states what the page answers for it, checked here through the page itself
(:meth:`app.BioscanSpace.classify`, the handler behind ``/classify``) before it is written:

* two ``test`` specimens whose species the key bank holds: "In the library: *species*"
  (photo + barcode; barcode alone);
* two ``other_heldout`` specimens whose species the key bank lacks but whose genus it holds:
  "Probably an undescribed species of the genus *genus*" (photo + barcode; barcode alone).

For each, the candidates are tried in data order (orders not shown yet first) and the first one
whose answer states the claim is taken; the page labels the examples as chosen so. ``examples.json``
records the claims, the answers and the provenance (model and bank fingerprints) they were checked
against; ``tests/test_space_app.py`` asserts them again. Everything here is synthetic and labelled so.

Example:
    $ .venv/bin/python space/make_examples.py --model outputs/demo/model --data outputs/demo/data
"""

from __future__ import annotations

import argparse
import io
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import RANKS, BioscanSpace, SpaceSettings  # noqa: E402

from bioscan_clip_hf.atomic import atomic_dir, write_bytes, write_json, write_text  # noqa: E402
from bioscan_clip_hf.data import load_bioscan  # noqa: E402
from bioscan_clip_hf.zero_shot import ZeroShotClassifier  # noqa: E402

OUT = Path(__file__).resolve().parent / "examples"
# (claim, split it is drawn from, inputs the example fills)
PLAN = (
    ("in_library", "test", ("image", "dna")),
    ("in_library", "test", ("dna",)),
    ("new_species", "other_heldout", ("image", "dna")),
    ("new_species", "other_heldout", ("dna",)),
)
MAX_TRIES = 200  # candidates tried per example before giving up


def claim_text(claim: dict[str, str]) -> str:
    """The words the page's answer must contain for ``claim`` (see ``app.verdict``)."""
    if claim["kind"] == "in_library":
        return f"In the library: *{claim['species']}*"
    return f"Probably an undescribed species of the genus *{claim['genus']}*"


def page_answer(space: BioscanSpace, folder: Path, item: dict[str, Any]) -> str:
    """The page's answer (the verdict Markdown) for an example written in ``folder``."""
    image = str(folder / item["image"]) if item.get("image") else None
    dna = (folder / item["fasta"]).read_text(encoding="utf-8") if item.get("fasta") else ""
    return space.classify(image, dna, None, "species", 5, space.methods[0])[0]


def _claim(kind: str, record: dict[str, Any], bank_species: set[str], bank_genera: set[str]) -> dict[str, str] | None:
    """The claim ``record`` can illustrate, judged on the key bank's records (None: it cannot)."""
    species, genus = record.get("species"), record.get("genus")
    if kind == "in_library" and species in bank_species:
        return {"kind": kind, "species": species}
    if kind == "new_species" and species and species not in bank_species and genus in bank_genera:
        return {"kind": kind, "genus": genus}
    return None


def _files(record: dict[str, Any], inputs: tuple[str, ...], stem: str) -> dict[str, tuple[str, bytes]]:
    """The example's files by input: ``{"image": (name, original bytes), "fasta": (name, FASTA bytes)}``."""
    from PIL import Image

    files = {}
    if "image" in inputs:
        data = record["image"]["bytes"]
        with Image.open(io.BytesIO(data)) as img:
            files["image"] = (f"{stem}.{(img.format or 'png').lower().replace('jpeg', 'jpg')}", data)
    if "dna" in inputs:
        files["fasta"] = (f"{stem}.fasta", f">{record['processid']} synthetic specimen\n{record['dna_barcode']}\n".encode())
    return files


def _labels(claim: dict[str, str], record: dict[str, Any], inputs: tuple[str, ...]) -> dict[str, str]:
    """The page's labels: with the claim (``label``), and without it (``plain_label``) for other weights."""
    given = " + ".join("photo" if i == "image" else "barcode" for i in inputs)
    shown = " › ".join(record[r] for r in RANKS[:3])
    full = " › ".join(record[r] for r in RANKS if record.get(r)) if claim["kind"] == "in_library" else shown
    return {"label": f"{claim_text(claim).replace('*', '')} ({full}; {given})", "plain_label": f"{shown} ({given})"}


def choose(space: BioscanSpace, data_dir: str, work: Path) -> list[tuple[dict[str, Any], dict[str, tuple[str, bytes]]]]:
    """One checked example per :data:`PLAN` entry: ``(manifest item, files)``; SystemExit if one cannot be found."""
    table = space.clf.bank.table
    bank_species, bank_genera = set(table["species"].dropna()), set(table["genus"].dropna())
    chosen, used_orders = [], set()
    for n, (kind, split, inputs) in enumerate(PLAN, start=1):
        records = [r for r in load_bioscan(data_dir, split=split, decode_images=False)
                   if r.get("dna_barcode") and ("image" not in inputs or (r.get("image") or {}).get("bytes"))
                   and _claim(kind, r, bank_species, bank_genera)]
        records.sort(key=lambda r: r["order"] in used_orders)  # stable: data order within each group
        for record in records[:MAX_TRIES]:
            claim = _claim(kind, record, bank_species, bank_genera)
            files = _files(record, inputs, f"synthetic-{n}")
            item = {**_labels(claim, record, inputs), "claim": claim, "processid": record["processid"], "split": split,
                    **{r: record.get(r) for r in RANKS}, **{key: name for key, (name, _) in files.items()}}
            for name, data in files.values():
                write_bytes(work / name, data)
            answer = page_answer(space, work, item)
            if claim_text(claim) in answer:
                chosen.append((dict(item, answer=answer.split("\n\n")[0]), files))
                used_orders.add(record["order"])
                break
        else:
            raise SystemExit(f"none of the {min(len(records), MAX_TRIES)} {split} specimens tried ({' + '.join(inputs)}) gets "
                             f"the answer '{kind}' from this model; the examples would be false, so none were written")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="outputs/demo/model", help="model folder with its key_bank/ (default outputs/demo/model)")
    parser.add_argument("--bank", default=None, help="key bank folder (default: the model's key_bank/)")
    parser.add_argument("--data", default="outputs/demo/data", help="the data set the demo was trained on (default outputs/demo/data)")
    parser.add_argument("--out", type=Path, default=OUT, help="examples folder to (re)write (default space/examples)")
    args = parser.parse_args(argv)
    clf = ZeroShotClassifier.from_pretrained(args.model, bank=args.bank)
    space = BioscanSpace(clf, SpaceSettings(model=args.model, bank=args.bank, revision=None, photos=None))
    with tempfile.TemporaryDirectory() as work:
        chosen = choose(space, args.data, Path(work))
    provenance = clf.provenance(rank="species", k=5, method=space.methods[0])
    manifest = {
        "generated_with": {"command": shlex.join(["space/make_examples.py", *(sys.argv[1:] if argv is None else argv)]),
                           "model": str(args.model), "bank": args.bank, "data": str(args.data), "provenance": provenance},
        "examples": [item for item, _ in chosen],
    }
    with atomic_dir(args.out) as tmp:
        for _, files in chosen:
            for name, data in files.values():
                write_bytes(tmp / name, data)
        write_json(tmp / "examples.json", manifest)
        write_text(tmp / "README.md", "Written by space/make_examples.py; do not edit by hand (see its docstring).\n")
    print(f"wrote {len(chosen)} synthetic examples to {args.out}, checked against model {provenance['model']['fingerprint']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
