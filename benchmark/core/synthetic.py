"""Synthetic interaction tables of any size, generated (never downloaded): the scaling benchmark's
data beyond ml-100k."""
from __future__ import annotations

import numpy as np

from benchmark.core.data import Dataset, Interactions, Split, split_dataset


def synthetic_split(n_users: int, n_items: int, n_inter: int, seed: int = 0) -> Split:
    """A power-law interaction table with exactly ``n_inter`` distinct interactions (users with
    fewer than 3 are dropped), split 8:1:1 per user by ``seed``."""
    rng = np.random.default_rng(seed)
    per_user = np.maximum(3, rng.zipf(1.6, n_users).clip(max=n_items // 2))
    per_user = np.maximum(3, (per_user / per_user.sum() * n_inter).astype(np.int64))
    users = np.repeat(np.arange(n_users), 4 * per_user)   # drawn 4x over: duplicates collapse
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, size=users.size, p=popularity / popularity.sum())
    keys = np.unique(users * n_items + items)
    if keys.size > n_inter:   # exactly the requested number of distinct interactions
        keys = np.sort(rng.choice(keys, size=n_inter, replace=False))
    users, items = keys // n_items, keys % n_items
    keep = np.bincount(users, minlength=n_users)[users] >= 3
    kept_users, users = np.unique(users[keep], return_inverse=True)
    items = items[keep]
    inter = Interactions.build(users, items, np.ones(users.size), kept_users.size, n_items)
    ds = Dataset(name=f"synthetic-{n_users}x{n_items}", interactions=inter,
                 user_tokens=kept_users.astype(str), item_tokens=np.arange(n_items).astype(str))
    return split_dataset(ds, seed)
