"""Sequential training cost: SASRec on ml-100k's leave-one-out split, one thread.

1. Same math: our lean path on RecBole-style instances (``training_instances``: every prefix of
   every user's train sequence, 97,171 instances of up to 50 items) against RecBole's own
   ``Trainer._train_epoch`` on RecBole's ``SequentialDataset`` + ``TrainDataLoader`` (the same
   97,171 instances). An epoch is 48 batches of 2048 and takes minutes on one thread, so both
   time the first ``SAME_MATH_BATCHES`` batches of an epoch, interleaved; the ratio is per batch.
2. Windows against instances: one full epoch of ``training_windows`` + ``every_position_loss``
   against instance batches extrapolated to an epoch (interleaved), and the validation NDCG@10
   of both paths from the same seed after the same number of epochs (each epoch timed).

Run: ``.venv/bin/python -m pytest benchmarks/test_bench_sequential.py --benchmark-only -p no:cacheprovider -s``
(about 9 minutes on this 2-core machine, most of it one instance epoch; docs/performance.md).
"""
import itertools
import math
import tempfile
import time

import pytest
import torch

from benchmark.core.models import build_model
from benchmark.core.training import LeanTrainer, TrainSettings
from benchmarks.conftest import RATIOS, interleaved, record_ratio

SAME_MATH_BATCHES = 2      # batches of 2048 instances timed per round (about 10 s each, one thread)
SAME_MATH_ROUNDS = 3
QUALITY_EPOCHS = 1         # epochs of both paths before comparing NDCG@10 (an instance epoch: ~6-10 min)
WINDOW_EPOCHS = 3          # windows are cheap: also report their NDCG@10 after this many epochs


@pytest.fixture(scope="module")
def loo_split():
    from benchmark.core.data import load_dataset, split_leave_one_out
    return split_leave_one_out(load_dataset("ml-100k"), 0)


def lean_sasrec(split, make_sequences, seed=0):
    """SASRec (RecBole's defaults: 2 layers, 2 heads, hidden 64, CE loss) on ``make_sequences``
    (``training_instances`` or ``training_windows``) through ``LeanTrainer``, with Adam."""
    built = build_model("SASRec", split, {}, seed=seed)
    sequences = make_sequences(split.train, int(built.model.max_seq_length), built.ids.item, built.ids.user)
    trainer = LeanTrainer(built, built.ids.users(split.train.users), built.ids.items(split.train.items),
                          TrainSettings.from_config(built.config), seed=seed, sequences=sequences)
    optimizer = torch.optim.Adam(built.model.parameters(), lr=trainer.settings.learning_rate)
    return built, trainer, optimizer


def lean_steps(built, trainer, optimizer, n_batches=None) -> float:
    """``n_batches`` training steps (all of an epoch: None) as ``LeanTrainer.fit`` does them;
    the mean loss."""
    built.model.train()
    total, count = 0.0, 0
    for batch in itertools.islice(trainer.batches(), n_batches):
        optimizer.zero_grad(set_to_none=True)
        loss = built.model.calculate_loss(batch)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
        count += 1
    return total / max(count, 1)


def timed(fn, times: list):
    """``fn`` that appends each call's seconds to ``times`` (the raw reference rounds, reported)."""
    def run():
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return run


def raw_rounds(benchmark, reference_times: list) -> dict:
    """Every round of both sides, in run order (the first reference round is the warm-up's)."""
    return {"ours_rounds_s": [round(t, 3) for t in benchmark.stats.stats.data],
            "reference_rounds_s": [round(t, 3) for t in reference_times]}


class FirstBatches:
    """The first ``n`` batches of a RecBole dataloader, for ``Trainer._train_epoch``."""

    def __init__(self, loader, n):
        self.loader, self.n, self.shuffle = loader, n, loader.shuffle

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)

    def __len__(self):
        return self.n


