"""Cold start: content features, the content -> factor projection, and the popular list.

New tracks have no plays, so ALS gives them no factors. :func:`content_matrix` turns the
catalog's embeddings (or, where missing, tags) into one dense feature matrix;
:class:`ContentProjection` learns a ridge map from those features to the ALS item factors of
well-played tracks; :func:`cold_item_factors` gives every barely-played track a projected
factor vector so that it can be scored like any other track (the model keeps them,
:class:`recsys.als.ColdStartFactors`). New listeners have no history:
:func:`popular_diverse` is their list.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from recsys.rerank import mmr_rerank

log = logging.getLogger(__name__)

PROJECTION_FORMAT = 1
#: Padded (rows x events) cells gathered at once when building per-listener systems.
DEFAULT_MAX_CELLS = 1 << 14
#: Listeners solved at once (each holds a factors x factors system).
DEFAULT_MAX_ROWS = 256

EmbeddingsInput = npt.NDArray[np.floating] | Sequence[npt.ArrayLike | None]
TagsInput = Sequence[Sequence[str] | npt.NDArray[Any] | None] | npt.NDArray[Any]


# --------------------------------------------------------------------------- content


def content_matrix(
    embeddings: EmbeddingsInput | None,
    tags: TagsInput | None,
    *,
    tag_dim: int = 32,
    min_alignment_items: int | None = None,
    random_seed: int = 0,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Dense, L2-normalised content features per track from embeddings, else tags.

    * A track with an embedding (no NaN, not all zero) gets its embedding, L2-normalised.
    * Tags become TF-IDF vectors (binary term frequency, ``idf = ln((1 + n) / (1 + df)) + 1``,
      rows L2-normalised), reduced to ``tag_dim`` dimensions with a truncated SVD
      (:func:`scipy.sparse.linalg.svds`, components scaled by their singular values,
      zero-padded when the vocabulary is smaller) and L2-normalised.
    * When some tracks have embeddings, a track with tags but no embedding gets its tag vector
      mapped into the embedding space by a least-squares map learned on the tracks that have
      both (at least ``min_alignment_items`` of them), then L2-normalised. With too few such
      tracks, tracks without an embedding have no content (a warning is logged).
    * When no track has an embedding (or ``embeddings`` is None), the features are the tag
      vectors (``d = tag_dim``).

    Parameters
    ----------
    embeddings : numpy.ndarray or sequence, optional
        float array of shape (n_items, e) with NaN rows for missing embeddings, or a
        sequence of n_items rows, each ``None`` or an array-like of length e (what
        ``pyarrow`` gives for a list column).
    tags : sequence, optional
        n_items entries, each ``None`` or a sequence of tag strings (case and surrounding
        space are ignored).
    tag_dim : int
        Dimension of the reduced tag vectors.
    min_alignment_items : int, optional
        Fewest tracks with both an embedding and tags needed to map tags into the embedding
        space; default ``2 * tag_dim``.
    random_seed : int
        Seed of the SVD's starting vector: equal inputs give equal features.

    Returns
    -------
    (content, has_content)
        float32 array (n_items, d), ``d = e`` when any track has an embedding, else
        ``tag_dim`` (tags given) or ``e`` (no tags); rows are unit length or zero.
        bool array (n_items,): True for tracks with content.

    Raises
    ------
    ValueError
        If both inputs are None, their lengths differ, embedding rows differ in length,
        ``tag_dim`` is below 1, or an embedding holds an infinite value.
    """
    if embeddings is None and tags is None:
        raise ValueError("embeddings and tags are both None; give at least one")
    if tag_dim < 1:
        raise ValueError(f"tag_dim must be at least 1, got {tag_dim}")
    alignment_floor = 2 * tag_dim if min_alignment_items is None else min_alignment_items
    if alignment_floor < 1:
        raise ValueError(f"min_alignment_items must be at least 1, got {min_alignment_items}")
    emb, has_emb = _embedding_rows(embeddings) if embeddings is not None else (None, None)
    tag_vectors, has_tags = (
        tag_features(tags, tag_dim=tag_dim, random_seed=random_seed)
        if tags is not None
        else (None, None)
    )
    if emb is not None and tag_vectors is not None and len(emb) != len(tag_vectors):
        raise ValueError(f"embeddings has {len(emb)} rows, tags {len(tag_vectors)}")

    no_embeddings = emb is None or has_emb is None or not has_emb.any()
    if tag_vectors is not None and has_tags is not None and no_embeddings:
        return tag_vectors, has_tags
    if emb is None or has_emb is None:
        raise AssertionError("unreachable: embeddings or tags are given")
    content = _unit_rows(emb)
    has_content = has_emb.copy()
    if tag_vectors is None or has_tags is None:
        return content, has_content
    needs_tags = ~has_emb & has_tags
    if not needs_tags.any():
        return content, has_content
    both = has_emb & has_tags
    if int(both.sum()) < alignment_floor:
        log.warning(
            "%d tracks have tags but no embedding; only %d tracks have both (need %d to "
            "map tags into the embedding space), so they get no content",
            int(needs_tags.sum()),
            int(both.sum()),
            alignment_floor,
        )
        return content, has_content
    source = tag_vectors[both].astype(np.float64)
    target = content[both].astype(np.float64)
    # A little ridge keeps the map defined when tag vectors are collinear (few distinct tags).
    gram = source.T @ source + 1e-3 * np.eye(source.shape[1])
    mapping = np.linalg.solve(gram, source.T @ target)
    fitted = _unit_rows(source @ mapping)
    agreement = float(np.mean(np.sum(fitted * target, axis=1)))
    mapped = _unit_rows(tag_vectors[needs_tags].astype(np.float64) @ mapping)
    content[needs_tags] = mapped
    has_content[needs_tags] = np.linalg.norm(mapped, axis=1) > 0
    log.info(
        "mapped tags of %d tracks without an embedding into the embedding space "
        "(mean cosine to the true embedding on %d tracks with both: %.3f)",
        int(needs_tags.sum()),
        int(both.sum()),
        agreement,
    )
    return content, has_content


