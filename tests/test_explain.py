"""Reasons for playlist tracks: known-answer fixtures and implicit's own explain."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.explain import (
    MAX_REASON_CHARS,
    Reason,
    explain_anchors,
    explain_block,
    reason_text,
)

TITLES = [f"Song {i} — Artist {i // 2}" for i in range(8)]


def _styles() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tracks 0-2 one style, 3-5 another; 6 and 7 are new (cold) tracks of each style."""
    factors = np.array(
        [
            [1.0, 0.0, 0.0],
            [0.9, 0.1, 0.0],
            [0.95, 0.0, 0.1],
            [0.0, 1.0, 0.0],
            [0.1, 0.9, 0.0],
            [0.0, 0.95, 0.1],
            [0.8, 0.0, 0.1],  # projected factors of a cold track
            [0.0, 0.1, 0.8],
        ]
    )
    content = np.array(
        [
            [1.0, 0.0],
            [1.0, 0.1],
            [0.9, 0.0],
            [0.0, 1.0],
            [0.1, 1.0],
            [0.0, 0.9],
            [1.0, 0.05],  # new track that sounds like tracks 0-2
            [-1.0, -1.0],  # new track that sounds like nothing the listener played
        ]
    )
    cold = np.array([False] * 6 + [True, True])
    return factors, content, cold


def test_reasons_name_the_nearest_played_track_or_fall_back() -> None:
    factors, content, cold = _styles()
    # Listener 0 played 0 and 3 and thumbed 4 down; listener 1 played nothing; listener 2
    # played only track 1.
    user_items = sp.csr_matrix(
        np.array(
            [
                [2.0, 0, 0, 1.0, -2.0, 0, 0, 0],
                [0, 0, 0, 0, 0, 0, 0, 0],
                [0, 1.0, 0, 0, 0, 0, 0, 0],
            ]
        )
    )
    chosen = np.array([[1, 5, 6, 7, -1], [1, 6, -1, -1, -1], [2, 1, 5, -1, -1]])
    reasons = explain_block(user_items, factors, chosen, TITLES, cold, content=content)
    assert reasons == [
        [
            "Because you played Song 0 — Artist 0",
            "Because you played Song 3 — Artist 1",
            "New track similar to Song 0 — Artist 0",
            "New release picked for your taste",
            None,
        ],
        [
            "Popular with listeners like you",
            "New release picked for your taste",
            None,
            None,
            None,
        ],
        [
            "Because you played Song 1 — Artist 0",
            "Popular with listeners like you",  # a track is never its own reason
            "Popular with listeners like you",  # track 5 is another style than track 1
            None,
            None,
        ],
    ]

    explanations = explain_anchors(user_items, factors, chosen, cold, content=content)
    assert explanations.anchors[0].tolist() == [0, 3, 0, -1, -1]
    assert explanations.kinds[0].tolist() == [
        Reason.BECAUSE_YOU_PLAYED,
        Reason.BECAUSE_YOU_PLAYED,
        Reason.NEW_SIMILAR_TO,
        Reason.NEW_FOR_YOUR_TASTE,
        Reason.NONE,
    ]
    unit = factors / np.linalg.norm(factors, axis=1, keepdims=True)
    np.testing.assert_allclose(explanations.strength[0, 0], unit[1] @ unit[0], rtol=1e-6)
    assert np.isnan(explanations.strength[1]).all()  # nothing played


def test_without_content_cold_tracks_use_projected_factors() -> None:
    factors, _, cold = _styles()
    user_items = sp.csr_matrix(np.array([[1.0, 0, 0, 1.0, 0, 0, 0, 0]]))
    explanations = explain_anchors(user_items, factors, np.array([[6, 7]]), cold)
    assert explanations.kinds[0].tolist() == [Reason.NEW_SIMILAR_TO, Reason.NEW_FOR_YOUR_TASTE]
    assert explanations.anchors[0].tolist() == [0, -1]


