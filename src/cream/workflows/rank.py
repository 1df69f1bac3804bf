"""How well a trained supernet run ranks NAS-Bench-201 cells (`cream rank --supernet`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cream.config import RunConfig, load_config
from cream.errors import ConfigError
from cream.spaces.nb201 import NB201Space
from cream.tabular.nb201 import NB201Table
from cream.tabular.nb201_rank import rank_scores
from cream.workflows.search import load_scorer, score_batch


def rank_supernet_run(supernet_run: str | Path, table: NB201Table, sample: int = 100, seed: int = 0,
                      bn_recal_images: int = 1024, eval_images: int = 0) -> dict[str, Any]:
    """`rank_scores` of a `cream supernet` run: top-1 (%) with inherited weights on the run's held-out split.

    Each cell is scored exactly as `cream search` scores it (`cream.workflows.search.load_scorer`), with
    its BN statistics recalibrated on `bn_recal_images` training images (0 = the supernet's own); under
    torchrun the cells are split across the processes.
    """
    run = Path(supernet_run)
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"'{run}' is not a run directory (no config.yaml)")
    cfg = load_config(RunConfig, run / "config.yaml",
                      [f"search.bn_recal_images={bn_recal_images}", f"search.eval_images={eval_images}",
                       f"search.seed={seed}"])
    scorer, _ = load_scorer(cfg, run)
    space = scorer.net.space
    if not isinstance(space, NB201Space):
        raise ConfigError(f"run '{run}' trained a supernet of space '{space.name}'; ranking against the "
                          "NAS-Bench-201 table needs an nb201 supernet")
    score_many = score_batch(scorer)  # split across torchrun's processes
    result = rank_scores(lambda archs: [100.0 * s for s in score_many(archs)], table, sample, seed)
    result["rank"].update({"supernet": str(run), "bn_recal_images": bn_recal_images,
                           "eval_images": len(scorer.val)})
    return result
