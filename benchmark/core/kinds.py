"""The closed vocabularies of the grid: attack families and defense kinds.

``str`` enums, so records, suite files and comparisons keep their plain strings ("noise" ==
Family.NOISE) while the code names each value once."""
from __future__ import annotations

from enum import Enum


class Family(str, Enum):
    """What an attack does; CLEAN is the family of the unattacked cell."""
    CLEAN = "clean"
    NOISE = "noise"          # changes real users' train interactions
    SHILLING = "shilling"    # injects heuristic fake profiles
    LEARNED = "learned"      # injects optimised fake profiles
    GRADIENT = "gradient"    # perturbs a trained model's embeddings (evasion)
    POLLUTION = "pollution"  # changes real users' histories at recommendation time (evasion)

    def __str__(self) -> str:
        return self.value


ATTACK_FAMILIES = tuple(f.value for f in Family if f is not Family.CLEAN)
PROFILE_FAMILIES = (Family.SHILLING, Family.LEARNED)     # attacks that add fake users
EVASION_FAMILIES = (Family.GRADIENT, Family.POLLUTION)   # attacks on a trained model, at test time
ALL_FAMILIES = tuple(f.value for f in Family)


class Kind(str, Enum):
    """Where a defense acts in the pipeline."""
    DETECTOR = "detector"          # flags and removes users from the train table
    PREPROCESSOR = "preprocessor"  # rewrites the train table
    TRAINER = "trainer"            # changes how the model is trained
    INFERENCE = "inference"        # changes the scores at recommendation time (re-ranking)

    def __str__(self) -> str:
        return self.value


DATA_KINDS = (Kind.DETECTOR, Kind.PREPROCESSOR)
DEFENSE_KINDS = tuple(k.value for k in Kind)

# What an attacker is assumed to know: the knowledge levels of the shilling literature.
KNOWLEDGE = {
    "white-box": "the victim's train data and its model (type and, for evasion, weights)",
    "gray-box": "the victim's train data; a surrogate model of the attacker's choice",
    "black-box": "only what a user sees (recommendations, or public item statistics)",
}

# The optimizers a suite may name (``training: {optimizer: ...}``); checked by the suite schema.
OPTIMIZERS = ("adam", "sparse_adam")
