"""Two gloo ranks under DDP give the same losses and gradients as one process on the whole batch.

The worker (tests/dist_scripts/loss_worker.py) trains one step per (split, loss) on each
rank's share of a fixed global batch, with even (4+4) and uneven (5+3) shares; here we
redo each step in a single process on the concatenated batch, without DDP.
"""
from pathlib import Path

import pytest
import torch
from helpers import load_worker, torchrun
from safetensors.torch import load_file

WORKER = Path(__file__).parent / "dist_scripts" / "loss_worker.py"


@pytest.fixture(scope="module")
def two_rank_result(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("dist_loss")
    torchrun(2, [str(WORKER), str(out_dir)], timeout=120)
    return load_file(str(out_dir / "result.safetensors"))


def single_process_step(worker, result, split, loss_name):
    model = worker.initial_model(loss_name)
    prefix = f"{split}/{loss_name}/init/"
    model.load_state_dict({k[len(prefix):]: v for k, v in result.items() if k.startswith(prefix)})
    loss = model(loss_name, worker.global_batch())
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.distributed
@pytest.mark.parametrize("split", ["even", "uneven"])
@pytest.mark.parametrize("loss_name", ["simcse", "clip", "siglip"])
def test_two_ranks_match_one_process(two_rank_result, split, loss_name):
    worker = load_worker(WORKER)
    loss, grads = single_process_step(worker, two_rank_result, split, loss_name)

    per_rank = two_rank_result[f"{split}/{loss_name}/loss_per_rank"]
    assert per_rank.shape == (2,)
    torch.testing.assert_close(per_rank, loss.expand(2), rtol=0, atol=1e-6)

    prefix = f"{split}/{loss_name}/grad/"
    ddp_grads = {k[len(prefix):]: v for k, v in two_rank_result.items() if k.startswith(prefix)}
    assert set(ddp_grads) == set(grads) == worker.USED_PARAMETERS[loss_name]
    for name, grad in grads.items():
        assert grad.abs().max() > 1e-4, f"{name}: gradient too small to be a meaningful check"
        torch.testing.assert_close(ddp_grads[name], grad, rtol=0, atol=1e-6, msg=lambda m: f"{name}: {m}")
