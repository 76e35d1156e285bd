"""Item-to-item candidate generators behind :class:`recsys.recommender.Recommender`.

Each model learns a track x track weight matrix ``W`` from the positive part of the
confidence matrix (thumbs-down are ignored) and scores a listener as their training row
times ``W``:

- :class:`ItemKNN`: item-based nearest neighbours on BM25- or cosine-weighted listeners,
  computed by implicit's ``ItemItemRecommender``; ``W`` is sparse (``K`` per track).
- :class:`RP3beta`: three-step random walks listener -> track -> listener -> track with a
  popularity penalty (Paudel et al. 2016; Dacrema et al. 2019); ``W`` is sparse.
- :class:`EASE`: the closed-form shallow autoencoder (Steck 2019); ``W`` is dense, so the
  catalog must fit a memory budget (:func:`ease_fits`).

A track's similar tracks are the largest entries of its row of ``W``, the track itself
and zero weights left out, reported as cosines (ItemKNN) or as shares of the row's
absolute weight (RP3beta, EASE) so that they stay within [-1, 1].
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys.matrix import InteractionMatrix
from recsys.recommender import BlockRecommender, top_n

log = logging.getLogger(__name__)

METADATA_FILE = "model.json"
USER_ITEMS_FILE = "user_items.npz"
WEIGHTS_FILE = "weights.npz"
ARRAYS_FILE = "arrays.npz"

#: Cells (rows x tracks) of one block of an intermediate product: bounds the memory of the
#: blocked loops of RP3beta's walk and EASE's Gram matrix.
BLOCK_CELLS = 4_000_000
#: Memory :meth:`EASE.fit` may use unless told otherwise, in MiB.
DEFAULT_EASE_MEMORY_MB = 4096.0
#: LAPACK's workspace and BLAS's thread buffers during EASE's inversion (measured: about
#: 30 MiB with two threads).
EASE_OVERHEAD_BYTES = 64 * 2**20

Weighting = Literal["bm25", "cosine"]


def positive_part(user_items: sp.csr_matrix) -> sp.csr_matrix:
    """The positive confidences of ``user_items``; thumbs-down (negative) entries dropped.

    Returns
    -------
    scipy.sparse.csr_matrix
        float32 (n_users, n_tracks) with sorted indices and no stored zeros.
    """
    positive = sp.csr_matrix(user_items.multiply(user_items > 0), dtype=np.float32)
    positive.eliminate_zeros()
    positive.sort_indices()
    return positive


def binarised(user_items: sp.csr_matrix) -> sp.csr_matrix:
    """float32 CSR (n_users, n_tracks): 1.0 where ``user_items`` is positive."""
    binary = positive_part(user_items)
    binary.data[:] = 1.0
    return binary


def ease_peak_bytes(n_tracks: int) -> int:
    """The most memory :meth:`EASE.fit` holds for a catalog of ``n_tracks``, in bytes.

    The float64 Gram matrix G (8 bytes per track pair) is held throughout: it is inverted
    in place (it becomes P, then is rescaled to B), and the float32 copy of B adds 4 bytes
    per pair. On top: one block of the blocked Gram product (a dense float64 block and its
    sparse product, 20 bytes per cell), which the allocator may keep after it is freed,
    and :data:`EASE_OVERHEAD_BYTES`. The interaction matrix is not counted.
    """
    pairs = n_tracks * n_tracks
    block = min(pairs, max(BLOCK_CELLS, n_tracks))
    return 12 * pairs + 20 * block + EASE_OVERHEAD_BYTES


def ease_fits(n_tracks: int, memory_budget_mb: float) -> bool:
    """Whether :meth:`EASE.fit` on ``n_tracks`` stays within ``memory_budget_mb`` MiB
    (:func:`ease_peak_bytes`)."""
    return ease_peak_bytes(n_tracks) <= memory_budget_mb * 2**20


#: Listeners per sparse product in :meth:`ItemToItemModel.score_into`: its intermediate is
#: at most this many rows of scores (:func:`recsys.playlist.block_memory_bytes`).
PRODUCT_ROWS = 256


class ItemToItemModel(BlockRecommender):
    """Scores ``user_items[user_rows] @ weights``; the base of the models of this module.

    Attributes
    ----------
    user_items : scipy.sparse.csr_matrix
        float32 (n_users, n_tracks): the training rows the model scores from (the
        positive part of the fitted confidences, or its binarised form).
    weights : scipy.sparse.csr_matrix or numpy.ndarray
        float32 (n_tracks, n_tracks): how much a listener's entry for track i (row) adds
        to the score of track j (column).
    user_ids, track_ids : numpy.ndarray
        The rows of ``user_items`` and the tracks of ``weights``.
    """

    name: ClassVar[str]
    weights: sp.csr_matrix | npt.NDArray[np.float32]

    def __init__(
        self,
        user_items: sp.csr_matrix,
        weights: sp.csr_matrix | npt.NDArray[np.float32],
        user_ids: npt.NDArray[np.str_],
        track_ids: npt.NDArray[np.str_],
    ) -> None:
        self.user_ids = np.asarray(user_ids, dtype=str)
        self.track_ids = np.asarray(track_ids, dtype=str)
        n_users, n_tracks = len(self.user_ids), len(self.track_ids)
        if user_items.shape != (n_users, n_tracks):
            raise ValueError(
                f"user_items has shape {user_items.shape}, expected ({n_users}, {n_tracks})"
            )
        if weights.shape != (n_tracks, n_tracks):
            raise ValueError(
                f"weights has shape {weights.shape}, expected ({n_tracks}, {n_tracks})"
            )
        self.user_items = sp.csr_matrix(user_items, dtype=np.float32)
        if sp.issparse(weights):
            self.weights = sp.csr_matrix(weights, dtype=np.float32)
        else:
            self.weights = np.ascontiguousarray(weights, dtype=np.float32)

    def score_into(self, user_rows: npt.NDArray[np.int64], out: npt.NDArray[np.float32]) -> None:
        """The rows' training entries times the weights, :data:`PRODUCT_ROWS` rows at a
        time, so that the product's intermediate (sparse, or dense for EASE) stays small
        whatever the block."""
        rows = np.asarray(user_rows, dtype=np.int64)
        for start in range(0, len(rows), PRODUCT_ROWS):
            part = self.user_items[rows[start : start + PRODUCT_ROWS]] @ self.weights
            target = out[start : start + PRODUCT_ROWS]
            if sp.issparse(part):
                part.toarray(out=target)
            else:
                target[...] = part

    def item_vectors(self) -> npt.NDArray[np.float32]:
        raise NotImplementedError(
            f"{type(self).__name__} compares tracks by its weight matrix (see similar_items), "
            "not by item vectors"
        )

    def similarity_rows(self, track_columns: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """float32 (len(track_columns), n_tracks): the weight rows of ``track_columns`` as
        :meth:`similar_items` reports them; the subclasses rescale them."""
        if isinstance(self.weights, np.ndarray):
            return self.weights[track_columns]  # a copy: fancy indexing
        return np.asarray(self.weights[track_columns].toarray(), dtype=np.float32)

    def similar_items(
        self, track_columns: npt.NDArray[np.int64], n: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``n`` tracks with the largest :meth:`similarity_rows` entries of each of
        ``track_columns``, without the track itself and without zero weights; -1 padded.

        Returns
        -------
        (columns, similarity)
            int64 and float32 arrays of shape (len(track_columns), n).
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        columns = np.asarray(track_columns, dtype=np.int64)
        similarity = self.similarity_rows(columns)
        similarity[similarity == 0] = -np.inf
        similarity[np.arange(len(columns)), columns] = -np.inf
        return top_n(similarity, n)

    def save(self, directory: Path) -> Path:
        """Write the model into ``directory`` (no pickle); :meth:`load` reads it back."""
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path) -> Self:
        """The model :meth:`save` wrote into ``directory``."""
        raise NotImplementedError

    def _save(self, directory: Path, params: dict[str, Any], **arrays: npt.NDArray[Any]) -> Path:
        """Write ``model.json``, the training rows, the weights and the id maps (no pickle)."""
        directory.mkdir(parents=True, exist_ok=True)
        sp.save_npz(directory / USER_ITEMS_FILE, self.user_items, compressed=False)
        if sp.issparse(self.weights):
            sp.save_npz(directory / WEIGHTS_FILE, self.weights, compressed=False)
        else:
            arrays = {**arrays, "weights": self.weights}
        np.savez(
            directory / ARRAYS_FILE,
            allow_pickle=False,
            user_ids=self.user_ids,
            track_ids=self.track_ids,
            **arrays,
        )
        metadata = {"model": self.name, **params}
        (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))
        return directory

    @classmethod
    def _load(
        cls, directory: Path
    ) -> tuple[dict[str, Any], sp.csr_matrix, dict[str, npt.NDArray[Any]]]:
        """The parameters, training rows and arrays (weights included) :meth:`_save` wrote.

        Raises
        ------
        ValueError
            If ``directory`` does not hold a model of this class.
        """
        metadata_path = directory / METADATA_FILE
        if not metadata_path.is_file():
            raise ValueError(f"{directory} does not hold a model ({METADATA_FILE})")
        params = json.loads(metadata_path.read_text())
        found = params.pop("model", None)
        if found != cls.name:
            raise ValueError(f"{directory} holds a {found!r} model, not a {cls.name!r} model")
        user_items = sp.csr_matrix(sp.load_npz(directory / USER_ITEMS_FILE))
        with np.load(directory / ARRAYS_FILE, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        if (directory / WEIGHTS_FILE).is_file():
            arrays["weights"] = sp.csr_matrix(sp.load_npz(directory / WEIGHTS_FILE))
        return params, user_items, arrays


class ItemKNN(ItemToItemModel):
    """Item-based nearest neighbours from implicit's ``ItemItemRecommender``: each track
    keeps its ``K`` most similar tracks (itself included when it is among them, as in
    implicit) by the dot product of BM25- or cosine-weighted listener vectors.

    Attributes
    ----------
    weights : scipy.sparse.csr_matrix
        float32 (n_tracks, n_tracks): implicit's similarity matrix.
    self_similarity : numpy.ndarray
        float32 (n_tracks,): each track's weighted listener vector dotted with itself (0
        for unplayed tracks); :meth:`similar_items` divides by it to report cosines.
    weighting, K, K1, B
        The parameters of the fit (``K1`` and ``B`` are BM25's).
    """

    name = "item_knn"

    def __init__(
        self,
        user_items: sp.csr_matrix,
        similarity: sp.csr_matrix,
        self_similarity: npt.NDArray[np.floating],
        user_ids: npt.NDArray[np.str_],
        track_ids: npt.NDArray[np.str_],
        *,
        weighting: Weighting,
        K: int,
        K1: float,
        B: float,
    ) -> None:
        super().__init__(user_items, similarity, user_ids, track_ids)
        self.self_similarity = np.asarray(self_similarity, dtype=np.float32)
        if self.self_similarity.shape != (len(self.track_ids),):
            raise ValueError(
                f"self_similarity has shape {self.self_similarity.shape}, "
                f"expected ({len(self.track_ids)},)"
            )
        self.weighting, self.K, self.K1, self.B = weighting, K, K1, B

    @classmethod
    def fit(
        cls,
        matrix: InteractionMatrix,
        *,
        weighting: Weighting = "bm25",
        K: int = 100,
        K1: float = 1.2,
        B: float = 0.75,
    ) -> Self:
        """Weight the listeners of each track (implicit's ``bm25_weight`` or ``normalize``,
        as its ``BM25Recommender`` and ``CosineRecommender`` do) and keep each track's
        ``K`` nearest tracks.

        Raises
        ------
        ValueError
            If ``weighting`` is not "bm25" or "cosine", or ``K`` is below 1.
        """
        from implicit.nearest_neighbours import ItemItemRecommender, bm25_weight, normalize

        if weighting not in ("bm25", "cosine"):
            raise ValueError(f"weighting must be 'bm25' or 'cosine', got {weighting!r}")
        if K < 1:
            raise ValueError(f"K must be at least 1, got {K}")
        started = time.perf_counter()
        positive = positive_part(matrix.user_items)
        track_listeners = positive.T
        weighted = (
            bm25_weight(track_listeners, K1, B)
            if weighting == "bm25"
            else normalize(track_listeners)
        ).tocsr()
        # What BM25Recommender.fit and CosineRecommender.fit do, but handing implicit CSR:
        # they pass COO, which implicit converts with a ParameterWarning.
        knn = ItemItemRecommender(K=K)
        knn.fit(weighted.T.tocsr(), show_progress=False)
        self_similarity = np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel()
        log.info(
            "fitted ItemKNN (%s, K=%d) on %d listeners x %d tracks in %.2f s",
            weighting,
            K,
            positive.shape[0],
            positive.shape[1],
            time.perf_counter() - started,
        )
        return cls(
            positive,
            knn.similarity,
            self_similarity,
            matrix.user_ids,
            matrix.track_ids,
            weighting=weighting,
            K=K,
            K1=K1,
            B=B,
        )

    def similarity_rows(self, track_columns: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """The cosines of the weighted listener vectors: similarity_ij / sqrt(s_i s_j)."""
        norms = np.sqrt(np.maximum(self.self_similarity, np.finfo(np.float32).tiny))
        rows = super().similarity_rows(track_columns)
        return (rows / norms[track_columns, None] / norms[None, :]).astype(np.float32)

    def save(self, directory: Path) -> Path:
        params = {"weighting": self.weighting, "K": self.K, "K1": self.K1, "B": self.B}
        return self._save(directory, params, self_similarity=self.self_similarity)

    @classmethod
    def load(cls, directory: Path) -> Self:
        params, user_items, arrays = cls._load(directory)
        return cls(
            user_items,
            arrays["weights"],
            arrays["self_similarity"],
            arrays["user_ids"],
            arrays["track_ids"],
            **params,
        )


class RP3beta(ItemToItemModel):
    """Random walks listener -> track -> listener -> track (Paudel et al. 2016, as in
    Dacrema et al. 2019's ``RP3betaRecommender``) on binarised positive interactions X:
    W holds the last two steps, with the popularity of the last track penalised,

    W_ij = sum_u P_iu^alpha P_uj^alpha / popularity_j^beta, with P_ui = X_ui / sum_j X_uj
    and P_iu = X_ui / sum_v X_vi, the diagonal removed and each row's ``K`` largest
    entries kept (then, with ``normalize_similarity``, rows scaled to sum to 1).

    Attributes
    ----------
    weights : scipy.sparse.csr_matrix
        float32 (n_tracks, n_tracks): W.
    user_items : scipy.sparse.csr_matrix
        float32 (n_users, n_tracks): X, binary.
    alpha, beta, K, normalize_similarity
        The parameters of the fit.
    """

    name = "rp3beta"

    def __init__(
        self,
        user_items: sp.csr_matrix,
        weights: sp.csr_matrix,
        user_ids: npt.NDArray[np.str_],
        track_ids: npt.NDArray[np.str_],
        *,
        alpha: float,
        beta: float,
        K: int,
        normalize_similarity: bool,
    ) -> None:
        super().__init__(user_items, weights, user_ids, track_ids)
        self.alpha, self.beta, self.K = alpha, beta, K
        self.normalize_similarity = normalize_similarity

    @classmethod
    def fit(
        cls,
        matrix: InteractionMatrix,
        *,
        alpha: float = 1.0,
        beta: float = 0.5,
        K: int = 100,
        normalize_similarity: bool = False,
    ) -> Self:
        """Build W block of tracks by block of tracks, sparse throughout.

        As in Dacrema et al.'s implementation, ``alpha`` applies to the row-normalised
        transition probabilities (on binary input it would do nothing before).

        Raises
        ------
        ValueError
            If ``alpha`` is not positive, ``beta`` is negative or ``K`` is below 1.
        """
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if K < 1:
            raise ValueError(f"K must be at least 1, got {K}")
        started = time.perf_counter()
        binary = binarised(matrix.user_items)
        n_tracks = binary.shape[1]
        listener_to_track = _scale_rows(binary.astype(np.float64), _inverse(binary.sum(axis=1)))
        track_listeners = binary.T.tocsr().astype(np.float64)
        popularity = np.asarray(track_listeners.sum(axis=1)).ravel()
        track_to_listener = _scale_rows(track_listeners, _inverse(popularity))
        if alpha != 1.0:
            listener_to_track = listener_to_track.power(alpha)
            track_to_listener = track_to_listener.power(alpha)
        penalty = np.zeros(n_tracks)
        played = popularity > 0
        penalty[played] = popularity[played] ** -beta
        block_rows = max(1, BLOCK_CELLS // max(n_tracks, 1))
        blocks = []
        for start in range(0, n_tracks, block_rows):
            walks = sp.csr_matrix(track_to_listener[start : start + block_rows] @ listener_to_track)
            walks.data *= penalty[walks.indices]
            rows = np.repeat(np.arange(walks.shape[0]), np.diff(walks.indptr))
            walks.data[walks.indices == rows + start] = 0.0
            walks.eliminate_zeros()
            blocks.append(keep_top_k(walks, K).astype(np.float32))
        weights = sp.csr_matrix(sp.vstack(blocks, format="csr"), shape=(n_tracks, n_tracks))
        if normalize_similarity:
            weights = _scale_rows(weights, _inverse(weights.sum(axis=1)))
        log.info(
            "fitted RP3beta (alpha=%g, beta=%g, K=%d) on %d listeners x %d tracks in %.2f s",
            alpha,
            beta,
            K,
            binary.shape[0],
            n_tracks,
            time.perf_counter() - started,
        )
        return cls(
            binary,
            weights,
            matrix.user_ids,
            matrix.track_ids,
            alpha=alpha,
            beta=beta,
            K=K,
            normalize_similarity=normalize_similarity,
        )

    def similarity_rows(self, track_columns: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Each row's share of its walks: W_ij / sum_j W_ij, in [0, 1]."""
        return _row_shares(super().similarity_rows(track_columns))

    def save(self, directory: Path) -> Path:
        params = {
            "alpha": self.alpha,
            "beta": self.beta,
            "K": self.K,
            "normalize_similarity": self.normalize_similarity,
        }
        return self._save(directory, params)

    @classmethod
    def load(cls, directory: Path) -> Self:
        params, user_items, arrays = cls._load(directory)
        return cls(user_items, arrays["weights"], arrays["user_ids"], arrays["track_ids"], **params)


class EASE(ItemToItemModel):
    """Embarrassingly shallow autoencoder (Steck 2019): with G = X^T X + lambda I and
    P = G^-1, B = -P / diag(P) (column j divided by P_jj) with a zero diagonal, the
    closed-form least squares X ~ X B under diag(B) = 0.

    Attributes
    ----------
    weights : numpy.ndarray
        float32 (n_tracks, n_tracks): B, dense.
    user_items : scipy.sparse.csr_matrix
        float32 (n_users, n_tracks): X, the positive confidences or (``binary``) 1.0.
    regularization, binary
        The parameters of the fit (``regularization`` is lambda).
    """

    name = "ease"

    def __init__(
        self,
        user_items: sp.csr_matrix,
        weights: npt.NDArray[np.float32],
        user_ids: npt.NDArray[np.str_],
        track_ids: npt.NDArray[np.str_],
        *,
        regularization: float,
        binary: bool,
    ) -> None:
        super().__init__(user_items, weights, user_ids, track_ids)
        self.regularization, self.binary = regularization, binary

    @classmethod
    def fit(
        cls,
        matrix: InteractionMatrix,
        *,
        regularization: float = 500.0,
        binary: bool = True,
        memory_budget_mb: float = DEFAULT_EASE_MEMORY_MB,
    ) -> Self:
        """Solve for B in float64 (G is inverted in place) and keep it as float32.

        Raises
        ------
        ValueError
            If the dense inverse does not fit ``memory_budget_mb`` (:func:`ease_fits`: the
            caller should skip EASE for this catalog) or ``regularization`` is not positive.
        """
        n_tracks = matrix.user_items.shape[1]
        if not ease_fits(n_tracks, memory_budget_mb):
            raise ValueError(
                f"EASE on {n_tracks} tracks needs about {ease_peak_bytes(n_tracks) / 2**20:.0f} "
                f"MiB (a dense {n_tracks} x {n_tracks} inverse), more than memory_budget_mb="
                f"{memory_budget_mb:g}; skip EASE for this catalog or raise the budget"
            )
        if regularization <= 0:
            raise ValueError(f"regularization must be > 0, got {regularization}")
        started = time.perf_counter()
        listened = binarised(matrix.user_items) if binary else positive_part(matrix.user_items)
        gram = _dense_gram(listened)
        gram[np.diag_indices(n_tracks)] += regularization
        precision = _spd_inverse_in_place(gram)
        del gram
        precision /= -np.diag(precision)
        np.fill_diagonal(precision, 0.0)
        weights = np.ascontiguousarray(precision, dtype=np.float32)
        del precision
        log.info(
            "fitted EASE (lambda=%g) on %d listeners x %d tracks in %.2f s",
            regularization,
            listened.shape[0],
            n_tracks,
            time.perf_counter() - started,
        )
        return cls(
            listened,
            weights,
            matrix.user_ids,
            matrix.track_ids,
            regularization=regularization,
            binary=binary,
        )

    def similarity_rows(self, track_columns: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Each row's share of its absolute weight: B_ij / sum_j |B_ij|, in [-1, 1]."""
        return _row_shares(super().similarity_rows(track_columns))

    def save(self, directory: Path) -> Path:
        params = {"regularization": self.regularization, "binary": self.binary}
        return self._save(directory, params)

    @classmethod
    def load(cls, directory: Path) -> Self:
        params, user_items, arrays = cls._load(directory)
        return cls(user_items, arrays["weights"], arrays["user_ids"], arrays["track_ids"], **params)


def keep_top_k(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """The ``k`` largest stored entries of each row of ``matrix`` (ties: lower column
    first), as a CSR matrix of the same shape and dtype with sorted indices."""
    counts = np.diff(matrix.indptr)
    rows = np.repeat(np.arange(matrix.shape[0]), counts)
    order = np.lexsort((matrix.indices, -matrix.data, rows))
    # Sorted by row first, the j-th entry of ``order`` is still in row ``rows[j]``.
    rank = np.arange(matrix.nnz) - matrix.indptr[rows]
    kept = order[rank < k]
    indptr = np.concatenate(([0], np.cumsum(np.minimum(counts, k))))
    top = sp.csr_matrix(
        (matrix.data[kept], matrix.indices[kept], indptr), shape=matrix.shape, dtype=matrix.dtype
    )
    top.sort_indices()
    return top


def _inverse(sums: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """1 / sums elementwise (float64, flattened), 0 where a sum is 0."""
    totals = np.asarray(sums, dtype=np.float64).ravel()
    inverse = np.zeros_like(totals)
    np.divide(1.0, totals, out=inverse, where=totals != 0)
    return inverse


def _scale_rows(matrix: sp.csr_matrix, factors: npt.NDArray[np.float64]) -> sp.csr_matrix:
    """``matrix`` (CSR) with row i multiplied by ``factors[i]``."""
    scaled = sp.csr_matrix(matrix, copy=True)
    scaled.data = (scaled.data * np.repeat(factors, np.diff(scaled.indptr))).astype(matrix.dtype)
    return scaled


def _row_shares(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``rows`` (B, n_tracks) divided by each row's sum of absolute values (zero rows stay)."""
    totals = np.abs(rows).sum(axis=1, keepdims=True)
    shares: npt.NDArray[np.float32] = rows / np.maximum(totals, np.finfo(np.float32).tiny)
    return shares


def _spd_inverse_in_place(matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The inverse of the symmetric positive definite, Fortran-ordered ``matrix``, computed
    in its memory (Cholesky ``potrf`` then ``potri``, the upper triangle mirrored into the
    lower one block by block, so nothing of the matrix's size is allocated).

    LAPACK runs on one thread: the multi-threaded ``dpotrf`` of the OpenBLAS that SciPy
    1.17.1 bundles (0.3.31) writes out of bounds on large matrices (a segfault seen here
    from 17,000 tracks, also on a near-identity matrix; one thread factors that one in
    34 s). ``scipy.linalg.inv(..., overwrite_a=True)`` crashed the same way
    (scipy/scipy#26045 is another fault of that mode).

    Raises
    ------
    numpy.linalg.LinAlgError
        If ``matrix`` is not positive definite.
    """
    if not matrix.flags.f_contiguous:
        raise ValueError("the matrix must be Fortran-ordered to be inverted in place")
    with threadpool_limits(1, "blas"):
        factor, info = scipy.linalg.lapack.dpotrf(
            matrix, lower=False, clean=False, overwrite_a=True
        )
        if info != 0:
            raise np.linalg.LinAlgError(f"the Gram matrix is not positive definite (potrf {info})")
        inverse, info = scipy.linalg.lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"the Gram matrix is singular (potri {info})")
    n = inverse.shape[0]
    step = 1024
    for start in range(0, n, step):
        stop = min(start + step, n)
        diagonal = inverse[start:stop, start:stop]
        diagonal[...] = np.triu(diagonal) + np.triu(diagonal, 1).T
        inverse[stop:, start:stop] = inverse[start:stop, stop:].T
    result: npt.NDArray[np.float64] = inverse
    return result


def _dense_gram(listened: sp.csr_matrix) -> npt.NDArray[np.float64]:
    """float64 (n_tracks, n_tracks) X^T X in Fortran order, one block of columns at a time,
    so that no sparse product bigger than a block is ever held."""
    n_tracks = listened.shape[1]
    by_track = sp.csc_matrix(listened, dtype=np.float64)
    gram = np.empty((n_tracks, n_tracks), order="F")
    step = max(1, BLOCK_CELLS // max(n_tracks, 1))
    for start in range(0, n_tracks, step):
        block = by_track.T @ by_track[:, start : start + step]
        gram[:, start : start + step] = block.toarray()
    return gram
