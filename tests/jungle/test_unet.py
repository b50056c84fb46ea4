"""The mini text-to-image U-Net: batched LoRA, flow matching, sampling, saving a root."""

import pytest
import torch

from probex.errors import ZooError
from probex.jungle.unet import (
    MiniUNet,
    flow_matching_loss,
    init_lora_factors,
    load_root,
    lora_targets,
    sample,
    save_root,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: more threads only contend with each other on a busy machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return MiniUNet().eval()


def _inputs(batch: int, length: int = 5):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 16, 16, generator=generator)
    t = torch.rand(batch, generator=generator)
    context = torch.randn(batch, length, 384, generator=generator)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:, -2:] = False
    return x, t, context, mask


def _random_lora(unet, n_models: int, seed: int = 2):
    generator = torch.Generator().manual_seed(seed)
    factors = {}
    for name in lora_targets():
        linear = unet.projection(name)
        factors[name] = (
            torch.randn(n_models, 4, linear.in_features, generator=generator) * 0.1,
            torch.randn(n_models, linear.out_features, 4, generator=generator) * 0.1,
        )
    return factors


def test_lora_targets_use_diffusers_projection_names_on_three_attention_layers(unet):
    targets = lora_targets()
    assert len(targets) == 12 and "down.attn.to_q" in targets and "mid.attn.to_k" in targets and "up.attn.to_out" in targets
    assert tuple(unet.projection("mid.attn.to_q").weight.shape) == (64, 64)
    assert tuple(unet.projection("up.attn.to_k").weight.shape) == (32, 384)


def test_unet_maps_noisy_images_to_velocities_of_the_same_shape(unet):
    x, t, context, mask = _inputs(3)
    assert unet(x, t, context, mask).shape == (3, 3, 16, 16)


def test_padded_caption_tokens_are_ignored(unet):
    x, t, context, mask = _inputs(2)
    changed = context.clone()
    changed[:, -2:] = 100.0  # only masked positions change
    assert torch.allclose(unet(x, t, context, mask), unet(x, t, changed, mask), atol=1e-5)


def test_batched_lora_gives_each_model_what_merging_its_update_into_the_root_gives(unet):
    n_models, per_model = 3, 2
    factors = _random_lora(unet, n_models)
    x, t, context, mask = _inputs(n_models * per_model)
    batched = unet(x, t, context, mask, lora=factors)
    for model in range(n_models):
        merged = MiniUNet(unet.config)
        merged.load_state_dict(unet.state_dict())
        with torch.no_grad():
            for name, (down, up) in factors.items():
                merged.projection(name).weight += up[model] @ down[model]
        rows = slice(model * per_model, (model + 1) * per_model)
        assert torch.allclose(batched[rows], merged.eval()(x[rows], t[rows], context[rows], mask[rows]), atol=1e-4)


def test_lora_with_zero_up_factors_leaves_the_root_unchanged(unet):
    factors = {name: (down, torch.zeros_like(up)) for name, (down, up) in _random_lora(unet, 2).items()}
    x, t, context, mask = _inputs(4)
    assert torch.allclose(unet(x, t, context, mask, lora=factors), unet(x, t, context, mask), atol=1e-6)


def test_per_model_loss_averages_to_the_batch_loss(unet):
    x, _, context, mask = _inputs(6)
    images = (x.clamp(-1, 1) + 1) / 2
    per_model = flow_matching_loss(unet, images, context, mask, torch.Generator().manual_seed(5), reduce_models=3)
    whole = flow_matching_loss(unet, images, context, mask, torch.Generator().manual_seed(5))
    assert per_model.shape == (3,) and torch.allclose(per_model.mean(), whole, atol=1e-6)


def test_sampling_draws_images_in_the_unit_range_deterministically(unet):
    _, _, context, mask = _inputs(2)
    null_context, null_mask = context[:1, :2], mask[:1, :2]
    first = sample(unet, context, mask, null_context, null_mask, torch.Generator().manual_seed(0), steps=3)
    second = sample(unet, context, mask, null_context, null_mask, torch.Generator().manual_seed(0), steps=3)
    assert first.shape == (2, 3, 16, 16) and torch.equal(first, second)
    assert float(first.min()) >= 0 and float(first.max()) <= 1


def test_a_saved_root_loads_back_with_identical_weights(unet, tmp_path):
    save_root(unet, tmp_path / "root", {"name": "mini-sd"})
    loaded, config = load_root(tmp_path / "root")
    assert config["name"] == "mini-sd"
    for name, tensor in unet.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_loading_a_root_without_its_files_names_the_folder_and_what_it_needs(tmp_path):
    with pytest.raises(ZooError, match="unet.safetensors and config.json"):
        load_root(tmp_path)



def test_lora_factors_start_as_the_root_from_one_shared_down_initialisation(unet):
    factors = init_lora_factors(unet, n_models=3, rank=4, init_seed=0)
    again = init_lora_factors(unet, n_models=1, rank=4, init_seed=0)
    other = init_lora_factors(unet, n_models=1, rank=4, init_seed=1)
    down, up = factors["mid.attn.to_q"]
    assert down.shape == (3, 4, 64) and up.shape == (3, 64, 4) and down.requires_grad
    assert torch.equal(down[0], down[2]) and torch.equal(down[0], again["mid.attn.to_q"][0][0])
    assert not torch.equal(down[0], other["mid.attn.to_q"][0][0]) and not up.any()
