"""The RecBole adapter: build any RecBole general or sequential recommender on one of our train tables.

The model gets a genuine RecBole ``Dataset`` (built from our fixed split, written as RecBole
benchmark files into a private temp folder), so any general model works by name. RecBole's side
effects are switched off here (see ``docs/recbole.md``): ``sys.argv`` is hidden from
``Config``, nothing is written to ``log/``, ``log_tensorboard/`` or ``saved/``, no checkpoints.

Scores are returned in *our* index space (items ``0..n_items-1``) by ``Scorer``.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import sys
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from benchmark.core.data import Split, write_atomic_inter
from benchmark.core.errors import BadInput
from benchmark.core.model_names import BASELINES, HOUSE_MODELS, unknown_model  # noqa: F401 (re-exported)

# Settings of ours that override RecBole's defaults for every model (RecBole defaults otherwise).
BASE_CONFIG = {
    "use_gpu": False,
    "show_progress": False,
    "reproducibility": True,
    "worker": 0,
    "log_wandb": False,
    "load_col": {"inter": ["user_id", "item_id"]},
    "benchmark_filename": ["train", "valid", "test"],
    "normalize_all": False,
    "eval_args": {"split": None, "group_by": "user", "order": "RO", "mode": "full"},
}


def _quiet_recbole():
    for name in ("recbole", "", "py.warnings"):
        logging.getLogger(name).setLevel(logging.ERROR)




# RecBole models this project cannot train as RecBole does, and why (refused by name).
_NEEDS_FEATURES = ("needs item features (or a knowledge graph) in its dataset; the benchmark trains on "
                   "user-item interactions only")
REFUSED = {
    "RaCT": "RaCT trains in three stages (actor pre-training, critic pre-training, fine-tuning), "
            "each a separate RecBole run that saves a checkpoint the next one loads; the benchmark "
            "trains in one run and never loads checkpoints",
    "S3Rec": "S3Rec pre-trains on item attributes in a separate RecBole run whose checkpoint fine-tuning "
             "loads; the benchmark trains in one run, on interactions only, and never loads checkpoints",
    **{name: f"{name} {_NEEDS_FEATURES}" for name in ("DIN", "DIEN", "FDSA", "SASRecF", "GRU4RecF",
                                                       "GRU4RecKG", "KSR")},
    # Sequential models our path cannot give what they read (tests/test_model_zoo.py; docs/recbole.md).
    "FEARec": "FEARec's contrastive loss draws same-target sequences from RecBole's augmented SequentialDataset "
              "(its item_id_list); the benchmark builds sequences itself and gives the model a plain Dataset",
}
MODULES = ("recbole.model.general_recommender", "recbole.model.sequential_recommender")


def model_class(name: str):
    """The RecBole recommender class called ``name``: one of ``HOUSE_MODELS``, a RecBole general or
    sequential model by name, or a class of the user's own as ``package.module:Class`` or
    ``path/to/file.py:Class``; BadInput (one line) if there is none."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if ":" in name:
        return _custom_class(name)
    if name in HOUSE_MODELS:
        return getattr(importlib.import_module(HOUSE_MODELS[name]), name)
    if name in REFUSED:
        raise BadInput(f"model {name} is not supported: {REFUSED[name]}")
    if name == "NCL" and importlib.util.find_spec("faiss") is None:
        raise BadInput("model NCL needs faiss for its E-step clustering: pip install faiss-cpu")
    modules = _model_modules()
    cls = next((getattr(m, name) for m in modules if isinstance(getattr(m, name, None), type)), None)
    if cls is None:
        known = sorted(n for m in modules for n in dir(m) if isinstance(getattr(m, n), type)
                       and n[0].isupper() and not n.endswith("Recommender"))
        raise unknown_model(name, known)
    return cls


