"""Global negatives: 2 CPU processes (gloo, real `accelerate launch`) give the loss and the gradients
of one process on the concatenated batch.

The test launches this file as the worker; each process embeds its half of the batch through the
DDP-wrapped tiny model, gathers with gradients (training/loss.py), back-propagates, and saves its
loss and parameter gradients. The test recomputes everything in one process on the full batch with
the model file's `bioscan_clip_loss` and compares.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 8
MODALITIES = ["image", "dna", "text"]


def _inputs(n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    return {
        "pixel_values": torch.rand(n, 3, 224, 224, generator=g),
        "dna_input_ids": torch.randint(3, 1027, (n, 133), generator=g),
        "input_ids": torch.randint(1000, 30000, (n, 20), generator=g),
        "attention_mask": torch.ones(n, 20, dtype=torch.long),
    }


def _model():
    from bioscan_clip_hf import BioscanClipConfig, BioscanClipModel

    torch.manual_seed(0)
    # eval(): dropout off, so the two runs see the same function; gradients are still computed.
    return BioscanClipModel(BioscanClipConfig.from_preset("tiny", modalities=MODALITIES)).eval()


def _embeds(out) -> dict[str, torch.Tensor]:
    return {"image": out.image_embeds, "dna": out.dna_embeds, "text": out.text_embeds}


def _worker(out_dir: Path) -> None:
    from accelerate import Accelerator

    from training.loss import gathered_clip_loss

    acc = Accelerator(cpu=True)
    assert acc.num_processes == 2, acc.num_processes
    model = _model()
    if acc.is_main_process:
        torch.save(model.state_dict(), out_dir / "init.pt")
    ddp = acc.prepare(model)
    local = GLOBAL_BATCH // acc.num_processes
    part = {k: v[acc.process_index * local : (acc.process_index + 1) * local] for k, v in _inputs(GLOBAL_BATCH).items()}
    loss = gathered_clip_loss(_embeds(ddp(**part)), acc.unwrap_model(ddp).logit_scale)
    acc.backward(loss)
    grads = {n: p.grad.clone() for n, p in acc.unwrap_model(ddp).named_parameters() if p.grad is not None}
    torch.save({"loss": loss.detach(), "grads": grads, "backend": torch.distributed.get_backend()},
               out_dir / f"rank{acc.process_index}.pt")
    acc.wait_for_everyone()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gathered_loss_equals_one_process_on_concatenated_batch(tmp_path):
    from bioscan_clip_hf.modeling_bioscan_clip import bioscan_clip_loss

    # `--multi_gpu` selects accelerate's multi-process launcher (torchrun); the worker asks for the
    # CPU, so the two processes talk over gloo whether or not the machine has GPUs.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           __file__, str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    model = _model()
    model.load_state_dict(torch.load(tmp_path / "init.pt"))
    ref_loss = bioscan_clip_loss(_embeds(model(**_inputs(GLOBAL_BATCH))), model.logit_scale)
    ref_loss.backward()
    ref = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert len(ref) == sum(1 for p in model.parameters() if p.requires_grad)

    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["backend"] == "gloo"
        torch.testing.assert_close(got["loss"], ref_loss.detach(), rtol=1e-5, atol=1e-6)
        assert got["grads"].keys() == ref.keys()
        for name, g in ref.items():
            torch.testing.assert_close(got["grads"][name], g, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_gathered_loss_is_the_model_loss_in_one_process():
    from bioscan_clip_hf.modeling_bioscan_clip import bioscan_clip_loss
    from training.loss import gathered_clip_loss

    g = torch.Generator().manual_seed(1)
    emb = {m: torch.nn.functional.normalize(torch.randn(6, 16, generator=g), dim=-1) for m in ("image", "dna")}
    scale = torch.tensor(2.6593)
    assert torch.equal(gathered_clip_loss(emb, scale), bioscan_clip_loss(emb, scale))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    _worker(Path(sys.argv[1]))
