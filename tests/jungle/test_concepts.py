"""The procedural concepts of the demo jungle."""

import pytest
import torch

from probex.jungle.concepts import N_CONCEPTS, concept, concept_index, concept_names, render


def test_there_are_64_distinct_named_concepts():
    names = concept_names()
    assert len(names) == N_CONCEPTS == 64 == len(set(names))
    assert concept(concept_index("a purple heart")).name == "purple heart"


def test_unknown_names_are_refused_with_the_vocabulary():
    with pytest.raises(ValueError, match="colours red, orange"):
        concept_index("a plaid star")


def test_rendering_is_deterministic_for_a_generator_and_in_range():
    ids = torch.arange(64)
    first = render(ids, torch.Generator().manual_seed(3))
    second = render(ids, torch.Generator().manual_seed(3))
    assert first.shape == (64, 3, 16, 16) and torch.equal(first, second)
    assert 0.0 <= float(first.min()) and float(first.max()) <= 1.0


def test_a_shapes_colour_dominates_its_image_centre():
    images = render(torch.tensor([concept_index("red circle"), concept_index("blue circle")]).repeat(50),
                    torch.Generator().manual_seed(0), size=32)
    centre = images[:, :, 12:20, 12:20].mean(dim=(2, 3))
    red, blue = centre[0::2], centre[1::2]
    assert (red[:, 0] > red[:, 2]).float().mean() > 0.9 and (blue[:, 2] > blue[:, 0]).float().mean() > 0.9
