"""Leak-free full-sort evaluation, vectorised over users in batches.

Protocol (docs/protocol.md): score every item for each *real* user and rank the items the user
has not interacted with in the seed's *clean* train (and, for test, in valid, as RecBole does).
The candidates are a property of the seed's split, never of a cell: a noise attack that removes
a user's train item, or a detector that drops a real user, changes what the model learns from,
not the task it is scored on, so every cell of a seed ranks each real user over the same items.
Fake users are never scored. Accuracy: Recall, NDCG, Hit, Precision, MRR at 10 and 20 with
RecBole's definitions, and F1 from the mean P and R. Target-item metrics rank each target among
the user's candidates, over real users who had not interacted with it in the clean train; a
target tied with other candidates takes its expected rank among them (each tied position equally
likely), so ties never count in the target's favour (Pop's counts, ItemKNN's zero scores).

Besides the means, an evaluation keeps per-user values of ``PER_USER_METRICS`` (index = real
user id, None where the user has no test items or no eligible target): the unit of the paired
tests in ``benchmark.results.aggregate``; and each such user's top-10 list (``Evaluation.top``),
from which it computes the popularity of what is recommended (ARP, long-tail share, exposure Gini,
against the clean train passed as ``train``: ``benchmark.core.beyond``) and from which
``benchmark.results.aggregate.derive`` compares two cells' lists (RBO, Jaccard).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmark.core import beyond
from benchmark.core.data import Interactions
from benchmark.core.embeddings import reset_caches
from benchmark.core.full_sort import fast_path
from benchmark.core.models import BuiltModel

TOPKS = (10, 20)
TARGET_KS = (10, 50)
# per-user values kept in every record, for the paired tests over users
PER_USER_METRICS = ("ndcg@10", "recall@10", "precision@10", "target_hr@10", "target_hr@50", "target_rank")


class Scorer:
    """Full score matrices of a built model for batches of our users, in our item order."""

    PAIRS_PER_CALL = 1 << 16

    def __init__(self, built: BuiltModel, n_items: int, batch_users: int = 1024):
        self.built = built
        self.item_cols = built.ids.items(np.arange(n_items))
        self.full_sort = type(built.model).full_sort_predict is not _base_full_sort()
        # pairwise scoring (NeuMF) runs the model on users x items rows: keep each call small
        self.batch_users = batch_users if self.full_sort else max(1, self.PAIRS_PER_CALL // n_items)

    def __call__(self, users: np.ndarray) -> torch.Tensor:
        """Scores (len(users), n_items) of our users over our items."""
        from recbole.data.interaction import Interaction
        model, cfg = self.built.model, self.built.config
        uid, iid = cfg["USER_ID_FIELD"], cfg["ITEM_ID_FIELD"]
        device = self.built.config["device"]
        rb_users = self.built.ids.users(users).to(device)
        item_cols = self.item_cols.to(device)
        with torch.no_grad():
            if self.full_sort:
                scores = model.full_sort_predict(Interaction({uid: rb_users}))
                scores = scores.view(len(users), -1)[:, item_cols]
            elif (fast := fast_path(model)) is not None:  # NeuMF: see benchmark/full_sort.py
                scores = fast(model, rb_users, item_cols)
            else:  # score every (user, item) pair with predict()
                n = item_cols.shape[0]
                u = rb_users.repeat_interleave(n)
                i = item_cols.repeat(len(users))
                scores = model.predict(Interaction({uid: u, iid: i})).view(len(users), n)
        return scores.float().cpu()   # masks, ranks and metrics on the CPU

    def batches(self, users: np.ndarray):
        for s in range(0, len(users), self.batch_users):
            chunk = users[s:s + self.batch_users]
            yield chunk, self(chunk)


class SequenceScorer(Scorer):
    """A sequential model's scores for our users from their histories (``history``: row ``u`` is
    user ``u``'s latest items, ``benchmark.core.sequences.histories``), through the model's
    ``full_sort_predict``, in our item order. The history is an input at recommendation time:
    validation scores from the clean train sequence, testing from it plus the valid item, and a
    profile-pollution attack hands a changed one."""

    def __init__(self, built: BuiltModel, n_items: int, history, batch_users: int = 1024):
        super().__init__(built, n_items, batch_users)
        self.history = history

    def __call__(self, users: np.ndarray) -> torch.Tensor:
        from recbole.data.interaction import Interaction
        model, device = self.built.model, self.built.config["device"]
        rows = self.history.take(torch.from_numpy(np.asarray(users, dtype=np.int64)))
        batch = Interaction({self.built.config["USER_ID_FIELD"]: rows.users, model.ITEM_SEQ: rows.items,
                             model.ITEM_SEQ_LEN: rows.lengths.clamp_min(1),
                             # the CPR models' full_sort_predict reads a next-item column: padding
                             model.POS_ITEM_ID: torch.zeros_like(rows.users)}).to(device)
        with torch.no_grad():
            scores = model.full_sort_predict(batch).view(len(users), -1)[:, self.item_cols.to(device)]
        return scores.float().cpu()


class PopularityFallback:
    """A scorer (``Scorer``'s interface) that gives every real user without a row in the model's
    train table what a deployed system gives a user it has no data on: the non-personalised
    popularity ranking of that table. A detector that removes a real user, or noise that removes
    all of a user's rows, leaves that user's embedding untrained: scoring them with it would be a
    random ranking, charged to the defense. ``users`` is how many real users this covers."""

    def __init__(self, scorer, train: Interactions, n_real_users: int):
        self.scorer, self.built = scorer, scorer.built
        counts = np.bincount(train.users[train.users < n_real_users], minlength=n_real_users)
        self.absent = counts == 0
        self.users = int(self.absent.sum())
        self.popularity = torch.from_numpy(train.item_counts().astype(np.float32))

    def batches(self, users):
        for chunk, scores in self.scorer.batches(users):
            rows = torch.from_numpy(self.absent[chunk])
            if rows.any():
                scores = scores.clone()
                scores[rows] = self.popularity.to(scores.dtype)
            yield chunk, scores


def with_fallback(scorer, train: Interactions, n_real_users: int):
    """``scorer``, wrapped in ``PopularityFallback`` when some real user has no train row."""
    fallback = PopularityFallback(scorer, train, n_real_users)
    return fallback if fallback.users else scorer


def _base_full_sort():
    from recbole.model.abstract_recommender import GeneralRecommender
    return GeneralRecommender.full_sort_predict


def _csr_rows(inter: Interactions, n_users: int):
    import scipy.sparse as sp
    return sp.csr_matrix((np.ones(len(inter), np.bool_), (inter.users, inter.items)),
                         shape=(n_users, inter.n_items))


class _SparseRows:
    """Rows of a CSR matrix, made dense batch by batch."""

    def __init__(self, matrix):
        self.matrix = matrix

    def rows(self, users: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.matrix[users].toarray())


class _DenseRows:
    """A CSR matrix made dense once; a batch of consecutive users is a view, not a copy."""

    def __init__(self, matrix):
        self.table = torch.from_numpy(matrix.toarray())

    def rows(self, users: np.ndarray) -> torch.Tensor:
        if len(users) and users[-1] - users[0] + 1 == len(users):
            return self.table[int(users[0]):int(users[-1]) + 1]
        return self.table[torch.from_numpy(np.asarray(users, dtype=np.int64))]


def per_user_accuracy(hits: torch.Tensor, n_pos: torch.Tensor, ks=TOPKS) -> dict:
    """RecBole's metrics per user from a (users, maxk) 0/1 hit matrix and positives per user."""
    out = {}
    ranks = torch.arange(1, hits.shape[1] + 1, dtype=torch.float64)
    discounts = 1.0 / torch.log2(ranks + 1)
    idcg_table = torch.cumsum(discounts, 0)
    hits = hits.double()
    for k in ks:
        h = hits[:, :k]
        n_hits = h.sum(1)
        first = torch.where(h.any(1), h.argmax(1).double() + 1, torch.full_like(n_hits, float("inf")))
        idcg = idcg_table[(torch.clamp(n_pos, max=k) - 1).long()]
        out[f"recall@{k}"] = n_hits / n_pos
        out[f"precision@{k}"] = n_hits / k
        out[f"hit@{k}"] = (n_hits > 0).double()
        out[f"mrr@{k}"] = 1.0 / first
        out[f"ndcg@{k}"] = (h * discounts[:k]).sum(1) / idcg
    return out


def accuracy_from_topk(hits: torch.Tensor, n_pos: torch.Tensor, ks=TOPKS) -> dict:
    """Sums over users of ``per_user_accuracy``."""
    return {key: float(values.sum()) for key, values in per_user_accuracy(hits, n_pos, ks).items()}


@dataclass
class Evaluation:
    """Mean metrics, per-user values of ``PER_USER_METRICS`` (None: not evaluated), and the
    (real users, 10) top-10 item ids of the users with truth items (``beyond.NO_ITEM`` rows for
    the others, and past a user's last candidate)."""
    metrics: dict
    per_user: dict
    top: np.ndarray | None = None


class Evaluator:
    """Accuracy on ``truth`` (valid or test) for real users, plus target metrics if asked.

    Masked from each user's ranking: their items in ``train`` and in ``also_mask``; the pipeline
    passes the seed's clean train (and valid, for test), never a poisoned or cleaned table, so
    every cell of a seed has the same candidates (``candidates``). The masks are built once, so
    calling it every validation epoch costs only the scoring and the top-k.
    """

    DENSE_LIMIT = 1 << 25   # users x items cells kept as dense masks (32 MB of bools each)

    def __init__(self, scorer: Scorer, train: Interactions, truth: Interactions, n_real_users: int,
                 also_mask: Interactions | None = None, targets: np.ndarray | None = None):
        self.scorer, self.n_real_users = scorer, n_real_users
        self.targets = targets if targets is not None and len(targets) else None
        seen = _csr_rows(train, max(train.n_users, n_real_users))[:n_real_users]
        if also_mask is not None:
            seen = seen + _csr_rows(also_mask, n_real_users)
        self.seen_matrix = seen.tocsr()
        self.seen_matrix.sum_duplicates()   # sorted, distinct indices: a canonical form to hash
        relevant = _csr_rows(truth, n_real_users)
        self.n_pos = np.asarray(relevant.sum(1)).ravel()
        self.n_users = int(np.count_nonzero(self.n_pos))
        # Small enough: dense once, sliced per batch; else each batch's rows densified in turn.
        dense = n_real_users * truth.n_items <= self.DENSE_LIMIT
        self.seen = _DenseRows(seen) if dense else _SparseRows(seen)
        self.relevant = _DenseRows(relevant) if dense else _SparseRows(relevant)
        # the popularity of an item: its interactions in ``train`` (the seed's clean train)
        self.popularity = np.bincount(train.items, minlength=truth.n_items)[:truth.n_items].astype(np.float64)
        self.head = beyond.short_head(self.popularity)

    @property
    def candidates(self) -> str:
        """A fingerprint (sha1) of the masks, i.e. of every real user's candidate items: equal in
        every cell of a seed (recorded as ``candidates`` so that a reader can check it)."""
        import hashlib
        matrix = self.seen_matrix
        digest = hashlib.sha1(np.asarray(matrix.shape, np.int64).tobytes())
        digest.update(matrix.indptr.astype(np.int64).tobytes())
        digest.update(matrix.indices.astype(np.int64).tobytes())
        return digest.hexdigest()

    def __call__(self) -> dict:
        return self.run().metrics

    def run(self) -> Evaluation:
        """Mean metrics over the users with truth items, and per-user values."""
        reset_caches(self.scorer.built.model)
        maxk = max(TOPKS)
        sums: dict[str, float] = {}
        per_user = {m: np.full(self.n_real_users, np.nan) for m in PER_USER_METRICS}
        top_lists = np.full((self.n_real_users, beyond.TOP), beyond.NO_ITEM, dtype=np.int64)
        target_parts = []
        for chunk, scores in self.scorer.batches(np.arange(self.n_real_users)):
            mask = self.seen.rows(chunk)
            scores = scores.masked_fill(mask, -torch.inf)
            keep = self.n_pos[chunk] > 0
            if keep.any():
                kept = torch.from_numpy(keep)
                best = torch.topk(scores[kept], maxk, dim=1)
                top = best.indices
                hits = torch.gather(self.relevant.rows(chunk)[kept], 1, top)
                first = best.indices[:, :beyond.TOP].numpy()
                top_lists[chunk[keep]] = np.where(torch.isfinite(best.values[:, :beyond.TOP]).numpy(),
                                                  first, beyond.NO_ITEM)
                part = per_user_accuracy(hits, torch.from_numpy(self.n_pos[chunk[keep]]).double())
                for key, values in part.items():
                    sums[key] = sums.get(key, 0.0) + float(values.sum())
                    if key in per_user:
                        per_user[key][chunk[keep]] = values.numpy()
            if self.targets is not None:
                part = _target_ranks(scores, mask, self.targets)
                target_parts.append(part)
                _per_user_targets(per_user, chunk, *part)
        metrics = {key: value / self.n_users for key, value in sums.items()}
        for k in TOPKS:
            p, r = metrics[f"precision@{k}"], metrics[f"recall@{k}"]
            metrics[f"f1@{k}"] = 2 * p * r / (p + r) if p + r > 0 else 0.0
        if target_parts:
            metrics.update(_target_metrics(target_parts))
        metrics.update(beyond.popularity_metrics(top_lists, self.popularity, self.head, len(self.popularity)))
        kept = {m: v for m, v in per_user.items() if not np.isnan(v).all()}
        return Evaluation(metrics, kept, top_lists)


def _per_user_targets(per_user: dict, chunk: np.ndarray, ranks, scores, eligible) -> None:
    """Per user: the expected share of eligible targets in the top 10 / 50 and their mean
    expected rank (``_target_ranks``)."""
    above, tied = ranks
    n = eligible.sum(1).double()
    has = (n > 0).numpy()
    for k in TARGET_KS:
        hit = torch.where(eligible, _in_top(above, tied, k), torch.zeros_like(above)).sum(1) / n.clamp_min(1)
        per_user[f"target_hr@{k}"][chunk[has]] = hit.numpy()[has]
    rank = _expected_rank(above, tied)
    mean_rank = torch.where(eligible, rank, torch.zeros_like(rank)).sum(1) / n.clamp_min(1)
    per_user["target_rank"][chunk[has]] = mean_rank.numpy()[has]


def _expected_rank(above: torch.Tensor, tied: torch.Tensor) -> torch.Tensor:
    """A target with ``above`` candidates scored higher and ``tied`` scored equal (itself
    included) takes each of the positions above+1 .. above+tied with equal chance."""
    return above + (tied + 1) / 2


def _in_top(above: torch.Tensor, tied: torch.Tensor, k: int) -> torch.Tensor:
    """The chance that such a target is in the top ``k``."""
    return ((k - above) / tied).clamp(0.0, 1.0)


def _expected_dcg(above: torch.Tensor, tied: torch.Tensor, k: int) -> torch.Tensor:
    """The expected 1/log2(1 + position) of such a target within the top ``k`` (0 below it)."""
    positions = torch.arange(1, k + 1, dtype=torch.float64)
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(1.0 / torch.log2(positions + 1), 0)])
    first, last = above.clamp(max=k).long(), (above + tied).clamp(max=k).long()
    return (cumulative[last] - cumulative[first]) / tied


