"""Affinity mimicking across 2 gloo processes: each rank's rows against the gathered columns, with gradients
through the gather, give the loss and gradients of one process holding the whole batch.

The ranks are forked from the test process (no second import of torch), so the check takes about a second."""

from __future__ import annotations

import multiprocessing as mp

import pytest
import torch

from cream.clip.loss import AffinityLoss

WORLD, ROWS, DIM = 2, 3, 5


def _features(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.functional.normalize(torch.randn(WORLD * ROWS, DIM, generator=g, dtype=torch.float64), dim=-1)
            for _ in range(4)]


LOSS = AffinityLoss(logit_scale=0.0, alpha=0.5)  # learned scales and the hard term: every part gathered


def _rank(rank: int, init: str, out: mp.Queue) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        mine = [f[rank * ROWS:(rank + 1) * ROWS].clone().requires_grad_(i < 2) for i, f in enumerate(_features(0))]
        loss = LOSS((mine[0], mine[1]), (mine[2], mine[3]), torch.tensor(4.0), torch.tensor(6.0))
        loss.backward()
        # what DDP does with the weights' gradients: the mean over ranks, here of the features' own
        # plain lists: a tensor would travel as shared memory, gone once this process exits
        out.put((rank, loss.item(), (mine[0].grad / WORLD).tolist(), (mine[1].grad / WORLD).tolist()))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_gathered_affinity_loss_equals_the_whole_batch_in_one_process(tmp_path):
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_rank, args=(r, init, out)) for r in range(WORLD)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    whole = [f.clone().requires_grad_(i < 2) for i, f in enumerate(_features(0))]
    loss = LOSS((whole[0], whole[1]), (whole[2], whole[3]), torch.tensor(4.0), torch.tensor(6.0))
    loss.backward()
    # the loss is a mean over rows: the whole batch's is the mean of the ranks' (equal row counts)
    assert sum(r[1] for r in results) / WORLD == pytest.approx(loss.item(), rel=1e-6)  # the loss computes in float32
    for rank, _, grad_image, grad_text in results:
        rows = slice(rank * ROWS, (rank + 1) * ROWS)
        assert torch.allclose(torch.tensor(grad_image, dtype=torch.float64), whole[0].grad[rows], atol=1e-6)
        assert torch.allclose(torch.tensor(grad_text, dtype=torch.float64), whole[1].grad[rows], atol=1e-6)
    assert results[0][1] != results[1][1]  # the ranks did see different rows
