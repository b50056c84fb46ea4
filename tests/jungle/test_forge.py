"""Training many models at once: per-model Adam, and stacked training equals one-by-one training."""

import torch

from probex.jungle.forge import StackedAdam


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
