"""Planning: a suite becomes jobs, one per (seed, model, defense, poisoning cell); evasion cells
ride on the clean job. Each cell has one file name under ``OUT/cells``."""
from __future__ import annotations

import re

from benchmark.core.errors import BadInput
from benchmark.core.kinds import Family
from benchmark.pipeline import Job
from benchmark.spec import Suite


def plan(suite: Suite) -> list[Job]:
    """One job per (seed, model, defense, poisoning cell); evasion cells ride on the clean job.
    A defense with ``against`` is planned only against those families (no cells elsewhere)."""
    evasions = tuple(a for a in suite.attacks if a.family == Family.GRADIENT)
    poisonings = [a for a in suite.attacks if a.family != Family.GRADIENT]
    common = dict(suite=suite.name, dataset=suite.dataset, rating_threshold=suite.rating_threshold,
                  training=tuple(sorted(suite.training.items())),
                  targets=tuple(sorted(suite.targets.items())))
    jobs = []
    for seed in range(suite.seeds):
        for model in suite.models:
            params = tuple(sorted((suite.model_params.get(model) or {}).items()))
            for defense in [None, *suite.defenses]:
                base = dict(common, model=model, seed=seed, defense=defense, model_params=params)
                covered = (lambda a: True) if defense is None else (lambda a: defense.covers(a.family))
                if defense is None or defense.covers("clean"):
                    jobs.append(Job(poisoning=None, evasions=tuple(filter(covered, evasions)), **base))
                jobs.extend(Job(poisoning=attack, **base) for attack in poisonings if covered(attack))
    files = [cell_filename(cid) for job in jobs for cid, *_ in job.cells()]
    if len(set(files)) < len(files):  # one file per cell, written once: no two cells may share it
        twice = next(cid for job in jobs for cid, *_ in job.cells() if files.count(cell_filename(cid)) > 1)
        raise BadInput(f"cell {twice} appears twice in suite {suite.name} (a model, attack budget or "
                       f"defense is listed twice): keep one of each")
    return jobs


def safe_name(text: str) -> str:
    """``text`` as a file name: runs of other characters than letters, digits and ``@._-``
    become ``__``."""
    return re.sub(r"[^A-Za-z0-9@._-]+", "__", text)


def cell_filename(cell_id: str) -> str:
    return safe_name(cell_id) + ".json"