def test_a_stricter_threshold_turns_named_reasons_into_the_fallback() -> None:
    factors, _, cold = _styles()
    user_items = sp.csr_matrix(np.array([[1.0, 0, 0, 0, 0, 0, 0, 0]]))
    chosen = np.array([[1, 2]])  # cosines to track 0: 0.9939 and 0.9945
    loose = explain_anchors(user_items, factors, chosen, cold, min_similarity=0.99)
    strict = explain_anchors(user_items, factors, chosen, cold, min_similarity=0.9942)
    assert loose.kinds[0].tolist() == [Reason.BECAUSE_YOU_PLAYED] * 2
    assert strict.kinds[0].tolist() == [Reason.LISTENERS_LIKE_YOU, Reason.BECAUSE_YOU_PLAYED]


def test_reason_text_keeps_given_titles_and_stays_short() -> None:
    long_title = "A" * 200 + " — Somebody"
    text = reason_text(Reason.BECAUSE_YOU_PLAYED, long_title)
    assert text is not None and len(text) == MAX_REASON_CHARS
    assert text.startswith("Because you played AAA") and text.endswith("…")
    assert reason_text(Reason.NEW_SIMILAR_TO, "Ünïcode — Ärtist") == (
        "New track similar to Ünïcode — Ärtist"
    )
    assert reason_text(Reason.NONE) is None
    with pytest.raises(ValueError, match="anchor_title"):
        reason_text(Reason.BECAUSE_YOU_PLAYED)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_similarity": 2.0}, "min_similarity"),
        ({"chosen": np.array([[9]])}, "chosen"),
        ({"cold_mask": np.zeros(3, dtype=bool)}, "cold_mask"),
    ],
)
def test_explain_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    factors, _, cold = _styles()
    arguments = {
        "user_items": sp.csr_matrix(np.ones((1, 8))),
        "item_factors": factors,
        "chosen": np.array([[1]]),
        "cold_mask": cold,
    } | kwargs
    with pytest.raises(ValueError, match=message):
        explain_anchors(**arguments)


@pytest.mark.parametrize("dense", [False, True])
def test_a_co_listening_partner_names_the_played_track_behind_a_generic_pick(
    dense: bool,
) -> None:
    """Listener 0 played tracks 0 (twice) and 3, thumbed 4 down. Track 5's factors are of
    the second style but nothing played is close enough by cosine (strict threshold), so
    ALS alone says "Popular with listeners like you"; the partner's weights link 3 -> 5
    (and, more weakly, 0 -> 5), and a thumbed-down track (4 -> 5) never is the anchor."""
    factors, _, cold = _styles()
    user_items = sp.csr_matrix(np.array([[2.0, 0, 0, 1.0, -2.0, 0, 0, 0]]))
    weights = np.zeros((8, 8), dtype=np.float32)
    weights[3, 5], weights[0, 5], weights[4, 5] = 0.5, 0.2, 0.9
    weights[5, 2] = 0.7  # 5 -> 2: the wrong direction for a pick of 2
    co = weights if dense else sp.csr_matrix(weights)
    chosen = np.array([[5, 2, 6, -1]])
    plain = explain_block(user_items, factors, chosen, TITLES, cold, min_similarity=0.999)
    named = explain_block(
        user_items, factors, chosen, TITLES, cold, min_similarity=0.999, co_listening=co
    )
    assert plain == [
        ["Popular with listeners like you"] * 2 + ["New release picked for your taste", None]
    ]
    assert named == [
        [
            "Listeners of Song 3 — Artist 1 also play this",
            "Popular with listeners like you",  # no played track links to 2
            "New release picked for your taste",  # cold picks keep their reasons
            None,
        ]
    ]
    assert reason_text(Reason.LISTENERS_OF, "x" * 500).endswith("… also play this")
    assert len(reason_text(Reason.LISTENERS_OF, "x" * 500) or "") == MAX_REASON_CHARS
