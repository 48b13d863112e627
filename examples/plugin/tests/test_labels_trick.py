"""The plugin's own tests: the conformance kit, and the trick itself."""

import torch
from continual_labels_trick import LabelsTrick

from continual.testing import check_strategy
from continual.types import Batch


def test_labels_trick_meets_the_strategy_contract():
    results = check_strategy(LabelsTrick, {"lr": 0.05})
    assert set(results.values()) == {"passed"}


def test_absent_classes_get_no_gradient():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    strategy = LabelsTrick(model, lr=0.1)
    before = model.weight.detach().clone()
    strategy.observe(Batch(x=torch.randn(5, 4), y=torch.tensor([0, 1, 0, 1, 1])))
    assert torch.equal(model.weight[2], before[2])  # class 2 was not in the batch
    assert not torch.equal(model.weight[0], before[0])
