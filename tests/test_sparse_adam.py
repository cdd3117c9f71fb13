"""``optimizer: sparse_adam``: lazy Adam moves only the embedding rows a batch touches; dense Adam
keeps moving rows with momentum from earlier batches. Training with it works end to end."""
import pytest
import torch
from recbole.data.interaction import Interaction

from benchmark.core.embeddings import embedding_tables
from benchmark.core.models import build_model
from benchmark.core.training import LazyAdam, LeanTrainer, TrainSettings


def two_steps(built, make):
    model = built.model
    optimizer = make(model)
    item_table = model.item_embedding.weight
    first = Interaction({"user_id": torch.tensor([1, 2]), "item_id": torch.tensor([3, 4]),
                         "neg_item_id": torch.tensor([5, 6])})
    second = Interaction({"user_id": torch.tensor([7]), "item_id": torch.tensor([8]),
                          "neg_item_id": torch.tensor([9])})
    for batch in (first, second):
        optimizer.zero_grad()
        before = item_table.detach().clone()
        model.calculate_loss(batch).backward()
        optimizer.step()
    return before, item_table.detach()


def test_lazy_adam_leaves_rows_outside_the_batch_alone(tiny_split):
    params = {"learning_rate": 0.01}
    lazy = build_model("BPR", tiny_split, params, seed=0)
    before, after = two_steps(lazy, lambda m: LazyAdam(m, m.parameters(), lr=0.01))
    assert torch.equal(before[[3, 4, 5, 6]], after[[3, 4, 5, 6]])       # touched in step 1 only
    assert not torch.equal(before[[8, 9]], after[[8, 9]])
    dense = build_model("BPR", tiny_split, params, seed=0)
    before, after = two_steps(dense, lambda m: torch.optim.Adam(m.parameters(), lr=0.01))
    assert not torch.equal(before[[3, 4]], after[[3, 4]])               # momentum moves them


@pytest.mark.parametrize("name", ["BPR", "LightGCN"])
def test_training_with_sparse_adam(name, tiny_split):
    built = build_model(name, tiny_split, {}, seed=0)
    settings = TrainSettings(epochs=3, batch_size=256, learning_rate=0.01, optimizer="sparse_adam")
    trainer = LeanTrainer(built, built.ids.users(tiny_split.train.users),
                          built.ids.items(tiny_split.train.items), settings, seed=0)
    losses = trainer.fit().history["train_loss"]
    assert losses[-1] < losses[0]
    assert not any(t.sparse for t in embedding_tables(built.model))     # dense again afterwards


def test_sparse_adam_refuses_weight_decay(tiny_split):
    built = build_model("BPR", tiny_split, {}, seed=0)
    with pytest.raises(ValueError, match="weight decay"):
        LazyAdam(built.model, built.model.parameters(), lr=0.01, weight_decay=1e-4)
