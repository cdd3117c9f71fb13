"""Planning: a suite becomes jobs, one per (seed, model, defense, poisoning cell); evasion cells
ride on the clean job; no two cells may share an id (``benchmark.cells``)."""
from __future__ import annotations

from benchmark.cells import Job, cell_filename
from benchmark.core.errors import BadInput
from benchmark.core.kinds import EVASION_FAMILIES
from benchmark.spec import Suite


def plan(suite: Suite, device: str = "cpu") -> list[Job]:
    """One job per (seed, model, defense, poisoning cell); evasion cells ride on the clean job.
    A defense with ``against`` is planned only against those families and attacks (no cells
    elsewhere).
    Each undefended clean job has its ``noise_floor`` clean retrains (other training seeds, same
    split; the gradient attacks ride on them too). Sequential models get the leave-one-out split
    by time, general ones the suite's ``split``. Jobs come in ``anytime_order``; they train and
    score on ``device`` (``benchmark.core.device``; not part of any cell's identity)."""
    from benchmark.core.models import is_sequential
    evasions = tuple(a for a in suite.attacks if a.family in EVASION_FAMILIES)
    poisonings = [a for a in suite.attacks if a.family not in EVASION_FAMILIES]
    reference = reference_budgets(poisonings)
    common = dict(device=device, suite=suite.name, dataset=suite.dataset, rating_threshold=suite.rating_threshold,
                  training=tuple(sorted(suite.training.items())),
                  targets=tuple(sorted(suite.targets.items())))
    jobs = []
    for seed in range(suite.seeds):
        for model in suite.models:
            params = tuple(sorted((suite.model_params.get(model) or {}).items()))
            split = "leave_one_out" if suite.split == "leave_one_out" or is_sequential(model) else "random"
            for defense in [None, *suite.defenses]:
                base = dict(common, model=model, seed=seed, defense=defense, model_params=params, split=split)
                covered = (lambda a: True) if defense is None else (
                    lambda a: defense.covers(a) and (defense.at == "every" or a.family in EVASION_FAMILIES
                                                     or at_reference(a, reference)))
                if defense is None or defense.covers(None):
                    jobs.append(Job(poisoning=None, evasions=tuple(filter(covered, evasions)), **base))
                if defense is None:
                    jobs.extend(Job(poisoning=None, evasions=evasions, replicate=k, **base)
                                for k in range(1, suite.noise_floor + 1))
                jobs.extend(Job(poisoning=attack, **base) for attack in poisonings if covered(attack))
    jobs = anytime_order(jobs)
    files = [cell_filename(cid) for job in jobs for cid, *_ in job.cells()]
    if len(set(files)) < len(files):  # one file per cell, written once: no two cells may share it
        twice = next(cid for job in jobs for cid, *_ in job.cells() if files.count(cell_filename(cid)) > 1)
        raise BadInput(f"cell {twice} appears twice in suite {suite.name} (a model, attack budget or "
                       f"defense is listed twice): keep one of each")
    return jobs


def reference_budgets(attacks) -> dict:
    """Per attack (name and parameters: PGA and PGA with an APR surrogate are two), its reference
    budget: of the budgets the suite gives it, the one nearest the attack's own default (its
    ``budget_param``'s declared default: 3 % fake users for the fake-profile attacks)."""
    budgets: dict = {}
    for attack in attacks:
        budgets.setdefault(_key(attack), (attack, set()))[1].add(attack.budget)
    return {key: min(sorted(values), key=lambda b: abs(b - attack.cls.parameters[attack.budget_param].default))
            for key, (attack, values) in budgets.items()}


def at_reference(attack, reference: dict) -> bool:
    """Whether ``attack`` is at its reference budget (``reference_budgets``)."""
    return attack.budget == reference[_key(attack)]


def _key(attack) -> tuple:
    return attack.name, repr(sorted(attack.params.items()))


def anytime_order(jobs: list[Job]) -> list[Job]:
    """The order that makes any prefix of the run most informative (``--time-budget``, an
    interrupted run): on the first seed, the clean cells and their retrains (the noise floor,
    with the gradient attacks on them), then each poisoning attack undefended at its reference
    budget (``reference_budgets``), then the defenses (clean and at the reference budgets), then
    every other budget; then the other seeds in the same order."""
    reference = reference_budgets(job.poisoning for job in jobs if job.poisoning is not None)

    def phase(job: Job) -> int:
        referenced = job.poisoning is None or at_reference(job.poisoning, reference)
        if job.defense is None and job.poisoning is None:
            return 0
        if referenced:
            return 1 if job.defense is None else 2
        return 3
    return sorted(jobs, key=lambda job: (job.seed != 0, job.seed, phase(job)))
