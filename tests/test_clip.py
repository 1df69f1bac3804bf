"""TinyCLIP on open_clip: affinity mimicking against a hand computation, manual inheritance, the published
configs' sizes, and a tiny distillation run that resumes bit-identically."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from cream.clip.config import ClipRunConfig  # noqa: E402
from cream.clip.inherit import depth_indices, inherit_manual, source_names  # noqa: E402
from cream.clip.loss import AffinityLoss, affinity_mimicking, clip_contrastive  # noqa: E402
from cream.clip.models import TINYCLIP_MODELS, build_clip  # noqa: E402
from cream.config import load_config  # noqa: E402

TEXT = {"context_length": 12, "vocab_size": 49408}


def vit_clip(width: int, layers: int, heads: int) -> dict:
    return {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": layers, "width": width, "patch_size": 8,
                                            "head_width": 8},
            "text_cfg": {**TEXT, "width": width, "heads": heads, "layers": layers}}


def hand_affinity(s_img, s_txt, t_img, t_txt, s_scale, t_scale) -> float:
    """(L_I2T + L_T2I) / 2 written out with loops over plain floats."""
    def ce(rows_s, cols_s, rows_t, cols_t):
        total = 0.0
        for i in range(len(rows_s)):
            zs = [s_scale * sum(a * b for a, b in zip(rows_s[i], c, strict=True)) for c in cols_s]
            zt = [t_scale * sum(a * b for a, b in zip(rows_t[i], c, strict=True)) for c in cols_t]
            p = [math.exp(z) / sum(math.exp(y) for y in zt) for z in zt]
            log_q = [z - math.log(sum(math.exp(y) for y in zs)) for z in zs]
            total -= sum(pi * lq for pi, lq in zip(p, log_q, strict=True))
        return total / len(rows_s)
    return (ce(s_img, s_txt, t_img, t_txt) + ce(s_txt, s_img, t_txt, t_img)) / 2


def _unit(*rows):
    t = torch.tensor(rows, dtype=torch.float64)
    return t / t.norm(dim=-1, keepdim=True)


def test_affinity_mimicking_matches_a_hand_computation():
    s_img, s_txt = _unit([1, 0, 1], [0, 1, 0], [1, 1, 1]), _unit([1, 0, 0], [0, 1, 1], [1, 2, 0])
    t_img, t_txt = _unit([2, 0, 1], [0, 1, 0.5], [1, 1, 0]), _unit([1, 0.5, 0], [0, 1, 1], [0, 2, 1])
    want = hand_affinity(*(x.tolist() for x in (s_img, s_txt, t_img, t_txt)), 3.0, 5.0)
    got = affinity_mimicking((s_img, s_txt), (t_img, t_txt), 3.0, 5.0)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # a student equal to its teacher scores the teacher's entropy, the minimum; any other scores more
    assert affinity_mimicking((t_img, t_txt), (t_img, t_txt), 5.0, 5.0) < got
    # fixed scale 50 for both; weight and alpha mix in the hard CLIP loss
    fixed = AffinityLoss(logit_scale=50.0, weight=2.0, alpha=0.25)
    value = fixed((s_img, s_txt), (t_img, t_txt), torch.tensor(7.0), torch.tensor(9.0))
    hard = clip_contrastive(s_img, s_txt, 50.0)
    want = 2.0 * (0.25 * hand_affinity(*(x.tolist() for x in (s_img, s_txt, t_img, t_txt)), 50.0, 50.0)
                  + 0.75 * hard.item())
    assert value.item() == pytest.approx(want, rel=1e-6)
    # learned: each model's own scale
    own = AffinityLoss(logit_scale=0.0)((s_img, s_txt), (t_img, t_txt), torch.tensor(3.0), torch.tensor(5.0))
    assert own.item() == pytest.approx(got.item(), rel=1e-9)


def test_depth_rule():
    assert depth_indices(12, 6) == [0, 2, 4, 6, 8, 10]
    assert depth_indices(12, 3) == [0, 4, 8]
    assert depth_indices(12, 9) == list(range(9))  # integer step 1: the first nine


def test_manual_inheritance_takes_leading_slices_and_strided_blocks():
    torch.manual_seed(0)
    teacher, student = build_clip(vit_clip(32, 4, 4)), build_clip(vit_clip(16, 2, 2))
    t = teacher.state_dict()
    names = inherit_manual(student, t)
    s = student.state_dict()
    assert names["transformer.resblocks.1.mlp.c_fc.weight"] == "transformer.resblocks.2.mlp.c_fc.weight"
    assert names["visual.transformer.resblocks.1.ln_1.weight"] == "visual.transformer.resblocks.2.ln_1.weight"
    fc = "transformer.resblocks.{}.mlp.c_fc.weight"
    assert torch.equal(s[fc.format(1)], t[fc.format(2)][:64, :16])
    assert torch.equal(s["token_embedding.weight"], t["token_embedding.weight"][:, :16])
    assert torch.equal(s["visual.conv1.weight"], t["visual.conv1.weight"][:16])
    # q, k and v are cut separately: the first 2 heads (of width 8) of each, over the first 16 inputs
    qkv = "visual.transformer.resblocks.0.attn.in_proj_weight"
    qkv_t, qkv_s = t[qkv], s[qkv]
    for part in range(3):
        assert torch.equal(qkv_s[16 * part:16 * (part + 1)], qkv_t[32 * part:32 * part + 16, :16])
    bias_t, bias_s = t["transformer.resblocks.1.attn.in_proj_bias"], s["transformer.resblocks.1.attn.in_proj_bias"]
    assert torch.equal(bias_s, torch.cat([bias_t[32 * p:32 * p + 16] for p in range(3)]))
    assert s["logit_scale"] == t["logit_scale"]


def test_manual_inheritance_of_an_equal_shape_reproduces_the_teacher():
    torch.manual_seed(1)
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": [1, 2, 1, 1], "width": 8, "patch_size": None},
           "text_cfg": {**TEXT, "width": 16, "heads": 2, "layers": 3}}
    teacher, student = build_clip(cfg).eval(), build_clip(cfg).eval()
    inherit_manual(student, teacher.state_dict())
    images, tokens = torch.randn(2, 3, 32, 32), torch.randint(0, 49408, (2, 12))
    with torch.no_grad():
        assert torch.equal(student.encode_image(images), teacher.encode_image(images))
        assert torch.equal(student.encode_text(tokens), teacher.encode_text(tokens))
    # a narrower ModifiedResNet with fewer blocks is cut from it too
    small = build_clip({**cfg, "vision_cfg": {**cfg["vision_cfg"], "layers": [1, 1, 1, 1], "width": 4}})
    names = inherit_manual(small, teacher.state_dict())
    assert names["visual.layer2.0.conv2.weight"] == "visual.layer2.0.conv2.weight"
    assert torch.equal(small.state_dict()["visual.layer2.0.conv2.weight"],
                       teacher.state_dict()["visual.layer2.0.conv2.weight"][:8, :8])


def test_inheritance_refuses_a_wider_student():
    from cream.errors import ConfigError

    with pytest.raises(ConfigError, match="at most as wide"):
        inherit_manual(build_clip(vit_clip(32, 2, 4)), build_clip(vit_clip(16, 2, 2)).state_dict())
    with pytest.raises(ConfigError, match="no counterpart"):
        source_names(["visual.attnpool.q_proj.weight"], ["visual.conv1.weight"])


# (name, image params M, text params M, published image+text G MACs) of spec §5.4
PUBLISHED = {"TinyCLIP-ViT-39M-16-Text-19M": (39, 19, 9.5), "TinyCLIP-ViT-8M-16-Text-3M": (8, 3, 2.0),
             "TinyCLIP-ResNet-30M-Text-29M": (30, 29, 6.9), "TinyCLIP-ResNet-19M-Text-19M": (19, 19, 4.4),
             "TinyCLIP-ViT-61M-32-Text-29M": (61, 29, 5.3), "TinyCLIP-ViT-40M-32-Text-19M": (40, 19, 3.5)}


def test_published_configs_are_registered_and_match_their_names():
    from cream.clip.cost import clip_macs, clip_params

    assert sorted(PUBLISHED) == TINYCLIP_MODELS
    assert set(TINYCLIP_MODELS) <= set(open_clip.list_models())  # registered once cream is imported
    for name, (image_m, text_m, gmacs) in PUBLISHED.items():
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            model = build_clip(open_clip.get_model_config(name))
        image, text = clip_params(model)
        assert (round(image / 1e6), round(text / 1e6)) == (image_m, text_m), name
        macs = clip_macs(open_clip.get_model_config(name))
        assert macs / 1e9 == pytest.approx(gmacs, rel=0.02), name


def _image_tree(root, classes=("cat", "dog"), train=8, test=4) -> None:
    """A tiny ImageFolder tree of random 16-pixel images (train/ and test/)."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", train), ("test", test)):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = (torch.rand(16, 16, 3, generator=g) * 128 + 127 * c).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")


