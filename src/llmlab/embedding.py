"""Token embeddings from scratch, and tools to look at them (sprint 05).

- `Embedding`: a learnable (num_embeddings, embedding_dim) table read by integer ids, the
  same computation as `torch.nn.Embedding` (including `padding_idx`, whose row starts at zero
  and never receives a gradient), with a clear error for out-of-range ids.
- `pca(x, k)`: principal component analysis from scratch (centre + SVD).
- `project_2d(vectors, method)`: embeddings -> 2-D points by PCA, t-SNE or UMAP, for pictures.
- `cluster_quality(points, groups)`: silhouette score and nearest-neighbour purity of the
  points by group, each against a shuffled-label baseline: does the picture mean something?
- `word_map(points, words, groups, png, title)`: score a 2-D map of words and draw it (the
  shared last step of the PCA, t-SNE and UMAP scripts).
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.errors import LLMLabError


class Embedding(nn.Module):
    """A lookup table: id `i` -> row `i` of a learnable weight matrix.

    Indexing a matrix by ids is the same as multiplying one-hot vectors by it, so the gradient
    of row `i` is the sum of the output gradients at the positions where `i` occurs.
    """

    def __init__(
        self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None
    ) -> None:
        super().__init__()
        if num_embeddings <= 0 or embedding_dim <= 0:
            raise LLMLabError(
                f"Embedding needs positive sizes, got num_embeddings={num_embeddings}, "
                f"embedding_dim={embedding_dim}"
            )
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise LLMLabError(
                    f"padding_idx={padding_idx} is outside the table of {num_embeddings} rows"
                )
            padding_idx %= num_embeddings  # negative ids count from the end, as in nn.Embedding
        self.num_embeddings, self.embedding_dim, self.padding_idx = (
            num_embeddings,
            embedding_dim,
            padding_idx,
        )
        # N(0, 1) initialisation, as nn.Embedding.
        self.weight = nn.Parameter(torch.randn(num_embeddings, embedding_dim))
        if padding_idx is not None:
            with torch.no_grad():
                self.weight[padding_idx].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(...) integer ids -> (..., embedding_dim) vectors."""
        if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise LLMLabError(f"token ids must be an integer tensor, got dtype {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_embeddings):
            raise LLMLabError(
                f"token ids must be in [0, {self.num_embeddings}), got min {int(ids.min())}, "
                f"max {int(ids.max())}: is the vocabulary size of the model too small?"
            )
        out = self.weight[ids.long()]
        if self.padding_idx is not None and out.requires_grad:
            # The padding row is a constant: block its gradient (nn.Embedding does the same).
            is_pad = (ids == self.padding_idx).unsqueeze(-1)
            out = torch.where(is_pad, out.detach(), out)
        return out

    @classmethod
    def from_pretrained(cls, weight: torch.Tensor, padding_idx: int | None = None) -> Embedding:
        """An embedding initialised with a copy of `weight` (e.g. a pretrained model's table)."""
        if weight.dim() != 2:
            raise LLMLabError(f"embedding weight must be 2-D, got shape {tuple(weight.shape)}")
        emb = cls(*weight.shape, padding_idx=padding_idx)
        with torch.no_grad():
            emb.weight.copy_(weight)
        return emb

    def extra_repr(self) -> str:
        pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


def pca(x: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA from scratch: centre, SVD, keep the top-k directions.

    Returns (points (N, k), explained-variance ratio of each kept direction). Each component's
    sign is fixed so its largest coordinate is positive (SVD signs are arbitrary).
    """
    if x.dim() != 2 or not 1 <= k <= min(x.shape):
        raise LLMLabError(
            f"pca needs an (N, D) matrix and 1 <= k <= min(N, D), got {tuple(x.shape)}, k={k}"
        )
    centred = x - x.mean(dim=0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    components = vh[:k]
    signs = torch.sign(components.gather(1, components.abs().argmax(dim=1, keepdim=True)))
    components = components * signs
    variance = s**2
    return centred @ components.T, (variance[:k] / variance.sum())


def project_2d(
    vectors: torch.Tensor, method: str = "pca", seed: int = 0, neighbours: int = 10
) -> torch.Tensor:
    """(N, D) vectors -> (N, 2) points for a picture, by "pca", "tsne" or "umap".

    Vectors are scaled to unit length first: for embeddings the direction (cosine similarity)
    carries the meaning, the length mostly reflects token frequency. `neighbours` sets
    t-SNE's perplexity and UMAP's n_neighbors (both must stay below N).
    """
    unit = torch.nn.functional.normalize(vectors.float(), dim=1)
    n = unit.shape[0]
    if n <= neighbours:
        raise LLMLabError(f"need more than {neighbours} vectors to project, got {n}")
    if method == "pca":
        return pca(unit, 2)[0]
    data = unit.numpy()
    if method == "tsne":
        from sklearn.manifold import TSNE

        points = TSNE(2, perplexity=neighbours, init="pca", random_state=seed).fit_transform(data)
    elif method == "umap":
        import umap

        reducer = umap.UMAP(n_neighbors=neighbours, metric="cosine", random_state=seed, n_jobs=1)
        points = reducer.fit_transform(data)
    else:
        raise LLMLabError(f"unknown projection {method!r}: choose pca, tsne or umap")
    return torch.as_tensor(points, dtype=torch.float32)


def cluster_quality(
    points: torch.Tensor, groups: list[str], seed: int = 0, shuffles: int = 20, k: int = 3
) -> dict[str, float]:
    """How well 2-D points keep groups together, against a shuffled-label baseline.

    - silhouette: (b - a) / max(a, b) per point (a = mean distance to its own group, b = to
      the nearest other group), averaged; 1 = tight separate clusters, ~0 = no structure.
    - knn_purity: share of each point's k nearest neighbours that are in its group.
    Both are also computed with the group labels shuffled (`*_shuffled`, mean of `shuffles`).
    """
    import numpy as np
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import NearestNeighbors

    pts, labels = np.asarray(points, dtype=np.float64), np.asarray(groups)
    if len(pts) != len(labels) or len(set(groups)) < 2:
        raise LLMLabError("cluster_quality needs one group label per point and >= 2 groups")
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(pts).kneighbors(pts)
    neighbours = idx[:, 1:]  # the first neighbour is the point itself

    def purity(lab: np.ndarray) -> float:
        return float((lab[neighbours] == lab[:, None]).mean())

    rng = np.random.default_rng(seed)
    shuffled = [rng.permutation(labels) for _ in range(shuffles)]
    return {
        "silhouette": float(silhouette_score(pts, labels)),
        "silhouette_shuffled": float(np.mean([silhouette_score(pts, s) for s in shuffled])),
        "knn_purity": purity(labels),
        "knn_purity_shuffled": float(np.mean([purity(s) for s in shuffled])),
    }


def word_map(
    points: torch.Tensor, words: list[str], groups: list[str], png, title: str, seed: int = 0
) -> dict[str, float | str]:
    """Print `cluster_quality` of a 2-D word map, save it as a labelled scatter plot."""
    from llmlab.plotting import plot_scatter

    scores = cluster_quality(points, groups, seed=seed)
    print(
        f"silhouette {scores['silhouette']:.2f} (shuffled groups {scores['silhouette_shuffled']:.2f}); "
        f"3-NN purity {scores['knn_purity']:.2f} (shuffled {scores['knn_purity_shuffled']:.2f})"
    )
    path = plot_scatter(points.numpy(), png, labels=words, groups=groups, title=title)
    print(f"wrote {path}")
    return {**scores, "png": str(path)}
