"""More like these: every model ranked by its similarity to a selection."""

import numpy as np
import pytest

from probex.errors import ZooError
from probex.language.selection import most_similar, similarity_to_selection


def clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 16))
    labels = np.repeat([0, 1, 2], 30)
    return centres[labels] + 0.2 * rng.normal(size=(90, 16)), labels


def test_a_few_members_of_a_cluster_find_the_rest_of_it_first():
    vectors, labels = clusters()
    chosen = [1, 4, 7]
    top = most_similar(similarity_to_selection(vectors, chosen), exclude=chosen, k=27)
    assert np.mean(labels[top] == 0) == 1.0  # chance: 27 / 87
    assert not set(top) & set(chosen)


def test_scores_are_cosines_with_the_mean_direction():
    vectors = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-1.0, 0.0]])
    scores = similarity_to_selection(vectors, [0, 1])
    assert scores == pytest.approx([np.sqrt(0.5), np.sqrt(0.5), 1.0, -np.sqrt(0.5)], abs=1e-6)


def test_an_empty_or_out_of_range_selection_is_refused():
    with pytest.raises(ZooError, match="empty"):
        similarity_to_selection(np.ones((3, 2)), [])
    with pytest.raises(ZooError, match="out of range"):
        similarity_to_selection(np.ones((3, 2)), [5])