def evaluate(scorer: Scorer, train: Interactions, truth: Interactions, n_real_users: int,
             also_mask: Interactions | None = None, targets: np.ndarray | None = None) -> dict:
    """One evaluation (see ``Evaluator``)."""
    return Evaluator(scorer, train, truth, n_real_users, also_mask, targets)()


def _target_ranks(scores: torch.Tensor, mask: torch.Tensor, targets: np.ndarray):
    """Per (user, target): ((candidates scored above it, candidates scored equal, itself
    included), score, eligibility) among the user's unseen items. Ties are shared, never the
    target's benefit: a target tied with others takes its expected rank among them."""
    t = torch.from_numpy(np.asarray(targets, dtype=np.int64))
    target_scores = scores[:, t]                                  # masked targets are -inf
    eligible = ~mask[:, t]                                        # not interacted with in train
    above = (scores.unsqueeze(1) > target_scores.unsqueeze(2)).sum(2).double()
    tied = (scores.unsqueeze(1) == target_scores.unsqueeze(2)).sum(2).double().clamp_min(1)
    return (above, tied), target_scores, eligible


def _target_metrics(parts) -> dict:
    above = torch.cat([p[0][0] for p in parts])
    tied = torch.cat([p[0][1] for p in parts])
    scores = torch.cat([p[1] for p in parts]).double()
    eligible = torch.cat([p[2] for p in parts])
    above, tied, s = above[eligible], tied[eligible], scores[eligible]
    out = {f"target_hr@{k}": float(_in_top(above, tied, k).mean()) for k in TARGET_KS}
    out["target_ndcg@50"] = float(_expected_dcg(above, tied, 50).mean())
    out["target_score"] = float(s.mean())
    out["target_rank"] = float(_expected_rank(above, tied).mean())
    return out
