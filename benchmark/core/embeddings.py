"""Embedding tables of RecBole models and the per-row geometry on them: what gradient attacks
(``attacks.gradient``) and adversarial-training defenses (``defenses.adversarial``) share.

A row is one user's or one item's embedding; RecBole's padding row 0 is never perturbed or
counted. Radii follow APR's convention (He et al., SIGIR 2018): eps is each row's L2 norm, or
(``relative``) eps times the row's own norm."""
from __future__ import annotations

import torch


def has_embeddings(model) -> bool:
    """Whether gradient attacks and APR apply: the model has user and item embedding tables."""
    return bool(embedding_tables(model))


def embedding_tables(model) -> list[torch.nn.Embedding]:
    """User and item embedding tables of a RecBole model (BPR, LightGCN, NeuMF, ...)."""
    tables = []
    for attr, module in model.named_children():
        if isinstance(module, torch.nn.Embedding) and ("user" in attr or "item" in attr):
            tables.append(module)
    return tables


def reset_caches(model) -> None:
    """Drop cached propagated embeddings (LightGCN and other graph models keep them)."""
    for attr in ("restore_user_e", "restore_item_e"):
        if hasattr(model, attr):
            setattr(model, attr, None)


def is_user_table(name: str) -> bool:
    """Whether a parameter name (``model.user_embedding.weight``) is that of a user table."""
    return "user" in name.split(".")[-2]


def table_names(model, tables) -> list[str]:
    """Parameter names (``user_embedding.weight``, ...) of the given embedding tables."""
    names = {id(module): name for name, module in model.named_modules()}
    return [f"{names[id(t)]}.weight" for t in tables]


def row_normalise(grad: torch.Tensor) -> torch.Tensor:
    norm = grad.norm(dim=1, keepdim=True)
    return torch.where(norm > 0, grad / norm.clamp_min(1e-12), torch.zeros_like(grad))


def project_rows(delta: torch.Tensor, eps) -> torch.Tensor:
    """Each row of ``delta`` onto the L2 ball of radius ``eps`` (a number or a column of radii)."""
    norm = delta.norm(dim=1, keepdim=True)
    return delta * torch.clamp(eps / norm.clamp_min(1e-12), max=1.0)


EPS_MODES = ("absolute", "relative")


def row_radii(tables, eps: float, eps_mode: str) -> list[torch.Tensor]:
    """Per table, a column of each row's perturbation radius: ``eps`` (absolute) or ``eps`` times
    the row's current L2 norm (relative, no gradient); RecBole's padding row 0 gets 0."""
    out = []
    for t in tables:
        if eps_mode == "absolute":
            radius = torch.full((t.weight.shape[0], 1), eps, dtype=t.weight.dtype, device=t.weight.device)
        else:
            radius = eps * t.weight.detach().norm(dim=1, keepdim=True)
        radius[0] = 0.0
        out.append(radius)
    return out


def mean_row_norms(model) -> dict:
    """Mean L2 norm of the rows of each embedding table (padding row 0 left out)."""
    tables = embedding_tables(model)
    return {name.removesuffix(".weight"): float(t.weight.detach()[1:].norm(dim=1).mean())
            for name, t in zip(table_names(model, tables), tables)}
