"""Converter benchmark at the real CLIBD size: parity and cost of ``convert-clibd`` on a full-size checkpoint.

Builds the independent reference of the original model (``tests/reference_clibd.py``) at the released
``clibd-base`` sizes (ViT-B/16 224 px with LoRA q/v adapters, BarcodeBERT-base 5-mer, bert-small; 768-d
space) with random weights, saves its state dict as the original ``best.pth``, converts it with
``convert_checkpoint`` and compares the embeddings of the reference and the converted model on random
images, synthetic barcodes and taxonomy strings (random weights: parity, not accuracy).

    python benchmarks/bench_hub.py [--out benchmarks/results/hub.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from reference_clibd import ReferenceCLIBD, ReferenceSizes, original_state_dict, randomize_  # noqa: E402

from bioscan_clip_hf import BioscanClipModel, BioscanClipProcessor  # noqa: E402
from bioscan_clip_hf.atomic import write_text  # noqa: E402
from bioscan_clip_hf.convert_clibd import convert_checkpoint  # noqa: E402
from bioscan_clip_hf.processing_bioscan_clip import default_text_vocab_dir  # noqa: E402

CLIBD_BASE = ReferenceSizes(
    image_size=224, patch_size=16, vision_hidden=768, vision_layers=12, vision_heads=12, vision_mlp=3072,
    dna_hidden=768, dna_layers=12, dna_heads=12, dna_intermediate=3072, dna_vocab=1027,
    text_hidden=512, text_layers=4, text_heads=8, text_intermediate=2048, text_vocab=30522,
    max_position_embeddings=512, output_dim=768, lora_rank=4,
)


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "hub.json")
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rng = random.Random(0)

    t0 = time.perf_counter()
    ref = randomize_(ReferenceCLIBD(CLIBD_BASE, "clibd", ("image", "dna", "text")), seed=0).eval()
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in ref.parameters())
    result: dict = {"benchmark": "convert-clibd at clibd-base size (random weights)",
                    "machine": "2-core CPU, shared", "python": platform.python_version(),
                    "torch": torch.__version__, "params": n_params, "reference_build_s": round(build_s, 2)}
    with tempfile.TemporaryDirectory(prefix="bench-hub-") as tmp:
        ckpt = Path(tmp) / "best.pth"
        sd = original_state_dict(ref)
        result["checkpoint_entries"] = len(sd)
        torch.save(sd, ckpt)
        del sd
        result["checkpoint_mb"] = round(ckpt.stat().st_size / 1e6, 1)

        t0 = time.perf_counter()
        out = convert_checkpoint(ckpt, Path(tmp) / "converted", text_tokenizer=default_text_vocab_dir())
        result["convert_s"] = round(time.perf_counter() - t0, 2)
        result["output_files"] = sorted(p.name for p in out.iterdir())

        t0 = time.perf_counter()
        model = BioscanClipModel.from_pretrained(out).eval()
        processor = BioscanClipProcessor.from_pretrained(out)
        result["load_converted_s"] = round(time.perf_counter() - t0, 2)

        pixels = torch.rand(args.batch, 3, 224, 224)
        barcodes = ["".join(rng.choice("ACGT") for _ in range(rng.randint(600, 700))) for _ in range(args.batch)]
        texts = ["Diptera Cecidomyiidae not_classified not_classified", "Lepidoptera Gelechiidae Tuta Tuta absoluta",
                 "Hymenoptera Braconidae Apanteles Apanteles sp", "Coleoptera Staphylinidae Atheta Atheta sp"][: args.batch]
        inputs = processor(dna=barcodes, text=texts)
        t0 = time.perf_counter()
        ref_emb = ref.embed(pixel_values=pixels, dna_ids=inputs["dna_input_ids"], input_ids=inputs["input_ids"],
                            token_type_ids=inputs["token_type_ids"], attention_mask=inputs["attention_mask"])
        result["reference_forward_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        with torch.no_grad():
            ours = model(pixel_values=pixels, **inputs)
        result["converted_forward_s"] = round(time.perf_counter() - t0, 2)
        parity = {}
        for tower in ("image", "dna", "text"):
            a, b = ref_emb[tower], getattr(ours, f"{tower}_embeds")
            parity[tower] = {"min_cosine": round(F.cosine_similarity(a, b).min().item(), 8),
                             "max_abs_diff": float(f"{(a - b).abs().max().item():.3e}")}
        result["parity"] = parity
        result["batch"] = args.batch
    result["peak_rss_gb"] = round(_peak_rss_gb(), 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
