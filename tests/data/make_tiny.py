"""Regenerate tests/data/tiny (a small clustered atomic dataset): python tests/data/make_tiny.py"""
from pathlib import Path

import numpy as np

GENRES = ["Action", "Comedy", "Drama", "Horror"]


def main(out=Path(__file__).parent / "tiny"):
    rng = np.random.default_rng(7)
    n_users, n_items = 60, 80
    item_genre = np.arange(n_items) % len(GENRES)
    popularity = 1.0 / (1 + np.arange(n_items)) ** 0.6
    rows = []
    for u in range(n_users):
        taste = u % len(GENRES)
        weight = popularity * np.where(item_genre == taste, 6.0, 1.0)
        n = rng.integers(12, 30)
        items = rng.choice(n_items, size=n, replace=False, p=weight / weight.sum())
        for i in items:
            rating = int(np.clip(rng.normal(4.2 if item_genre[i] == taste else 2.8, 0.8), 1, 5).round())
            rows.append((u + 1, i + 1, rating, 880000000 + len(rows)))
    out.mkdir(exist_ok=True)
    with open(out / "tiny.inter", "w") as fh:
        fh.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        fh.writelines(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows)
    with open(out / "tiny.item", "w") as fh:
        fh.write("item_id:token\tmovie_title:token_seq\tclass:token_seq\n")
        fh.writelines(f"{i + 1}\tMovie {i + 1}\t{GENRES[item_genre[i]]}\n" for i in range(n_items))


if __name__ == "__main__":
    main()
