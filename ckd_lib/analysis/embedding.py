"""t-SNE of student features, seeded so that the same features give the same picture."""

from __future__ import annotations

import numpy as np


def stratified_sample(labels: np.ndarray, n: int, seed: int = 0,
                      classes: list[int] | None = None) -> np.ndarray:
    """Sorted indices of about ``n`` samples, the same number from each class (of ``classes``,
    default all), chosen with ``seed``. ``n <= 0`` or ``n >= len`` keeps every selected sample."""
    labels = np.asarray(labels)
    keep = np.arange(len(labels)) if classes is None else np.flatnonzero(np.isin(labels, classes))
    if n <= 0 or n >= len(keep):
        return keep
    rng = np.random.default_rng(seed)
    present = np.unique(labels[keep])
    per_class = max(1, n // len(present))
    chosen = []
    for c in present:
        idx = keep[labels[keep] == c]
        chosen.append(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
    return np.sort(np.concatenate(chosen))


def tsne_embedding(features: np.ndarray, seed: int = 0, perplexity: float = 30.0,
                   pca_dims: int = 50, max_iter: int = 1000) -> np.ndarray:
    """2-D t-SNE of ``features`` ``[N, D]`` -> ``[N, 2]`` (float64).

    Features are first reduced to ``pca_dims`` dimensions with PCA (the usual preprocessing, and
    much faster for wide features); the embedding starts from PCA too, so with a fixed ``seed``
    the result is reproducible. The perplexity is capped below N/3 for small N.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    n = len(x)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n}")
    if pca_dims and x.shape[1] > pca_dims and n > pca_dims:
        x = PCA(n_components=pca_dims, random_state=seed).fit_transform(x)
    perplexity = float(min(perplexity, (n - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=seed, max_iter=max_iter)
    return tsne.fit_transform(x)