def test_pair_dataset_reads_a_tar_with_jsonl_captions(tmp_path):
    import io
    import json
    import tarfile

    from PIL import Image

    from cream.clip.data import PairDataset, tokenize_with
    from cream.clip.models import tokenizer
    from cream.config import DataConfig
    from cream.data.transforms import build_transform
    from cream.errors import DataError

    tar_path = tmp_path / "pairs.tar"
    captions = [{"image": f"img/{i}.png", "caption": f"a photo of {i} red squares"} for i in range(3)]
    with tarfile.open(tar_path, "w") as tar:
        for i, row in enumerate(captions + [{"image": "captions.jsonl"}]):
            if row["image"] == "captions.jsonl":
                data = "".join(json.dumps(r) + "\n" for r in captions).encode()
            else:
                buf = io.BytesIO()
                Image.new("RGB", (20, 20), (40 * i, 0, 0)).save(buf, format="PNG")
                data = buf.getvalue()
            info = tarfile.TarInfo(row["image"])
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tok = tokenizer(vit_clip(16, 1, 2))
    ds = PairDataset(str(tar_path), "", tokenize_with(tok), build_transform(DataConfig(image_size=16), train=False))
    image, tokens = ds[(2, 7)]
    assert len(ds) == 3 and image.shape == (3, 16, 16)
    assert torch.equal(tokens, tok(["a photo of 2 red squares"])[0]) and tokens.shape == (12,)
    bad = tmp_path / "bad.csv"
    bad.write_text("image,caption\nimg/9.png,nothing\n")
    with pytest.raises(DataError, match="missing"):
        PairDataset(str(tar_path), str(bad), tokenize_with(tok), lambda im: im)