def recbole_sasrec(seed=0):
    """RecBole's own SASRec pipeline on the ml-100k bundled with RecBole: ``SequentialDataset``
    (leave-one-out by time, RecBole's prefix augmentation), ``TrainDataLoader`` and ``Trainer``."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    from benchmark.core.data import embedded_dir
    from benchmark.core.models import _recbole_sandbox
    tmp = tempfile.mkdtemp(prefix="stock-seq-")
    with _recbole_sandbox():
        config = Config(model="SASRec", dataset="ml-100k", config_dict={
            "data_path": str(embedded_dir().parent), "use_gpu": False, "show_progress": False,
            "worker": 0, "log_wandb": False, "reproducibility": True, "seed": seed,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "train_neg_sample_args": None, "checkpoint_dir": tmp})
        init_seed(seed, True)
        dataset = create_dataset(config)
        train_data, _, _ = data_preparation(config, dataset)
        init_seed(seed, True)
        model = get_model("SASRec")(config, train_data.dataset)
        trainer = get_trainer(config["MODEL_TYPE"], "SASRec")(config, model)
    return config, train_data, trainer


def test_sasrec_instances_vs_recbole_trainer(benchmark, loo_split):
    """Per batch of 2048 instances: our lean path against RecBole's Trainer + TrainDataLoader."""
    from benchmark.core.models import _recbole_sandbox
    from benchmark.core.sequences import training_instances
    built, trainer, optimizer = lean_sasrec(loo_split, training_instances)
    config, train_data, stock = recbole_sasrec()
    assert len(trainer.sequences) == len(train_data.dataset)            # the same 97,171 instances
    assert sum(p.numel() for p in built.model.parameters()) == sum(p.numel() for p in stock.model.parameters())
    assert config["train_batch_size"] == trainer.settings.batch_size
    first = FirstBatches(train_data, SAME_MATH_BATCHES)

    def recbole_batches():
        with _recbole_sandbox():
            stock._train_epoch(first, 0, show_progress=False)

    reference_times = []
    reference = interleaved(benchmark, lambda: lean_steps(built, trainer, optimizer, SAME_MATH_BATCHES),
                            timed(recbole_batches, reference_times), rounds=SAME_MATH_ROUNDS)
    n_batches = math.ceil(len(train_data.dataset) / config["train_batch_size"])
    ratio = record_ratio(benchmark, f"SASRec {SAME_MATH_BATCHES} instance batches / RecBole Trainer", reference)
    ours = benchmark.stats.stats.min
    benchmark.extra_info.update({"batches": SAME_MATH_BATCHES, "batch_size": config["train_batch_size"],
                                 "ours_per_batch_s": ours / SAME_MATH_BATCHES,
                                 "recbole_per_batch_s": reference / SAME_MATH_BATCHES,
                                 "epoch_batches": n_batches, **raw_rounds(benchmark, reference_times)})
    print(f"\nSASRec per batch of {config['train_batch_size']}: ours {ours / SAME_MATH_BATCHES:.2f} s, "
          f"RecBole {reference / SAME_MATH_BATCHES:.2f} s, ratio {ratio:.3f} "
          f"(epoch = {n_batches} batches: ours ~{ours / SAME_MATH_BATCHES * n_batches:.0f} s, "
          f"RecBole ~{reference / SAME_MATH_BATCHES * n_batches:.0f} s)\n"
          f"  raw rounds of {SAME_MATH_BATCHES} batches: {raw_rounds(benchmark, reference_times)}")


