"""The op grammar of MobileNet-style spaces: `ir_k3_e4_se`, `ds_k5`, `cn_k1`, `skip`.

* ``ir_k{k}_e{e}[_se]`` inverted residual: 1x1 expand to ``make_divisible(cin * e)``,
  k x k depthwise, optional squeeze-excite on the expanded width, 1x1 project (no activation);
* ``ds_k{k}[_se]``      depthwise-separable: k x k depthwise, optional SE, 1x1 pointwise;
* ``cn_k{k}``           plain conv-BN-activation;
* ``skip``              identity; in a layer that changes stride or width, a 1x1 strided
                        projection conv + BN (no activation).

All ops use batch norm, the space's activation and "same"-size symmetric padding. Blocks with
stride 1 and equal widths (ir, ds) add a residual.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cream.errors import ConfigError

SKIP = "skip"
_OP_RE = re.compile(r"^(?P<kind>ir|ds|cn)_k(?P<k>\d+)(?:_e(?P<e>\d+(?:\.\d+)?))?(?P<se>_se)?$")


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a width to a multiple of `divisor`, never dropping more than 10 % (timm/MobileNet rule)."""
    n = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if n < 0.9 * v:
        n += divisor
    return n


def expanded_width(cin: int, expand: float, rounding: str = "divisible") -> int:
    """The expanded width of an IR op: `make_divisible(cin * e)` ("divisible", timm's rule) or
    `cin * e` rounded half up ("exact", the rule of classic macro spaces such as SPOS's)."""
    return make_divisible(cin * expand) if rounding == "divisible" else int(cin * expand + 0.5)


@dataclass(frozen=True)
class Op:
    """One candidate operation, parsed from its name."""

    name: str
    kind: str  # "ir", "ds", "cn" or "skip"
    kernel: int = 0
    expand: float = 1.0
    se: bool = False


def parse_op(name: str) -> Op:
    """Parse an op name (see the module docstring); raise `ConfigError` for anything else."""
    if name == SKIP:
        return Op(SKIP, SKIP)
    m = _OP_RE.match(str(name))
    bad = (
        m is None
        or (m["kind"] == "ir") != (m["e"] is not None)
        or (m["kind"] == "cn" and m["se"] is not None)
        or int(m["k"]) % 2 == 0
    )
    if bad:
        raise ConfigError(
            f"op name {name!r} is not valid; use 'ir_k<odd k>_e<expansion>[_se]', 'ds_k<odd k>[_se]', "
            "'cn_k<odd k>' or 'skip'"
        )
    e = float(m["e"]) if m["e"] else 1.0
    return Op(name, m["kind"], int(m["k"]), int(e) if e.is_integer() else e, m["se"] is not None)
