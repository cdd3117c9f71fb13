"""Training and evaluation cost: our lean path versus a bare PyTorch loop and stock RecBole.

Run: ``.venv/bin/pytest benchmarks/test_bench_training.py --benchmark-only -p no:cacheprovider``
"""
import tempfile
import time
from pathlib import Path

import pytest
import torch

from benchmark.core.evaluation import Evaluator, Scorer, evaluate
from benchmark.core.models import build_model
from benchmark.core.training import LeanTrainer, TrainSettings
from benchmarks.conftest import best_of, interleaved, record_ratio


def lean_trainer(split, name):
    built = build_model(name, split, {}, seed=0)
    trainer = LeanTrainer(built, built.ids.users(split.train.users), built.ids.items(split.train.items),
                          TrainSettings.from_config(built.config), seed=0)
    optimizer = torch.optim.Adam(built.model.parameters(), lr=1e-3)
    return built, trainer, optimizer


def our_epoch(built, trainer, optimizer):
    built.model.train()
    for batch in trainer.batches():
        optimizer.zero_grad(set_to_none=True)
        built.model.calculate_loss(batch).backward()
        optimizer.step()


def bare_bpr_epoch_fn(n_users, n_items, users, items, batch=2048):
    """The same math as RecBole's BPR (embedding 64, BPR loss, Adam), in a bare loop."""
    U = torch.nn.Embedding(n_users, 64)
    I = torch.nn.Embedding(n_items, 64)
    optimizer = torch.optim.Adam([U.weight, I.weight], lr=1e-3)

    def epoch():
        order = torch.randperm(users.shape[0])
        u, i = users[order], items[order]
        j = torch.randint(1, n_items, u.shape)
        for s in range(0, u.shape[0], batch):
            optimizer.zero_grad(set_to_none=True)
            eu = U(u[s:s + batch])
            diff = (eu * (I(i[s:s + batch]) - I(j[s:s + batch]))).sum(1)
            (-torch.nn.functional.logsigmoid(diff).mean()).backward()
            optimizer.step()
    return epoch