def test_distill_run_resumes_bit_identically(tmp_path):
    from safetensors.torch import load_file

    from cream.run_dir import RunDir
    from cream.train.checkpoint import list_checkpoints
    from cream.workflows.clip import distill_clip

    _image_tree(tmp_path / "tree")
    sets = ["data.name=imagefolder", f"data.root={tmp_path / 'tree'}", "data.image_size=16", "data.batch_size=4",
            "data.val_fraction=0", "train.epochs=2", "train.threads=1", "train.deterministic=true",
            "train.keep_checkpoints=3", "optim.sched=none", f"clip.teacher.cfg={vit_clip(32, 2, 4)}",
            f"clip.student.cfg={vit_clip(16, 1, 2)}", "clip.inherit.mode=manual"]
    cfg = load_config(ClipRunConfig, None, sets)
    ref = RunDir.create(str(tmp_path / "ref"), "clip")
    summary = distill_clip(cfg, ref)
    assert 0 <= summary["test_zero_shot_top1"] <= 1 and summary["test_images"] == 8 and summary["steps"] == 8
    first = list_checkpoints(ref.checkpoints)[0]
    resumed = RunDir.create(str(tmp_path / "resumed"), "clip")
    shutil.copy(first, resumed.checkpoints / first.name)
    assert distill_clip(cfg, resumed, resume=True)["test_zero_shot_top1"] == summary["test_zero_shot_top1"]
    a, b = load_file(ref.file("model.safetensors")), load_file(resumed.file("model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
