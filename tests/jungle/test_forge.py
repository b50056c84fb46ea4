"""Training many models at once: per-model Adam, and stacked training equals one-by-one training."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from probex.jungle.architectures import add_lora, make_model
from probex.jungle.forge import StackedAdam, train_stacked


def test_stacked_adam_moves_each_model_like_torch_adam_with_its_own_learning_rate():
    torch.manual_seed(0)
    start = torch.randn(3, 4, 5)
    gradients = [torch.randn(3, 4, 5) for _ in range(4)]
    stacked = start.clone().requires_grad_()
    optimizer = StackedAdam([stacked], torch.tensor([1e-3, 1e-2, 5e-3]))
    for step, gradient in enumerate(gradients):
        stacked.grad = gradient.clone()
        optimizer.step(active=torch.tensor([True, True, step < 2]))  # model 2 stops after 2 steps
    for model, (lr, steps) in enumerate([(1e-3, 4), (1e-2, 4), (5e-3, 2)]):
        single = start[model].clone().requires_grad_()
        reference = torch.optim.Adam([single], lr=lr)
        for gradient in gradients[:steps]:
            single.grad = gradient[model].clone()
            reference.step()
        assert torch.allclose(stacked[model].detach(), single.detach(), atol=1e-6), model


def test_stacked_adam_decays_weights_like_torch_adamw():
    torch.manual_seed(1)
    start = torch.randn(2, 6)
    gradients = [torch.randn(2, 6) for _ in range(3)]
    stacked = start.clone().requires_grad_()
    optimizer = StackedAdam([stacked], torch.tensor([1e-2, 3e-3]), weight_decay=torch.tensor([1e-2, 0.5]))
    for gradient in gradients:
        stacked.grad = gradient.clone()
        optimizer.step(active=torch.tensor([True, True]))
    for model, (lr, decay) in enumerate([(1e-2, 1e-2), (3e-3, 0.5)]):
        single = start[model].clone().requires_grad_()
        reference = torch.optim.AdamW([single], lr=lr, weight_decay=decay)
        for gradient in gradients:
            single.grad = gradient[model].clone()
            reference.step()
        assert torch.allclose(stacked[model], single, atol=1e-6)


def _every_model_every_step(models, sample_batch, steps, lr, weight_decay):
    """train_stacked as it was: every model's forward and backward at every step, the finished ones' ignored."""
    params, buffers = stack_module_state(models)
    for tensor in params.values():
        tensor.requires_grad_(True)
    loss = vmap(lambda p, b, x, y: F.cross_entropy(functional_call(models[0], (p, b), (x,)), y))
    optimizer = StackedAdam(params, lr, weight_decay)
    for step in range(int(steps.max())):
        inputs, targets = sample_batch(step)
        loss(params, buffers, inputs, targets).sum().backward()
        optimizer.step(active=step < steps)
    return [{name: tensor[i].detach().clone() for name, tensor in params.items()} for i in range(len(models))]


@pytest.mark.parametrize("architecture, lora", [("cnn", None), ("mixer", ("block1.channel_fc2",))])
def test_train_stacked_computes_only_the_models_still_training_and_trains_each_bit_for_bit_as_before(architecture, lora):
    """Models with 1..6 steps: from step 1 on, fewer models are computed, down to one (which takes a partner)."""
    torch.set_num_threads(1)

    def models():
        torch.manual_seed(3)
        made = [make_model(architecture, 12) for _ in range(6)]
        return [add_lora(model, lora, 4) for model in made] if lora else made

    def sampler():
        generator = torch.Generator().manual_seed(4)
        return lambda step: (torch.randn(6, 8, 3, 16, 16, generator=generator), torch.randint(0, 12, (6, 8), generator=generator))

    steps, lr, decay = torch.tensor([3, 1, 6, 2, 5, 4]), torch.full((6,), 1e-2), torch.full((6,), 1e-3)
    trained = train_stacked(models(), sampler(), F.cross_entropy, steps=steps, lr=lr, weight_decay=decay)
    reference = _every_model_every_step(models(), sampler(), steps, lr, decay)
    untouched = models()
    for model, (ours, theirs) in enumerate(zip(trained, reference)):
        assert ours.keys() == theirs.keys()
        for name in ours:
            assert torch.equal(ours[name], theirs[name]), (model, name)
        moved = [name for name, tensor in untouched[model].named_parameters() if not torch.equal(tensor.detach(), ours[name])]
        assert moved, model  # each model did train