def test_sasrec_windows_epoch_vs_instances(benchmark, loo_split):
    """A whole epoch of windows against one instance batch (interleaved) times an epoch's batches."""
    from benchmark.core.sequences import training_instances, training_windows
    windows = lean_sasrec(loo_split, training_windows)
    instances = lean_sasrec(loo_split, training_instances)
    n_instance_batches = math.ceil(len(instances[1].sequences) / instances[1].settings.batch_size)
    reference_times = []
    one_batch = interleaved(benchmark, lambda: lean_steps(*windows),
                            timed(lambda: lean_steps(*instances, 1), reference_times), rounds=2)
    epoch = one_batch * n_instance_batches
    ratio = record_ratio(benchmark, f"SASRec windows epoch / instances epoch ({n_instance_batches} x 1 batch)", epoch)
    ours = benchmark.stats.stats.min
    tokens = {name: int(t.sequences.lengths.sum()) for name, t in (("windows", windows[1]), ("instances", instances[1]))}
    rows = {name: len(t.sequences) for name, t in (("windows", windows[1]), ("instances", instances[1]))}
    benchmark.extra_info.update({"instance_batch_s": one_batch, "instance_epoch_batches": n_instance_batches,
                                 "items_in": tokens, "rows": rows, **raw_rounds(benchmark, reference_times)})
    print(f"\nSASRec epoch: windows {ours:.1f} s ({rows['windows']} windows, {tokens['windows']} input items), "
          f"instances ~{epoch:.0f} s ({n_instance_batches} x {one_batch:.2f} s; {rows['instances']} instances, "
          f"{tokens['instances']} input items), ratio {ratio:.4f} (1/{1 / ratio:.0f})\n"
          f"  raw rounds (ours: a windows epoch; reference: one instance batch): {raw_rounds(benchmark, reference_times)}")


def test_sasrec_windows_vs_instances_quality(benchmark, loo_split):
    """Validation NDCG@10 of both paths from the same seed after ``QUALITY_EPOCHS`` epochs each (and
    of windows after ``WINDOW_EPOCHS``); every epoch timed. Order: windows' first epoch, the
    instances' epoch(s), windows' remaining epochs, so that the instance epoch sits between
    window epochs on this drifting machine."""
    from benchmark.core.evaluation import Evaluator, SequenceScorer
    from benchmark.core.sequences import histories, training_instances, training_windows
    split = loo_split
    paths = {"windows": lean_sasrec(split, training_windows), "instances": lean_sasrec(split, training_instances)}

    def validator(built):   # as benchmark/pipeline.py::_scorers + the trainer's validation
        history = histories(split.train, split.n_real_users, int(built.model.max_seq_length),
                            built.ids.item, built.ids.user)
        evaluator = Evaluator(SequenceScorer(built, split.train.n_items, history), split.train, split.valid,
                              split.n_real_users)

        def ndcg():
            built.model.eval()
            return float(evaluator()["ndcg@10"])
        return ndcg

    validate = {name: validator(path[0]) for name, path in paths.items()}
    initial = {name: validate[name]() for name in paths}
    log = {name: [] for name in paths}     # (epoch seconds, mean loss, NDCG@10) per epoch

    def epochs(name, n):
        built, trainer, optimizer = paths[name]
        for _ in range(n):
            start = time.perf_counter()
            loss = lean_steps(built, trainer, optimizer)
            log[name].append((time.perf_counter() - start, loss, validate[name]()))

    def train_both():
        torch.manual_seed(0)                 # dropout: the same stream start for both paths
        epochs("windows", 1)
        state = torch.random.get_rng_state()
        torch.manual_seed(0)
        epochs("instances", QUALITY_EPOCHS)
        torch.random.set_rng_state(state)
        epochs("windows", WINDOW_EPOCHS - 1)

    benchmark.pedantic(train_both, rounds=1, iterations=1)
    w, i = log["windows"], log["instances"]
    window_epoch, instance_epoch = min(t for t, _, _ in w), min(t for t, _, _ in i)
    ratio = window_epoch / instance_epoch
    RATIOS.append(("SASRec windows epoch / instances epoch (measured)", window_epoch, instance_epoch, ratio))
    benchmark.extra_info.update({"initial_ndcg@10": initial, "windows": w, "instances": i,
                                 "quality_epochs": QUALITY_EPOCHS, "ratio": ratio})
    print(f"\nNDCG@10 (valid) before training: windows {initial['windows']:.4f}, instances {initial['instances']:.4f}")
    for name in paths:
        for epoch, (seconds, loss, ndcg) in enumerate(log[name], 1):
            print(f"{name:<9} epoch {epoch}: {seconds:7.1f} s  loss {loss:.4f}  NDCG@10 {ndcg:.4f}")
    print(f"epoch time windows / instances (measured): {ratio:.4f} (1/{1 / ratio:.0f})")
    assert all(math.isfinite(loss) for _, loss, _ in w + i)