def _model_modules():
    """RecBole's general and sequential model packages, imported with torch's anomaly detection
    left as it was: SINE's module turns it on for the whole process when imported (RecBole
    1.2.1, ``sine.py``), which slows every backward pass and rewrites a diverging loss's error."""
    anomaly = torch.is_anomaly_enabled()
    try:
        return [importlib.import_module(m) for m in MODULES]
    finally:
        torch.autograd.set_detect_anomaly(anomaly)


def is_sequential(name: str) -> bool:
    """Whether model ``name`` is a RecBole sequential recommender (it predicts each user's next
    item from their time-ordered history, and trains and is scored under leave-one-out)."""
    from recbole.model.abstract_recommender import SequentialRecommender
    return issubclass(model_class(name), SequentialRecommender)


REQUIRED_METHODS = ("calculate_loss", "predict", "full_sort_predict")
_REGISTERED: dict[str, type] = {}   # classes handed over in this process (the Python API)


def register_model_class(cls: type) -> str:
    """Make a model class usable by name in this process (``module:Class``); BadInput when it
    does not follow RecBole's general-recommender API."""
    name = f"{cls.__module__}:{cls.__qualname__}"
    _REGISTERED[name] = _checked(cls, name)
    return name


def _checked(cls, name: str):
    from recbole.model.abstract_recommender import (
        AbstractRecommender,
        GeneralRecommender,
        SequentialRecommender,
    )
    if not (isinstance(cls, type) and issubclass(cls, (GeneralRecommender, SequentialRecommender))):
        raise BadInput(f"model '{name}' is not a subclass of RecBole's GeneralRecommender or "
                       f"SequentialRecommender")
    missing = [m for m in REQUIRED_METHODS if getattr(cls, m) is getattr(AbstractRecommender, m)]
    if missing:
        raise BadInput(f"model '{name}' does not implement {', '.join(missing)}")
    return cls


