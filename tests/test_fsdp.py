"""train.fsdp (llm2clip/train/fsdp.py): 2 gloo processes sharding a LoRA Llama per decoder
layer train exactly as 1 process on the global batch and as DDP; a checkpoint written from
the shards is today's full checkpoint, and resuming from it equals an uninterrupted run.

The worker (tests/dist_scripts/fsdp_worker.py) runs stage 1's objective; the single-process
reference runs the same code here.
"""
from pathlib import Path

import pytest
import torch
from helpers import load_worker, torchrun
from safetensors.torch import load_file

WORKER = Path(__file__).parent / "dist_scripts" / "fsdp_worker.py"


def read(out: Path, name: str) -> tuple[torch.Tensor, dict, dict]:
    tensors = load_file(str(out / f"{name}.safetensors"))
    weights = {k[len("weight/"):]: v for k, v in tensors.items() if k.startswith("weight/")}
    optimizer = {k: v for k, v in tensors.items() if k.startswith("optimizer/")}
    return tensors["losses"], weights, optimizer


def assert_same_training(a, b, atol: float) -> None:
    (loss_a, weights_a, opt_a), (loss_b, weights_b, opt_b) = a, b
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=atol)
    assert set(weights_b) == set(weights_a) and all("lora_" in name for name in weights_a)
    for name in weights_a:
        torch.testing.assert_close(weights_b[name], weights_a[name], rtol=0, atol=atol, msg=lambda m: f"{name}: {m}")
    assert set(opt_b) == set(opt_a)
    for name in opt_a:
        torch.testing.assert_close(opt_b[name], opt_a[name], rtol=1e-4, atol=atol, msg=lambda m: f"{name}: {m}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama):
    """The single-process reference and every 2-process run of SimCSE."""
    out = tmp_path_factory.mktemp("fsdp")
    load_worker(WORKER).run("single", tiny_llama, out, False)
    torchrun(2, [str(WORKER), tiny_llama, str(out)], timeout=600)
    return out


@pytest.mark.distributed
def test_fsdp_on_two_processes_equals_one_process_and_ddp(runs):
    single, ddp, fsdp = read(runs, "single"), read(runs, "ddp"), read(runs, "fsdp")
    # training moved the weights (LoRA's B starts at zero), so matching is not trivial
    assert all(w.abs().max() > 1e-3 for name, w in single[1].items() if "lora_B" in name)
    assert_same_training(single, fsdp, atol=1e-5)
    assert_same_training(ddp, fsdp, atol=1e-5)


@pytest.mark.distributed
def test_fsdp_with_mntp_equals_ddp(runs):
    """MNTP runs the layers twice per step (the SimCSE pass and the masked pass) and reads
    the LM head tied to the embeddings. Its loss is each rank's own mean over its masked
    tokens, so the reference is DDP, not one process."""
    assert_same_training(read(runs, "ddp-mntp"), read(runs, "fsdp-mntp"), atol=1e-5)


@pytest.mark.distributed
def test_resuming_from_a_checkpoint_of_the_shards_equals_an_uninterrupted_run(runs):
    assert_same_training(read(runs, "fsdp"), read(runs, "fsdp-resume"), atol=1e-6)
    checkpoint = runs / "checkpoints" / "checkpoint-00000002"
    weights = load_file(str(checkpoint / "weights.safetensors"))
    single_shapes = {k: v.shape for k, v in read(runs, "single")[1].items()}
    assert {k: v.shape for k, v in weights.items()} == single_shapes  # full tensors, today's names


@pytest.mark.distributed
def test_bf16_compute_stays_close_to_fp32(runs):
    fp32, bf16 = read(runs, "fsdp"), read(runs, "fsdp-bf16")
    torch.testing.assert_close(bf16[0], fp32[0], rtol=0, atol=5e-2)
    assert not torch.equal(bf16[0], fp32[0])  # it did compute in bf16