def bare_neumf_epoch_fn(n_users, n_items, users, items, batch=2048, dim=64, dropout=0.1):
    """RecBole's NeuMF math (GMF and MLP [128, 64] branches, dropout 0.1, a linear head on both,
    BCE with logits, one uniform negative per positive: ``batch`` rows, half of them negatives,
    Adam) in a bare loop."""
    nn = torch.nn
    tables = [nn.Embedding(n, dim) for n in (n_users, n_items, n_users, n_items)]
    mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * dim, 128), nn.ReLU(),
                        nn.Dropout(dropout), nn.Linear(128, 64), nn.ReLU())
    head = nn.Linear(dim + 64, 1)
    params = [p for m in (*tables, mlp, head) for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    half = batch // 2

    def epoch():
        order = torch.randperm(users.shape[0])
        u, i = users[order], items[order]
        j = torch.randint(1, n_items, u.shape)
        for s in range(0, u.shape[0], half):
            uu, ii, jj = u[s:s + half], i[s:s + half], j[s:s + half]
            bu, bi = torch.cat([uu, uu]), torch.cat([ii, jj])
            label = torch.cat([torch.ones(uu.shape[0]), torch.zeros(uu.shape[0])])
            optimizer.zero_grad(set_to_none=True)
            mf = tables[0](bu) * tables[1](bi)
            deep = mlp(torch.cat([tables[2](bu), tables[3](bi)], -1))
            loss_fn(head(torch.cat([mf, deep], -1)).squeeze(-1), label).backward()
            optimizer.step()
    return epoch


def bare_lightgcn_epoch_fn(n_users, n_items, users, items, batch=2048, dim=64, layers=2, reg=1e-5):
    """RecBole's LightGCN math (symmetric-normalised bipartite adjacency in CSR, the fastest layout
    here, as ours; ``layers`` propagations
    of the whole graph per batch, mean over layers, BPR loss plus ``reg`` times the batch's ego
    embedding norms, Adam) in a bare loop."""
    U, I = torch.nn.Embedding(n_users, dim), torch.nn.Embedding(n_items, dim)
    rows = torch.cat([users, items + n_users])
    cols = torch.cat([items + n_users, users])
    degree = torch.bincount(rows, minlength=n_users + n_items).float() + 1e-7
    values = degree[rows].rsqrt() * degree[cols].rsqrt()
    adjacency = torch.sparse_coo_tensor(torch.stack([rows, cols]), values,
                                        (n_users + n_items, n_users + n_items)).coalesce().to_sparse_csr()
    optimizer = torch.optim.Adam([U.weight, I.weight], lr=1e-3)

    def epoch():
        order = torch.randperm(users.shape[0])
        u, i = users[order], items[order]
        j = torch.randint(1, n_items, u.shape)
        for s in range(0, u.shape[0], batch):
            uu, ii, jj = u[s:s + batch], i[s:s + batch], j[s:s + batch]
            optimizer.zero_grad(set_to_none=True)
            x = torch.cat([U.weight, I.weight])
            total = x
            for _ in range(layers):
                x = torch.sparse.mm(adjacency, x)
                total = total + x
            final = total / (layers + 1)
            eu, ei, ej = final[uu], final[n_users + ii], final[n_users + jj]
            mf = -torch.log(1e-10 + torch.sigmoid((eu * (ei - ej)).sum(1))).mean()
            norms = U(uu).norm(2) + I(ii).norm(2) + I(jj).norm(2)
            (mf + reg * norms / uu.shape[0]).backward()
            optimizer.step()
    return epoch


def stock_recbole_epoch_fn(split, name):
    """One epoch of RecBole's own Trainer + TrainDataLoader on the same split."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer

    from benchmark.core.data import write_atomic_inter
    from benchmark.core.models import BASE_CONFIG, _recbole_sandbox
    tmp = tempfile.mkdtemp(prefix="stock-")
    folder = Path(tmp) / "robrec"
    folder.mkdir()
    for part in ("train", "valid", "test"):
        write_atomic_inter(folder / f"robrec.{part}.inter", getattr(split, part))
    with _recbole_sandbox():
        config = Config(model=name, dataset="robrec", config_dict={
            **BASE_CONFIG, "data_path": tmp, "checkpoint_dir": str(Path(tmp) / "saved")})
        dataset = create_dataset(config)
        train_data, _, _ = data_preparation(config, dataset)
        model = get_model(name)(config, train_data.dataset)
        trainer = get_trainer(config["MODEL_TYPE"], name)(config, model)

    def epoch():
        with _recbole_sandbox():
            trainer._train_epoch(train_data, 0, show_progress=False)
    return epoch


def test_bpr_epoch_vs_bare_loop(benchmark, ml100k_split):
    built, trainer, optimizer = lean_trainer(ml100k_split, "BPR")
    bare = bare_bpr_epoch_fn(built.train_dataset.user_num, built.train_dataset.item_num,
                             trainer.users, trainer.items)
    reference = interleaved(benchmark, lambda: our_epoch(built, trainer, optimizer), bare)
    record_ratio(benchmark, "BPR epoch / bare PyTorch loop", reference)


def epoch_vs_bare(benchmark, split, name, bare_fn):
    """Our epoch (RecBole's model and loss, the lean batches) against the same math in a bare
    PyTorch loop, interleaved."""
    built, trainer, optimizer = lean_trainer(split, name)
    bare = bare_fn(built.train_dataset.user_num, built.train_dataset.item_num, trainer.users, trainer.items)
    reference = interleaved(benchmark, lambda: our_epoch(built, trainer, optimizer), bare, rounds=5)
    record_ratio(benchmark, f"{name} epoch / bare PyTorch loop", reference)


def test_neumf_epoch_vs_bare(benchmark, ml100k_split):
    epoch_vs_bare(benchmark, ml100k_split, "NeuMF", bare_neumf_epoch_fn)


def test_lightgcn_epoch_vs_bare(benchmark, ml100k_split):
    epoch_vs_bare(benchmark, ml100k_split, "LightGCN", bare_lightgcn_epoch_fn)


def test_bpr_epoch_vs_stock_recbole(benchmark, ml100k_split):
    built, trainer, optimizer = lean_trainer(ml100k_split, "BPR")
    reference = best_of(stock_recbole_epoch_fn(ml100k_split, "BPR"))
    benchmark.pedantic(our_epoch, args=(built, trainer, optimizer), rounds=5, warmup_rounds=1)
    record_ratio(benchmark, "BPR epoch / stock RecBole Trainer", reference)


@pytest.mark.parametrize("name", ["BPR", "LightGCN", "NeuMF"])
def test_epoch_overhead_outside_the_model(benchmark, ml100k_split, name):
    """Share of an epoch spent outside calculate_loss + backward + optimiser step."""
    built, trainer, optimizer = lean_trainer(ml100k_split, name)
    rounds = []   # (whole epoch, time inside the model's loss, backward and step)

    def epoch():
        start, inside = time.perf_counter(), 0.0
        built.model.train()
        for batch in trainer.batches():
            t = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            built.model.calculate_loss(batch).backward()
            optimizer.step()
            inside += time.perf_counter() - t
        rounds.append((time.perf_counter() - start, inside))

    benchmark.pedantic(epoch, rounds=3, warmup_rounds=1)
    total, inside = min(rounds)
    overhead = (total - inside) / total
    benchmark.extra_info["overhead_share"] = overhead
    record_ratio(benchmark, f"{name} epoch / its model work (overhead {overhead:.1%})", inside)
    if name != "BPR":  # the target for the heavy models; BPR's is the bare-loop ratio
        assert overhead < 0.15


def test_full_sort_eval_vs_bare_matmul(benchmark, ml100k_split):
    split = ml100k_split
    built, trainer, optimizer = lean_trainer(split, "BPR")
    scorer = Scorer(built, split.train.n_items)
    U, I = built.model.user_embedding.weight.detach(), built.model.item_embedding.weight.detach()

    def bare():
        torch.topk(U @ I.T, 20, dim=1)

    # What every validation epoch pays: the masks are built once per job (``Evaluator``).
    evaluator = Evaluator(scorer, split.train, split.test, split.n_real_users, also_mask=split.valid)
    benchmark.extra_info["mask_build_s"] = best_of(
        lambda: Evaluator(scorer, split.train, split.test, split.n_real_users, also_mask=split.valid))
    reference = interleaved(benchmark, evaluator, bare)
    record_ratio(benchmark, "full-sort eval (mask+metrics) / bare U@I.T+topk", reference)
    assert evaluator() == evaluate(scorer, split.train, split.test, split.n_real_users, also_mask=split.valid)


def test_neumf_full_sort_vs_pairwise_predict(benchmark, ml100k_split):
    """NeuMF validation: our split-first-layer path versus RecBole's pair-by-pair predict."""
    import benchmark.core.evaluation as evaluation
    split = ml100k_split
    built = build_model("NeuMF", split, {}, seed=0)
    built.model.eval()
    scorer = Scorer(built, split.train.n_items)
    users = torch.arange(split.n_real_users).numpy()

    def pairwise():
        real = evaluation.fast_path
        evaluation.fast_path = lambda model: None
        try:
            for _ in scorer.batches(users):
                pass
        finally:
            evaluation.fast_path = real

    reference = best_of(pairwise, rounds=2)
    benchmark.pedantic(lambda: [None for _ in scorer.batches(users)], rounds=3, warmup_rounds=1)
    record_ratio(benchmark, "NeuMF full-sort scoring / pairwise predict", reference)
