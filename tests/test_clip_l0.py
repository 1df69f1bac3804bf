"""Automatic weight inheritance: hard-concrete masks, expected size, Lagrangian ascent, physical pruning."""

from __future__ import annotations

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from cream.clip.l0 import (  # noqa: E402
    L0Masks,
    deterministic_mask,
    keep_probability,
    sample_hard_concrete,
    tower_params,
)
from cream.clip.prune import prune, prune_to_shape, shape_of  # noqa: E402
from cream.errors import CreamError  # noqa: E402

CFG = {"embed_dim": 16,
       "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 64, "layers": 2, "head_width": 8, "mlp_ratio": 2},
       "text_cfg": {"context_length": 8, "vocab_size": 50, "width": 64, "heads": 8, "layers": 2, "mlp_ratio": 2}}


def tiny_clip(seed: int = 0, custom_text: bool = False):
    torch.manual_seed(seed)
    return (open_clip.CustomTextCLIP if custom_text else open_clip.CLIP)(**CFG).eval()


def inputs():
    g = torch.Generator().manual_seed(1)
    text = torch.randint(1, 40, (3, 8), generator=g)
    text[:, 5] = 49  # the end token (argmax pooling)
    return torch.randn(3, 3, 16, 16, generator=g), text


def encode(model, image, text):
    return torch.cat([model.encode_image(image), model.encode_text(text)], dim=1)


def counted(model) -> int:
    return sum(tower_params(model, t) for t in L0Masks(model, 0.0).towers)


def test_sample_statistics_and_limits():
    torch.manual_seed(0)
    log_alpha = torch.tensor([-1.0, 0.0, 2.0]).repeat(100000, 1)
    z = sample_hard_concrete(log_alpha)
    assert z.min() >= 0.0 and z.max() <= 1.0
    assert (z == 0).any() and (z == 1).any() and ((z > 0) & (z < 1)).any()
    torch.testing.assert_close((z != 0).float().mean(0), keep_probability(log_alpha[0]), atol=0.01, rtol=0)
    assert (sample_hard_concrete(torch.full((1000,), 10.0)) == 1).float().mean() > 0.99  # init 10 = keep


def test_deterministic_mask_zeroes_the_expected_number_of_smallest():
    log_alpha = torch.tensor([5.0, -5.0, 0.3, -4.0, 6.0, -6.0])
    mask = deterministic_mask(log_alpha)
    zeros = round(6 - keep_probability(log_alpha).sum().item())
    assert zeros == 3 and (mask == 0).sum() == 3
    assert torch.equal(mask == 0, log_alpha < 0)
    kept = log_alpha >= 0
    torch.testing.assert_close(mask[kept], torch.sigmoid(log_alpha[kept] / (2 / 3) * 0.8))


@pytest.mark.parametrize("custom_text", [False, True])
def test_expected_size_equals_direct_count_on_known_masks(custom_text):
    model = tiny_clip(custom_text=custom_text)
    l0 = L0Masks(model, 0.5)
    g = torch.Generator().manual_seed(3)

    def binary(n, keep=None):
        m = (torch.rand(n, generator=g) < 0.6).float()
        if keep is not None:
            m[:] = 0
            m[:keep] = 1
        m[0] = 1
        return m

    masks = {t.name: {"hidden": binary(64), "heads": [binary(8), binary(8, keep=0)],
                      "intermediate": [binary(128), binary(128)]} for t in l0.towers}
    expected = l0.expected_params(masks)
    prune(model, l0.towers, masks)
    for t in l0.towers:
        assert round(expected[t.name].item()) == tower_params(model, t)


def test_lagrangian_is_ascended_in_lambda_and_descended_in_log_alpha():
    model = tiny_clip()
    l0 = L0Masks(model, 0.5, warmup_steps=10)
    assert l0.target(0) == pytest.approx([l0.start_sparsity[0]]) and l0.target(5)[0] == pytest.approx(0.25, abs=1e-3)
    opt = torch.optim.Adam(l0.param_groups(lr=0.02, lambda_lr=0.02))
    before = l0.lambdas.detach().clone()
    alpha = l0.log_alpha["image"]["hidden"].detach().clone()
    loss = l0.lagrangian(step=10)
    assert loss.item() > 0
    loss.backward()
    opt.step()
    assert (l0.lambdas > before).all()  # ascent: the multipliers grow while the target is missed
    assert (l0.log_alpha["image"]["hidden"] < alpha).all()  # descent: gates move towards pruning


