"""distributed.py's gathers in one process, with torch.distributed replaced by a simulated
group of ranks whose tensors the test chooses. The real thing (2 gloo processes = 1
process on the global batch) is tests/test_distributed_loss.py; this one reaches each
line of the gather, pad, trim and slice logic where a mutation test can see it, and checks
it against the plain concatenation and its gradient."""
import pytest
import torch

import llm2clip.distributed as du


class SimulatedGroup:
    """torch.distributed as seen from `rank`, when rank r holds `rows[r]` and every rank
    computes the same loss on the gathered batch (so each sends the same upstream gradient)."""

    def __init__(self, rank, rows):
        self.my_rank, self.rows, self.calls = rank, rows, []

    def is_available(self):
        return True

    def is_initialized(self):
        return True

    def get_rank(self):
        return self.my_rank

    def get_world_size(self):
        return len(self.rows)

    def all_gather(self, outputs, tensor):
        self.calls.append("all_gather")
        assert len(outputs) == len(self.rows) and all(o.shape == tensor.shape for o in outputs)
        mine = len(self.rows[self.my_rank])
        if tensor.dtype == torch.long and tensor.shape == (1,):  # the sizes: this rank's is what it sent
            for r, (out, rows) in enumerate(zip(outputs, self.rows)):
                out.copy_(tensor if r == self.my_rank else torch.tensor([len(rows)]))
            return
        assert tensor.shape[0] == max(len(r) for r in self.rows)  # padded to the largest, with zeros
        torch.testing.assert_close(tensor[:mine], self.rows[self.my_rank])
        assert not tensor[mine:].any()
        for r, (out, rows) in enumerate(zip(outputs, self.rows)):
            out.zero_()
            out[:len(rows)] = tensor[:mine] if r == self.my_rank else rows

    def all_reduce(self, tensor, op=None):
        self.calls.append("all_reduce")
        assert op == "sum"
        tensor.mul_(len(self.rows))  # every rank's identical gradient, summed

    def barrier(self):
        self.calls.append("barrier")

    class ReduceOp:
        SUM = "sum"


ROWS = [torch.randn(3, 4, generator=torch.Generator().manual_seed(r)) for r in range(3)]
ROWS[1] = ROWS[1][:1]  # uneven: 3, 1 and 3 rows


@pytest.fixture(params=[0, 1, 2])
def group(request, monkeypatch):
    simulated = SimulatedGroup(request.param, ROWS)
    monkeypatch.setattr(du, "dist", simulated)
    return simulated


def test_rank_and_world_size_come_from_the_group(group):
    assert du.is_distributed() and du.rank() == group.my_rank and du.world_size() == 3


def test_gather_with_grad_concatenates_in_rank_order_and_returns_the_own_rows_gradient(group):
    mine = ROWS[group.my_rank].clone().requires_grad_()
    gathered = du.gather_with_grad(mine)
    torch.testing.assert_close(gathered, torch.cat(ROWS))
    weights = torch.arange(gathered.numel(), dtype=torch.float32).reshape(gathered.shape)
    (gathered * weights).sum().backward()
    start = sum(len(r) for r in ROWS[:group.my_rank])
    # d(loss)/d(own rows), summed over the 3 ranks that each computed the loss; DDP's mean
    # over ranks then divides the 3 out (see distributed.py)
    torch.testing.assert_close(mine.grad, 3 * weights[start:start + len(mine)])
    assert group.calls == ["all_gather", "all_gather", "all_reduce"]


def test_gather_no_grad_is_detached_and_concatenated(group):
    mine = ROWS[group.my_rank].clone().requires_grad_()
    gathered = du.gather_no_grad(mine)
    torch.testing.assert_close(gathered, torch.cat(ROWS))
    assert not gathered.requires_grad


def test_barrier_waits_only_with_several_ranks(group, monkeypatch):
    du.barrier()
    assert group.calls == ["barrier"]
    monkeypatch.setattr(du, "dist", SimulatedGroup(0, ROWS[:2]))
    du.barrier()
    assert du.dist.calls == ["barrier"]
    monkeypatch.setattr(du, "dist", SimulatedGroup(0, ROWS[:1]))
    du.barrier()
    assert du.dist.calls == []


def test_one_rank_or_no_group_passes_the_tensor_through(monkeypatch):
    x = torch.randn(2, 3, requires_grad=True)
    single = SimulatedGroup(0, [x.detach()])
    monkeypatch.setattr(du, "dist", single)
    assert du.gather_with_grad(x) is x and single.calls == []
    assert not du.gather_no_grad(x).requires_grad and single.calls == []
    monkeypatch.undo()
    assert not du.is_distributed() and du.rank() == 0 and du.world_size() == 1
