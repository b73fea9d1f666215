"""ports.common.blas thread contexts: set inside the block, restored after (also on errors)."""
import pytest
import torch

from ports.common.blas import threads, torch_threads


def test_torch_threads_set_and_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_blas_threads_is_a_no_op_without_a_controllable_blas():
    with threads(1):  # no preloaded BLAS in this process, or one that restores its count
        pass
