"""The model's dropout behaves as nn.Dropout: it drops a share p of the elements, scales the rest by
1 / (1 - p), routes the gradient through the same mask, is the identity in evaluation, and a seed
reproduces its mask, whatever the number of threads."""

import pytest
import torch

from s2s_attn.model import dropout as reference
from s2s_attn.model.dropout import Dropout


def test_drops_a_share_p_and_scales_the_rest_by_one_over_keep():
    torch.manual_seed(0)
    layer = Dropout(0.1).train()
    out = layer(torch.ones(1000, 1000))
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.002
    kept = out[out != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.9))


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 5), (64, 12, 512)])
def test_every_shape_gets_a_mask_of_its_own_shape_with_independent_positions(shape):
    torch.manual_seed(1)
    out = Dropout(0.5).train()(torch.ones(shape))
    assert out.shape == shape
    assert set(torch.unique(out).tolist()) <= {0.0, 2.0}


def test_gradient_goes_through_the_same_mask():
    torch.manual_seed(2)
    x = torch.randn(50, 40, requires_grad=True)
    out = Dropout(0.3).train()(x)
    out.sum().backward()
    scale = torch.where(out != 0, 1 / 0.7, 0.0)
    torch.testing.assert_close(x.grad, scale)


def test_identity_in_evaluation_and_with_p_zero():
    x = torch.randn(10, 10)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)


def test_a_seed_reproduces_the_mask():
    layer = Dropout(0.2).train()
    torch.manual_seed(3)
    first = layer(torch.ones(100, 100))
    torch.manual_seed(3)
    assert torch.equal(layer(torch.ones(100, 100)), first)


def test_a_probability_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        Dropout(1.0)


def test_the_mask_does_not_depend_on_the_number_of_threads():
    layer = Dropout(0.3).train()
    masks = []
    for threads in (1, 2):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        torch.manual_seed(4)
        masks.append(layer(torch.ones(300, 700)))
        torch.set_num_threads(previous)
    assert torch.equal(masks[0], masks[1])


def test_neighbouring_elements_are_dropped_independently():
    torch.manual_seed(5)
    dropped = (Dropout(0.5).train()(torch.ones(400_000)) == 0).float()
    both = (dropped[:-1] * dropped[1:]).mean().item()  # four elements share one 64-bit number
    assert abs(both - 0.25) < 0.005


def test_splitmix64_in_plain_pytorch_gives_the_published_outputs():
    """The first outputs of splitmix64 seeded with 0 (state 0, 1 x gamma, 2 x gamma, ...), as its C reference
    prints them."""
    gamma = 0x9E3779B97F4A7C15
    counters = torch.tensor([reference._int64((k * gamma) % 2**64) for k in range(3)], dtype=torch.int64)
    got = [int(v) % 2**64 for v in reference.splitmix64(counters)]
    assert got == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
