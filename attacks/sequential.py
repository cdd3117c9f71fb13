"""Pieces the attacks on sequential recommenders share: a RecBole sequential model's next-item
log-probabilities from right-padded item lists, and the gradient of a target loss with respect
to the embeddings of the items it read (Yue et al.'s attacks score candidate items by the cosine
between ``e - sign(grad)`` and every item embedding: ``descent_scores``)."""
from __future__ import annotations

import torch


def next_item_log_probs(model, users: torch.Tensor, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Log-softmax of the model's ``full_sort_predict`` after each sequence, (B, n_items)."""
    from recbole.data.interaction import Interaction
    batch = Interaction({model.USER_ID: users, model.ITEM_SEQ: items, model.ITEM_SEQ_LEN: lengths.clamp_min(1),
                         model.POS_ITEM_ID: torch.zeros_like(users)})
    return torch.log_softmax(model.full_sort_predict(batch).view(items.shape[0], -1), dim=-1)


def target_log_prob(model, users, items, lengths, targets: torch.Tensor) -> torch.Tensor:
    """Mean log-probability of the ``targets`` (RecBole ids) as the next item, per sequence."""
    return next_item_log_probs(model, users, items, lengths)[:, targets].mean(1)


def input_gradient(model, users: torch.Tensor, items: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor):
    """The item embeddings a sequence reads, and the gradient of the mean cross-entropy towards the
    targets (``targets``: one per sequence, shape (B,), or a set shared by all, shape (T,)) with
    respect to them: two (B, L, hidden) tensors."""
    captured = {}

    def keep(module, args, output):
        output.retain_grad()
        captured["embeddings"] = output

    handle = model.item_embedding.register_forward_hook(keep)
    try:
        log_probs = next_item_log_probs(model, users, items, lengths)
    finally:
        handle.remove()
    if targets.dim() == 1 and targets.shape[0] == items.shape[0]:
        loss = -log_probs.gather(1, targets.view(-1, 1)).sum()
    else:
        loss = -log_probs[:, targets].mean(1).sum()
    model.zero_grad(set_to_none=True)
    loss.backward()
    embeddings = captured["embeddings"]
    width = items.shape[1]   # BERT4Rec reads one more position (its mask token): keep the items'
    return embeddings[:, :width].detach(), embeddings.grad[:, :width].detach()


def descent_scores(model, embedding: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """cos(e - sign(g), E_c) for every item c (RecBole ids; column 0, padding, is -inf): how well
    each item moves an input embedding down the loss (Yue et al.'s ``e - sign(grad)``)."""
    table = model.item_embedding.weight.detach()
    scores = torch.nn.functional.cosine_similarity((embedding - grad.sign()).unsqueeze(1), table.unsqueeze(0), dim=-1)
    scores[:, 0] = -torch.inf
    return scores
