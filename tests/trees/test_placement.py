"""Where a model lies among the trees: nearest tree, distance against the radius, and against the members."""

import math

import numpy as np

from probex.trees.placement import member_distances, place
from probex.trees.router import TreeRouter

from tests.trees.test_router import concat, grow_tree


def fitted():
    bank = concat(grow_tree("a", 40, root_seed=1), grow_tree("b", 40, root_seed=2, seed=3))
    router = TreeRouter().fit(bank)
    return router, member_distances(router, bank)


def test_a_new_model_of_a_tree_joins_it_and_a_typical_one_sits_mid_spread():
    router, spread = fitted()
    new = grow_tree("a", 5, root_seed=1, seed=9)
    placements = place(router, new, spread)
    assert {p.tree for p in placements} == {p.nearest for p in placements} and len({p.tree for p in placements}) == 1
    assert all(0.0 < p.percentile < 1.0 and p.distance < p.radius for p in placements)
    assert not any(p.far for p in placements)


def test_the_root_itself_is_closer_than_almost_every_member_and_flagged_root_like():
    router, spread = fitted()
    root = grow_tree("a", 1, root_seed=1, seed=5, update=0.0, noise=0.0)  # the untuned root
    (placement,) = place(router, root, spread)
    assert placement.tree is not None and placement.root_like and placement.percentile < 0.1


def test_a_model_from_another_root_is_unknown_but_names_its_nearest_tree_and_radius():
    router, spread = fitted()
    stranger = grow_tree("z", 1, root_seed=7, seed=8)
    (placement,) = place(router, stranger, spread)
    assert placement.tree is None and placement.nearest in router.tree_names_
    assert placement.distance > placement.radius and placement.percentile == 1.0


def test_an_unknown_architecture_has_no_nearest_tree():
    router, spread = fitted()
    other = grow_tree("c", 1, shape=(5, 5), layer="other.weight")
    (placement,) = place(router, other, spread)
    assert placement.tree is None and placement.nearest is None and math.isnan(placement.distance)


def test_member_distances_hold_every_fitted_model_sorted():
    router, spread = fitted()
    assert sum(len(values) for values in spread.values()) == 80
    assert all(np.all(np.diff(values) >= 0) for values in spread.values())