@functools.lru_cache(maxsize=None)
def _custom_class(name: str):
    """A user's RecBole-API model class (``module:Class`` or ``file.py:Class``), imported once
    per process; it must subclass ``GeneralRecommender`` or ``SequentialRecommender`` and implement
    ``REQUIRED_METHODS``."""
    where, _, attr = name.rpartition(":")
    try:
        if where.endswith(".py"):
            path = Path(where).resolve()
            if not path.is_file():
                raise BadInput(f"model '{name}': no such file {where}")
            spec = importlib.util.spec_from_file_location(f"robrec_user_model_{abs(hash(str(path)))}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except BadInput:
        raise
    except Exception as exc:   # the user's code failed to import: say so in one line
        raise BadInput(f"model '{name}': cannot import {where}: {type(exc).__name__}: {exc}") from None
    return _checked(getattr(module, attr, None), name)


def size_problem(name: str, params: dict, n_users: int, n_items: int, n_train: int) -> str | None:
    """Why ``name`` cannot train on data of this size with these settings (None: it can).

    NCL clusters users and items into ``num_clusters`` (default 1000) groups; DGCF samples
    ``max(users, items) / batches`` distinct users and items for its correlation loss, with
    ``batches = train interactions // train_batch_size + 1`` (both fail inside RecBole on
    small data). The CPR models re-rank ``reranker_CAN_NUM`` (default 100) candidates."""
    params = params or {}
    if name == "NCL":
        clusters = int(params.get("num_clusters", 1000))
        if clusters > min(n_users, n_items):
            return (f"model NCL needs num_clusters ({clusters}) at most the number of users ({n_users}) "
                    f"and items ({n_items}): set model_params: {{NCL: {{num_clusters: N}}}}")
    if name == "DGCF":
        batches = n_train // int(params.get("train_batch_size", 2048)) + 1
        if max(n_users, n_items) // batches > min(n_users, n_items):
            return (f"model DGCF samples max(users, items) / batches = {max(n_users, n_items) // batches} "
                    f"users and items per batch, more than the {min(n_users, n_items)} there are: lower "
                    f"its train_batch_size in model_params")
    if name in ("GRU4RecCPR", "SASRecCPR") and int(params.get("reranker_CAN_NUM", 100)) > n_items:
        return (f"model {name} re-ranks reranker_CAN_NUM ({params.get('reranker_CAN_NUM', 100)}) candidates, more "
                f"than the {n_items} items: set model_params: {{{name}: {{reranker_CAN_NUM: N}}}}")
    return None


def _fast_read_csv(read_csv):
    """RecBole reads atomic files with pandas' pure-Python parser (70% of building a model on
    ml-100k); our files are plain tab-separated, which the C parser reads identically."""
    def read(*args, **kwargs):
        if kwargs.get("engine") == "python" and len(kwargs.get("delimiter") or "\t") == 1:
            kwargs["engine"] = "c"
        return read_csv(*args, **kwargs)
    return read


@contextmanager
def _recbole_sandbox():
    """Hide our argv from RecBole's Config and keep RecBole's files out of the working dir."""
    import pandas as pd
    from recbole.data.dataset import dataset as rb_dataset
    from recbole.trainer import trainer as rb_trainer
    from recbole.utils import utils as rb_utils

    class _NoWriter:
        def add_scalar(self, *a, **k):
            pass

        def add_hparams(self, *a, **k):
            pass

        def close(self):
            pass

    with mock.patch.object(sys, "argv", sys.argv[:1]), \
            mock.patch.object(rb_utils, "get_tensorboard", lambda logger: _NoWriter()), \
            mock.patch.object(rb_trainer, "get_tensorboard", lambda logger: _NoWriter()), \
            mock.patch.object(rb_dataset.pd, "read_csv", _fast_read_csv(pd.read_csv)), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # RecBole's chained fillna under pandas 2
        warnings.simplefilter("ignore", UserWarning)     # torch.sparse.FloatTensor in LightGCN
        _quiet_recbole()
        yield


@dataclass
class IdMap:
    """RecBole's internal ids of our users and items (RecBole reserves id 0 for padding)."""

    user: np.ndarray   # our user id -> RecBole user id
    item: np.ndarray   # our item id -> RecBole item id

    def users(self, ids) -> torch.Tensor:
        return torch.from_numpy(self.user[np.asarray(ids)])

    def items(self, ids) -> torch.Tensor:
        return torch.from_numpy(self.item[np.asarray(ids)])


@dataclass
class BuiltModel:
    model: torch.nn.Module
    config: object          # recbole Config
    train_dataset: object   # recbole Dataset of the train split
    ids: IdMap
    name: str
    sequential: bool = False   # a SequentialRecommender: trained and scored on user sequences


def build_model(name: str, split: Split, params: dict | None = None, seed: int = 0,
                device: str = "cpu") -> BuiltModel:
    """Instantiate RecBole model ``name`` on ``split.train`` (poisoned or not), seeded, on
    ``device`` (``benchmark.core.device``: RecBole's own device logic stays off, ``use_gpu``
    False, as it rewrites ``CUDA_VISIBLE_DEVICES``; the model reads ``config["device"]``)."""
    cls = model_class(name)
    from recbole.data import create_dataset
    from recbole.data.dataset import Dataset as RecBoleDataset
    from recbole.model.abstract_recommender import SequentialRecommender
    from recbole.utils import init_seed

    with tempfile.TemporaryDirectory(prefix="robrec-") as tmp, _recbole_sandbox():
        folder = Path(tmp) / "robrec"
        folder.mkdir()
        parts = {"train": split.train, "valid": split.valid, "test": split.test}
        for part, inter in parts.items():
            write_atomic_inter(folder / f"robrec.{part}.inter", inter)
        config_dict = {**BASE_CONFIG, **(params or {}), "seed": seed, "data_path": tmp,
                       "checkpoint_dir": str(Path(tmp) / "saved")}
        sequential = issubclass(cls, SequentialRecommender)
        try:
            config = _config(cls, config_dict, sequential)
        except (ValueError, TypeError, KeyError) as exc:
            raise BadInput(f"bad configuration for model {name}: {exc}") from None
        init_seed(seed, True)
        # A sequential model gets the plain Dataset: our sequences are built from our split
        # (benchmark.core.sequences), not by RecBole's SequentialDataset augmentation.
        dataset = RecBoleDataset(config) if sequential else create_dataset(config)
        train_dataset = dataset.build()[0]
        if sequential:
            _sequence_fields(config, train_dataset)
        ids = _id_map(dataset, split)
        config["device"] = torch.device(device)
        init_seed(seed, True)
        model = cls(config, train_dataset).to(config["device"])
        _fast_graph(model)
    return BuiltModel(model=model, config=config, train_dataset=train_dataset, ids=ids, name=name,
                      sequential=sequential)


def _sequence_fields(config, train_dataset) -> None:
    """What RecBole's sequential data path sets before a model is built, set here: the batch
    transform's field names in the config (``construct_transform``: BERT4Rec's masked sequence,
    SHAN's inverted one) and the item list's length on the dataset (CORE sizes its position
    embedding by it)."""
    from recbole.data.transform import construct_transform
    construct_transform(config)
    item_list = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    train_dataset.field2seqlen[item_list] = config["MAX_ITEM_LIST_LENGTH"]


UNIFORM_NEGATIVES = {"distribution": "uniform", "sample_num": 1}


def _config(cls, config_dict: dict, sequential: bool):
    """RecBole's Config of the model. A sequential model with RecBole's default cross-entropy loss
    samples no negatives (RecBole refuses negative sampling with ``loss_type: CE``); with
    another loss (``BPR``; TransRec, which has no ``loss_type``, trains on BPR) it gets one
    uniform negative per instance, as RecBole's default."""
    from recbole.config import Config
    if not sequential:
        return Config(model=cls, dataset="robrec", config_dict=config_dict)
    config = Config(model=cls, dataset="robrec", config_dict={"train_neg_sample_args": None, **config_dict})
    if config["loss_type"] != "CE" and "train_neg_sample_args" not in config_dict:
        config = Config(model=cls, dataset="robrec", config_dict={**config_dict, "train_neg_sample_args": UNIFORM_NEGATIVES})
    return config


CSR_GRAPH_MODELS = ("LightGCN",)


def _fast_graph(model) -> None:
    """The same normalised adjacency in a faster layout: RecBole builds graph models'
    ``norm_adj_matrix`` as an uncoalesced COO tensor, which every ``torch.sparse.mm`` coalesces
    again. Coalesced once here; for LightGCN, whose only use of it is ``sparse.mm``, in CSR
    (forward and backward of one propagation on ml-100k, 1 thread: 187 ms uncoalesced, 128 ms
    coalesced, 48 ms CSR; docs/performance.md)."""
    graph = getattr(model, "norm_adj_matrix", None)
    if isinstance(graph, torch.Tensor) and graph.layout == torch.sparse_coo:
        graph = graph.coalesce()
        model.norm_adj_matrix = graph.to_sparse_csr() if type(model).__name__ in CSR_GRAPH_MODELS else graph


def _id_map(dataset, split: Split) -> IdMap:
    def lookup(field: str, n: int) -> np.ndarray:
        """RecBole id of each of our ids 0..n-1 (written as tokens "0".."n-1"), vectorised."""
        import pandas as pd
        token_to_id = pd.Series(dataset.field2token_id[field])
        return token_to_id.reindex(np.arange(n).astype(str)).fillna(0).to_numpy(dtype=np.int64)

    n_users = max(split.train.n_users, split.n_real_users)
    return IdMap(user=lookup(dataset.uid_field, n_users), item=lookup(dataset.iid_field, split.train.n_items))
