"""Biased matrix factorisation, the model of the design this project grew from (and IRGAN's D).

R(u, c) = sigmoid(<theta_u, theta_c> + beta_c): user and item embeddings and a per-item bias,
trained pointwise with binary cross-entropy on the observed items (label 1) and uniformly
sampled unobserved ones (label 0), as RecBole trains its pointwise models. IRGAN's item
recommendation discriminator has exactly this form (Wang et al., SIGIR 2017, code:
``i_bias``); the source material writes the bias as beta, which we read per item (a single
global beta would not change any ranking). A RecBole ``GeneralRecommender``, so the grid, the
gradient attacks and the trainer defenses take it like any RecBole model; the bias is a plain
parameter, not an embedding table, so FGSM/PGD and APR perturb the embeddings only.

Config: ``embedding_size`` (default 64).
"""
from __future__ import annotations

import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_normal_initialization
from recbole.utils import InputType


class BiasedMF(GeneralRecommender):
    """sigmoid(<theta_u, theta_c> + beta_c), trained with binary cross-entropy."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.LABEL = config["LABEL_FIELD"]
        self.embedding_size = int(config["embedding_size"] or 64)
        self.user_embedding = torch.nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = torch.nn.Embedding(self.n_items, self.embedding_size)
        self.apply(xavier_normal_initialization)
        self.item_bias = torch.nn.Parameter(torch.zeros(self.n_items))
        self.loss = torch.nn.BCEWithLogitsLoss()

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """The logit <theta_u, theta_c> + beta_c."""
        return (self.user_embedding(user) * self.item_embedding(item)).sum(-1) + self.item_bias[item]

    def calculate_loss(self, interaction):
        logits = self.forward(interaction[self.USER_ID], interaction[self.ITEM_ID])
        return self.loss(logits, interaction[self.LABEL].float())

    def predict(self, interaction):
        return torch.sigmoid(self.forward(interaction[self.USER_ID], interaction[self.ITEM_ID]))

    def full_sort_predict(self, interaction):
        users = self.user_embedding(interaction[self.USER_ID])
        return torch.sigmoid(users @ self.item_embedding.weight.T + self.item_bias).view(-1)