def tag_features(
    tags: TagsInput, *, tag_dim: int = 32, random_seed: int = 0
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """TF-IDF tag vectors reduced by truncated SVD; see :func:`content_matrix`.

    Returns
    -------
    (vectors, has_tags)
        float32 array (n_items, tag_dim) of unit or zero rows, bool array (n_items,).
    """
    if tag_dim < 1:
        raise ValueError(f"tag_dim must be at least 1, got {tag_dim}")
    n_items = len(tags)
    columns: list[int] = []
    counts = np.zeros(n_items, dtype=np.int64)
    vocabulary: dict[str, int] = {}
    for row, entry in enumerate(tags):
        if entry is None:
            continue
        if isinstance(entry, str):
            raise ValueError(f"tags[{row}] is a string; give a sequence of tags per track")
        words = {str(word).strip().lower() for word in entry if word is not None}
        words.discard("")
        for word in sorted(words):
            columns.append(vocabulary.setdefault(word, len(vocabulary)))
        counts[row] = len(words)
    vectors = np.zeros((n_items, tag_dim), dtype=np.float32)
    has_tags = counts > 0
    if not vocabulary:
        return vectors, has_tags
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    col = np.asarray(columns, dtype=np.int64)
    document_frequency = np.bincount(col, minlength=len(vocabulary))
    idf = np.log((1.0 + n_items) / (1.0 + document_frequency)) + 1.0
    tfidf = sp.csr_matrix((idf[col], col, indptr), shape=(n_items, len(vocabulary)))
    row_norms = np.sqrt(np.asarray(tfidf.multiply(tfidf).sum(axis=1)).ravel())
    tfidf = sp.csr_matrix(sp.diags(1.0 / np.where(row_norms > 0, row_norms, 1.0)) @ tfidf)
    rank = min(tag_dim, min(tfidf.shape) - 1)
    if len(vocabulary) <= tag_dim:
        # Nothing to reduce: the TF-IDF vectors themselves, zero-padded.
        reduced = np.zeros((n_items, tag_dim), dtype=np.float64)
        reduced[:, : len(vocabulary)] = tfidf.toarray()
    elif rank >= 1:
        u, s, vt = svds(tfidf, k=rank, rng=np.random.default_rng(random_seed))
        order = np.argsort(-s)
        u, s, vt = u[:, order], s[order], vt[order]
        # Fix each component's sign (largest loading positive) so the output is reproducible.
        signs = np.sign(vt[np.arange(rank), np.argmax(np.abs(vt), axis=1)])
        signs[signs == 0] = 1.0
        reduced = np.zeros((n_items, tag_dim), dtype=np.float64)
        reduced[:, :rank] = u * (s * signs)
    else:
        return vectors, has_tags
    vectors = _unit_rows(reduced)
    has_tags &= np.linalg.norm(vectors, axis=1) > 0
    return vectors, has_tags


def _embedding_rows(
    embeddings: EmbeddingsInput,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """(n_items, e) float64 rows with zeros where missing, and the mask of present rows."""
    if isinstance(embeddings, np.ndarray) and embeddings.dtype != object:
        matrix = np.asarray(embeddings, dtype=np.float64)
        if matrix.ndim != 2:
            raise ValueError(f"embeddings must be 2-D (n_items, e), got shape {matrix.shape}")
    else:
        rows = list(embeddings)
        width = next((len(np.ravel(np.asarray(r))) for r in rows if r is not None), 0)
        matrix = np.full((len(rows), width), np.nan, dtype=np.float64)
        for index, row in enumerate(rows):
            if row is None:
                continue
            values = np.ravel(np.asarray(row, dtype=np.float64))
            if len(values) != width:
                raise ValueError(
                    f"embeddings[{index}] has {len(values)} values, the first embedding {width}"
                )
            matrix[index] = values
    if np.isinf(matrix).any():
        raise ValueError("embeddings must not hold infinite values")
    present = ~np.isnan(matrix).any(axis=1) & (np.abs(matrix).sum(axis=1) > 0)
    matrix = np.where(present[:, None], matrix, 0.0)
    return matrix, present


def _unit_rows(matrix: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    values = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    unit = np.divide(values, norms, out=np.zeros_like(values), where=norms > 0)
    result: npt.NDArray[np.float32] = unit.astype(np.float32)
    return result


# --------------------------------------------------------------------------- projection


@dataclass(frozen=True)
class ContentProjection:
    """Ridge regression from content features to ALS item factors.

    ``project(x) = x @ weights + bias``, fitted in closed form on centred data:
    ``weights = (Xc^T Xc + λI)^-1 Xc^T Yc`` and ``bias = mean(Y) - mean(X) @ weights``
    (the intercept is not penalised; without it, ``bias`` is zero and ``X``, ``Y`` are not
    centred).

    Attributes
    ----------
    weights : numpy.ndarray
        float32 array of shape (d, factors).
    bias : numpy.ndarray
        float32 array of shape (factors,).
    regularization : float
        λ used in the fit.
    """

    weights: npt.NDArray[np.float32]
    bias: npt.NDArray[np.float32]
    regularization: float

    @property
    def content_dim(self) -> int:
        return int(self.weights.shape[0])

    @property
    def factors(self) -> int:
        return int(self.weights.shape[1])

    @classmethod
    def fit(
        cls,
        content: npt.NDArray[np.floating],
        item_factors: npt.NDArray[np.floating],
        *,
        regularization: float = 1.0,
        fit_intercept: bool = True,
    ) -> ContentProjection:
        """Fit on paired rows (callers pass only well-played tracks with content).

        Parameters
        ----------
        content : numpy.ndarray
            float array of shape (n, d).
        item_factors : numpy.ndarray
            float array of shape (n, factors): the ALS factors of the same tracks.
        regularization : float
            λ >= 0; with unit-norm content a value around 1 suits thousands of tracks.

        Raises
        ------
        ValueError
            If shapes disagree, there are no rows, values are not finite, λ < 0, or λ = 0
            with a singular ``X^T X``.
        """
        x = np.asarray(content, dtype=np.float64)
        y = np.asarray(item_factors, dtype=np.float64)
        if x.ndim != 2 or y.ndim != 2:
            raise ValueError(f"content and item_factors must be 2-D, got {x.shape} and {y.shape}")
        if len(x) != len(y):
            raise ValueError(f"content has {len(x)} rows, item_factors {len(y)}")
        if len(x) == 0:
            raise ValueError("content has no rows to fit on")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("content and item_factors must be finite")
        if regularization < 0:
            raise ValueError(f"regularization must be >= 0, got {regularization}")
        x_mean = x.mean(axis=0) if fit_intercept else np.zeros(x.shape[1])
        y_mean = y.mean(axis=0) if fit_intercept else np.zeros(y.shape[1])
        xc, yc = x - x_mean, y - y_mean
        gram = xc.T @ xc + regularization * np.eye(x.shape[1])
        try:
            weights = np.linalg.solve(gram, xc.T @ yc)
        except np.linalg.LinAlgError:
            raise ValueError("content X^T X is singular; use regularization > 0") from None
        bias = y_mean - x_mean @ weights
        projection = cls(weights.astype(np.float32), bias.astype(np.float32), regularization)
        residual = yc - xc @ weights
        explained = 1.0 - float((residual**2).sum()) / max(float((yc**2).sum()), 1e-30)
        log.info(
            "fitted content projection %d -> %d on %d tracks (λ=%g, R²=%.3f)",
            x.shape[1],
            y.shape[1],
            len(x),
            regularization,
            explained,
        )
        return projection

    def project(self, content: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Factors of shape (n, factors), float32, for content of shape (n, d)."""
        x = np.asarray(content, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.content_dim:
            raise ValueError(f"content has shape {x.shape}, expected (n, {self.content_dim})")
        projected: npt.NDArray[np.float32] = (x @ self.weights + self.bias).astype(np.float32)
        return projected


def cold_item_factors(
    item_factors: npt.NDArray[np.floating],
    content: npt.NDArray[np.floating],
    has_content: npt.NDArray[np.bool_],
    play_counts: npt.ArrayLike,
    min_plays: int,
    *,
    projection: ContentProjection | None = None,
    regularization: float = 1.0,
    norm_quantile: float | None = 0.5,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Item factors in which barely-played tracks get factors projected from content.

    Tracks with ``play_counts < min_plays`` and content are *cold*: their row is replaced by
    the projection of their content. The projection is ``projection`` if given, else a
    :class:`ContentProjection` fitted here on the tracks with ``play_counts >= min_plays``
    and content.

    Scaling: ridge regression shrinks towards the mean factor, so projected vectors are
    shorter than trained ones and would score below warm tracks of the same taste. With
    ``norm_quantile`` set, each projected vector is rescaled to that quantile of the warm
    tracks' factor norms (0.5: the median warm track), keeping its direction; ``None``
    keeps the ridge output as is. Since a trained item's norm grows with its popularity, the
    median makes a new track score like a moderately popular track of the same style.

    Parameters
    ----------
    item_factors : numpy.ndarray
        float array of shape (n_items, factors): the trained ALS item factors.
    content : numpy.ndarray
        float array of shape (n_items, d) from :func:`content_matrix`.
    has_content : numpy.ndarray
        bool array of shape (n_items,).
    play_counts : array-like of int, shape (n_items,)
        Evidence per track, e.g. listeners with a positive interaction in the training data.
    min_plays : int
        Tracks with fewer are cold; tracks with at least this many train the projection.
    projection : ContentProjection, optional
        A projection to use instead of fitting one.
    regularization : float
        λ of the fitted projection.
    norm_quantile : float or None
        Quantile in [0, 1] of warm factor norms that projected vectors are scaled to.

    Returns
    -------
    (factors, cold_mask)
        float32 array (n_items, factors): ``item_factors`` with cold rows replaced; bool
        array (n_items,): True for the replaced (cold) rows. Tracks without content keep
        their trained factors (zero for never-played tracks) and are not cold. When fewer
        than two warm tracks have content (and no projection is given), nothing is replaced.
    """
    factors = np.array(item_factors, dtype=np.float32)
    n_items = len(factors)
    features = np.asarray(content)
    mask = np.asarray(has_content, dtype=bool)
    counts = np.asarray(play_counts)
    if factors.ndim != 2:
        raise ValueError(f"item_factors must be 2-D, got shape {factors.shape}")
    if features.ndim != 2 or len(features) != n_items:
        raise ValueError(f"content has shape {features.shape}, expected ({n_items}, d)")
    if mask.shape != (n_items,):
        raise ValueError(f"has_content has shape {mask.shape}, expected ({n_items},)")
    if counts.shape != (n_items,):
        raise ValueError(f"play_counts has shape {counts.shape}, expected ({n_items},)")
    if min_plays < 1:
        raise ValueError(f"min_plays must be at least 1, got {min_plays}")
    if norm_quantile is not None and not 0.0 <= norm_quantile <= 1.0:
        raise ValueError(f"norm_quantile must be in [0, 1] or None, got {norm_quantile}")
    warm = counts >= min_plays
    cold = ~warm & mask
    if projection is None:
        train = warm & mask
        if int(train.sum()) < 2:
            log.warning(
                "only %d well-played tracks have content; no cold-start factors",
                int(train.sum()),
            )
            return factors, np.zeros(n_items, dtype=bool)
        projection = ContentProjection.fit(
            features[train], factors[train], regularization=regularization
        )
    if projection.factors != factors.shape[1]:
        raise ValueError(
            f"projection gives {projection.factors} factors, item_factors has {factors.shape[1]}"
        )
    if not cold.any():
        return factors, cold
    projected = projection.project(features[cold])
    if norm_quantile is not None and warm.any():
        target = float(np.quantile(np.linalg.norm(factors[warm], axis=1), norm_quantile))
        norms = np.linalg.norm(projected, axis=1, keepdims=True)
        projected = np.divide(
            projected * target, norms, out=np.zeros_like(projected), where=norms > 0
        )
    factors[cold] = projected
    log.info(
        "projected content factors for %d tracks with content and fewer than %d listeners",
        int(cold.sum()),
        min_plays,
    )
    return factors, cold


# --------------------------------------------------------------------------- listeners


def row_chunks(
    entries_per_row: npt.NDArray[np.int64],
    max_cells: int = DEFAULT_MAX_CELLS,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> Iterator[npt.NDArray[np.int64]]:
    """Groups of row numbers whose padded (rows x longest row) block has at most
    ``max_cells`` cells and at most ``max_rows`` rows (a single row longer than
    ``max_cells`` forms a group of its own).

    Rows are grouped in order of their length so that padding is small; every row appears in
    exactly one group.
    """
    counts = np.asarray(entries_per_row, dtype=np.int64)
    if max_cells < 1:
        raise ValueError(f"max_cells must be at least 1, got {max_cells}")
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    order = np.argsort(counts, kind="stable")
    sorted_counts = np.maximum(counts[order], 1)
    start = 0
    while start < len(order):
        window = sorted_counts[start : start + max_rows]
        cells = np.arange(1, len(window) + 1) * window
        stop = start + max(1, int(np.searchsorted(cells, max_cells, side="right")))
        yield order[start:stop].astype(np.int64)
        start = stop


def padded_rows(
    user_items: sp.csr_matrix, rows: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """The stored entries of ``rows`` as dense (len(rows), longest) arrays.

    Returns
    -------
    (columns, values, present)
        int64 columns (0 in the padding), float64 values (0 in the padding), bool mask of
        real entries.
    """
    indptr = user_items.indptr
    starts, ends = indptr[rows], indptr[rows + 1]
    lengths = (ends - starts).astype(np.int64)
    width = int(lengths.max(initial=0))
    offsets = np.arange(width, dtype=np.int64)
    present = offsets[None, :] < lengths[:, None]
    positions = np.where(present, starts[:, None] + offsets[None, :], 0)
    if user_items.nnz == 0:
        return (
            np.zeros(present.shape, dtype=np.int64),
            np.zeros(present.shape, dtype=np.float64),
            present,
        )
    columns = np.where(present, user_items.indices[positions], 0).astype(np.int64)
    values = np.where(present, user_items.data[positions], 0.0).astype(np.float64)
    return columns, values, present


def popular_diverse(
    item_popularity: npt.ArrayLike,
    item_artist: npt.NDArray[np.int64],
    n: int,
    max_per_artist: int,
    exclude: npt.NDArray[np.bool_] | npt.NDArray[np.int64] | None = None,
    *,
    item_vectors: npt.NDArray[np.floating] | None = None,
    diversity: float = 0.3,
    pool_factor: int = 10,
) -> npt.NDArray[np.int64]:
    """A popular but varied list for listeners with no events at all.

    Definition: the ``pool_factor * n`` most popular tracks (popularity > 0, not excluded)
    are re-ranked with :func:`recsys.rerank.mmr_rerank`, relevance ``log1p(popularity)``,
    cosine similarity over ``item_vectors`` (content embeddings, or item factors) with weight
    ``diversity``, and at most ``max_per_artist`` tracks per artist. So the first track is
    the most popular one and each next one trades popularity against being unlike what is
    already in the list, which spreads the list over genres. Without ``item_vectors`` (or
    with ``diversity=0``) it is the artist-capped top ``n`` by popularity.

    Parameters
    ----------
    item_popularity : array-like of float, shape (n_items,)
        Non-negative popularity (listeners or plays) per track.
    item_artist : numpy.ndarray
        int64 array (n_items,): artist number per track.
    n : int
        List length.
    max_per_artist : int
        Most tracks per artist.
    exclude : numpy.ndarray, optional
        bool mask (n_items,) or int64 track columns that must not appear.
    item_vectors : numpy.ndarray, optional
        float array (n_items, d) for the similarity term.
    diversity : float
        λ of the MMR in [0, 1].
    pool_factor : int
        Candidates considered per list slot (>= 1).

    Returns
    -------
    numpy.ndarray
        int64 array (n,) of track columns, -1 padded when too few tracks qualify.
    """
    popularity = np.asarray(item_popularity, dtype=np.float64)
    artists = np.asarray(item_artist)
    n_items = len(popularity)
    if popularity.ndim != 1 or not np.isfinite(popularity).all() or (popularity < 0).any():
        raise ValueError("item_popularity must be a 1-D array of finite non-negative values")
    if artists.shape != (n_items,):
        raise ValueError(f"item_artist has shape {artists.shape}, expected ({n_items},)")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if pool_factor < 1:
        raise ValueError(f"pool_factor must be at least 1, got {pool_factor}")
    allowed = popularity > 0
    if exclude is not None:
        excluded = np.asarray(exclude)
        if excluded.dtype == bool:
            if excluded.shape != (n_items,):
                raise ValueError(f"exclude mask has shape {excluded.shape}, expected ({n_items},)")
            allowed &= ~excluded.astype(bool)
        else:
            allowed[excluded.astype(np.int64)] = False
    candidates = np.flatnonzero(allowed)
    pool = min(len(candidates), pool_factor * n)
    if pool == 0:
        return np.full(n, -1, dtype=np.int64)
    if pool < len(candidates):
        top = np.argpartition(-popularity[candidates], pool - 1)[:pool]
        candidates = candidates[top]
    # Most popular first, ties by column, so equal inputs give equal lists.
    candidates = candidates[np.lexsort((candidates, -popularity[candidates]))]
    use_vectors = item_vectors is not None and diversity > 0
    vectors = (
        np.asarray(item_vectors, dtype=np.float32)
        if use_vectors and item_vectors is not None
        else np.zeros((n_items, 1), dtype=np.float32)
    )
    chosen, _ = mmr_rerank(
        candidates[None, :].astype(np.int64),
        np.log1p(popularity[candidates])[None, :],
        vectors,
        artists.astype(np.int64),
        n,
        max_per_artist,
        diversity=diversity if use_vectors else 0.0,
    )
    result: npt.NDArray[np.int64] = chosen[0]
    return result