def test_two_sided_lagrangian_pulls_an_overshoot_back_and_the_spec_s_ignores_it():
    model = tiny_clip()
    spec, cofi = L0Masks(model, 0.2, init_log_alpha=-3.0), L0Masks(model, 0.2, init_log_alpha=-3.0, two_sided=True)
    assert spec.expected_sparsity()[0].item() > 0.5  # gates mostly closed: far past the 0.2 target
    assert spec.lagrangian(step=0).item() == 0.0
    opt = torch.optim.Adam(cofi.param_groups(lr=0.02, lambda_lr=0.02))
    alpha = cofi.log_alpha["image"]["hidden"].detach().clone()
    cofi.lagrangian(step=0).backward()
    opt.step()
    assert (cofi.log_alpha["image"]["hidden"] > alpha).all()  # gates reopen towards the target



def _train_to_target(l0, steps):
    """The L0 loop with a stand-in for the distillation loss: a random utility of keeping each gate,
    which pulls back against the Lagrangian as a task loss does."""
    g = torch.Generator().manual_seed(0)
    utility = l0.per_gate(lambda la: 10 * torch.rand(la.shape, generator=g))
    opt = torch.optim.Adam(l0.param_groups(lr=0.05, lambda_lr=0.05))
    for step in range(steps):
        opt.zero_grad()
        scores = l0.scores()
        keep = sum((utility[n][k] * scores[n][k]).mean() for n in scores for k in scores[n])
        (l0.lagrangian(step) - keep).backward()
        opt.step()


def test_prune_to_half_matches_target_and_masked_outputs():
    model = tiny_clip()
    full = counted(model)
    l0 = L0Masks(model, 0.5, warmup_steps=60, init_log_alpha=3.0)
    _train_to_target(l0, 120)
    masks = l0.deterministic()
    assert ((masks["image"]["hidden"] > 0) & (masks["image"]["hidden"] < 0.999)).any()  # soft values get folded
    image, text = inputs()
    with torch.no_grad():
        masked = l0.call(model, masks, lambda m: encode(m, image, text))
        prune(model, l0.towers, masks)
        dense = encode(model, image, text)
    assert abs(counted(model) - 0.5 * full) <= 0.02 * 0.5 * full
    torch.testing.assert_close(dense, masked, atol=1e-5, rtol=0)
    assert model.visual.transformer.resblocks[0].attn.in_proj_weight.shape[1] < 64


def test_pruned_shape_rebuilds_for_resume():
    model = tiny_clip()
    full = {t.name: tower_params(model, t) for t in L0Masks(model, 0.0).towers}
    l0 = L0Masks(model, 0.4)
    with torch.no_grad():
        for p in l0.log_alpha.parameters():
            p.normal_(0.0, 3.0, generator=torch.Generator().manual_seed(p.numel()))
    l0.prune(model)
    shape = shape_of(model)
    assert shape["image"]["hidden"] < 64 and len(shape["text"]["heads"]) == 2
    rebuilt = prune_to_shape(tiny_clip(seed=5), shape)
    rebuilt.load_state_dict(model.state_dict())
    image, text = inputs()
    with torch.no_grad():
        torch.testing.assert_close(encode(rebuilt, image, text), encode(model, image, text))
    stage2 = L0Masks(model, 0.6, reference_params=full)
    assert stage2.start_sparsity[0] == pytest.approx(1 - counted(model) / sum(full.values()), abs=1e-4)


def test_masked_training_step_reaches_log_alpha_and_weights():
    model = tiny_clip().train()
    l0 = L0Masks(model, 0.5, init_log_alpha=0.0)  # at 10 a sampled gate sits on the clamp: no gradient
    image, text = inputs()
    out = l0.call(model, l0.sample(), lambda m: encode(m, image, text))
    out.square().mean().backward()
    assert l0.log_alpha["text"]["intermediate"].grad[128:].abs().sum() > 0  # the second layer's neurons
    assert model.visual.transformer.resblocks[1].mlp.c_fc.weight.grad is not None


def test_unsupported_towers_and_values_are_refused():
    model = tiny_clip()
    with pytest.raises(CreamError, match="unknown tower 'audio'"):
        L0Masks(model, 0.5, tower_names=("audio",))
    with pytest.raises(CreamError, match="target_sparsity"):
        L0Masks(model, 1.5)
    resnet = open_clip.CLIP(16, {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8},
                            CFG["text_cfg"])
    with pytest.raises(CreamError, match="ModifiedResNet"):
        L0Masks(resnet, 0.5)
