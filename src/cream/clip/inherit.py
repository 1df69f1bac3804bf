"""Manual weight inheritance (TinyCLIP, spec §5.2): a smaller CLIP cut out of a bigger one, once, before training.

* Depth: a stack of `t` blocks gives its `s` blocks the teacher's blocks 0, k, 2k, ... with k = t // s
  (so 12 -> 9 keeps the first 9 blocks: the integer step is 1).
* Width: every tensor is cut to its leading indices in every dimension.
* Attention input projections (`in_proj_weight` / `in_proj_bias`, laid out q, k, v one after the other) are
  cut per part: (3, width, in) -> (3, student width, student in). With the head width fixed (64 in CLIP),
  the first `student width` rows of each part are exactly the first `student heads` heads, i.e. the
  original's (3, heads, 64, in) cut.

Stacks are found by name: open_clip's ViT and text towers (`...resblocks.N.`) and ModifiedResNet stages
(`visual.layerS.N.`). TinyViT image towers (timm, through open_clip's TimmModel) are not covered: timm's
TinyViT interleaves q, k, v per head (and uses 32-wide heads), so the rule above would cut it wrongly.
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch
from torch import Tensor, nn

from cream.errors import ConfigError

#: a block of a stack: (stack prefix, block index, rest of the name).
_BLOCK = re.compile(r"^(.*(?:\.resblocks|visual\.layer\d+)\.)(\d+)(\..+)$")
_QKV = ("in_proj_weight", "in_proj_bias")


def depth_indices(teacher_depth: int, student_depth: int) -> list[int]:
    """The teacher blocks a student stack of `student_depth` blocks takes (spec §5.2)."""
    if not 0 < student_depth <= teacher_depth:
        raise ConfigError(f"a student stack of {student_depth} blocks cannot inherit from a teacher stack of "
                          f"{teacher_depth}; a student is at most as deep as its teacher")
    step = teacher_depth // student_depth
    return [i * step for i in range(student_depth)]


def _depths(names: list[str]) -> dict[str, int]:
    blocks: dict[str, set[int]] = defaultdict(set)
    for name in names:
        m = _BLOCK.match(name)
        if m:
            blocks[m.group(1)].add(int(m.group(2)))
    return {prefix: max(ids) + 1 for prefix, ids in blocks.items()}


def source_names(student: list[str], teacher: list[str]) -> dict[str, str]:
    """For each student tensor name, the teacher tensor it is cut from."""
    t_depth, s_depth = _depths(teacher), _depths(student)
    picks = {p: depth_indices(t_depth.get(p, 0), d) if p in t_depth else None for p, d in s_depth.items()}
    out, known = {}, set(teacher)
    for name in student:
        m = _BLOCK.match(name)
        src = name
        if m and picks[m.group(1)] is not None:
            src = f"{m.group(1)}{picks[m.group(1)][int(m.group(2))]}{m.group(3)}"
        if src not in known:
            raise ConfigError(f"manual inheritance: the student's tensor '{name}' has no counterpart '{src}' in the "
                              "teacher; student and teacher must be the same kind of CLIP (ViT, ModifiedResNet)")
        out[name] = src
    return out


def leading_cut(name: str, teacher: Tensor, shape: torch.Size) -> Tensor:
    """`teacher` cut to `shape` by leading indices (q, k, v cut separately for attention input projections)."""
    if len(shape) != teacher.dim() or any(s > t for s, t in zip(shape, teacher.shape, strict=True)):
        raise ConfigError(f"manual inheritance: the student's '{name}' {tuple(shape)} is not inside the teacher's "
                          f"{tuple(teacher.shape)}; a student must be at most as wide as its teacher")
    if name.rsplit(".", 1)[-1] in _QKV:
        parts = teacher.reshape(3, teacher.shape[0] // 3, *teacher.shape[1:])
        cut = parts[(slice(None), slice(0, shape[0] // 3), *(slice(0, s) for s in shape[1:]))]
        return cut.reshape(shape).clone()
    return teacher[tuple(slice(0, s) for s in shape)].clone()


@torch.no_grad()
def inherit_manual(student: nn.Module, teacher_state: dict[str, Tensor]) -> dict[str, str]:
    """Fill every parameter and buffer of `student` from `teacher_state` (a teacher's state dict); returns
    the map student name -> teacher name that was used."""
    own = student.state_dict()
    names = source_names(list(own), list(teacher_state))
    student.load_state_dict({n: leading_cut(n, teacher_state[src], own[n].shape).to(own[n].dtype)
                             for n, src in names.items()})
    return names
