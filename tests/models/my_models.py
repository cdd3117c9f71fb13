"""Models of a user's own, written to RecBole's general-recommender API, as a team would bring
them: ``--models tests/models/my_models.py:DotMF`` or ``tests.models.my_models:ItemBias``."""
import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType


class DotMF(GeneralRecommender):
    """Matrix factorisation with BPR loss: user and item embedding tables."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.user_embedding = torch.nn.Embedding(self.n_users, 16)
        self.item_embedding = torch.nn.Embedding(self.n_items, 16)
        torch.nn.init.normal_(self.user_embedding.weight, std=0.1)
        torch.nn.init.normal_(self.item_embedding.weight, std=0.1)

    def calculate_loss(self, interaction):
        user = self.user_embedding(interaction[self.USER_ID])
        pos = self.item_embedding(interaction[self.ITEM_ID])
        neg = self.item_embedding(interaction[self.NEG_ITEM_ID])
        return -F.logsigmoid((user * (pos - neg)).sum(1)).mean()

    def predict(self, interaction):
        return (self.user_embedding(interaction[self.USER_ID])
                * self.item_embedding(interaction[self.ITEM_ID])).sum(1)

    def full_sort_predict(self, interaction):
        return (self.user_embedding(interaction[self.USER_ID]) @ self.item_embedding.weight.T).view(-1)


class ItemBias(GeneralRecommender):
    """One learned score per item (a popularity-like model): no embedding tables."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.bias = torch.nn.Parameter(torch.zeros(self.n_items))

    def calculate_loss(self, interaction):
        return -F.logsigmoid(self.bias[interaction[self.ITEM_ID]] - self.bias[interaction[self.NEG_ITEM_ID]]).mean()

    def predict(self, interaction):
        return self.bias[interaction[self.ITEM_ID]]

    def full_sort_predict(self, interaction):
        return self.bias.repeat(interaction[self.USER_ID].shape[0])


class NoPredict(GeneralRecommender):
    """Forgets two of the methods the benchmark needs (refused before any work)."""

    input_type = InputType.PAIRWISE

    def calculate_loss(self, interaction):
        return torch.zeros(())
