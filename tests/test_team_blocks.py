"""The row blocks a training run's thread team shares (runtime.h's pn_team_own and
pn_team_next, used by gemm_block): every block is taken exactly once, each thread first
takes its own contiguous range from the front, and a slow thread's last blocks go to the
others, taken from the back of its range."""
import numpy as np
import pytest

from pyneuro import _core


def own_range(t, nt, blocks):
    return range(t * blocks // nt, (t + 1) * blocks // nt)


@pytest.mark.parametrize("nt,blocks", [(1, 7), (2, 30), (3, 31), (4, 5), (2, 1), (3, 0)])
def test_every_block_taken_once(nt, blocks):
    took = _core._team_blocks(blocks, nt)
    assert took.shape == (nt, blocks)
    np.testing.assert_array_equal((took > 0).sum(axis=0), np.ones(blocks))
    for t in range(nt):                      # a thread takes its own range front first
        mine = [k for k in own_range(t, nt, blocks) if took[t, k]]
        np.testing.assert_array_equal(took[t, mine], np.arange(1, len(mine) + 1))


@pytest.mark.parametrize("nt", [2, 3])
def test_a_slow_thread_loses_the_end_of_its_range(nt):
    blocks = 12 * nt
    took = _core._team_blocks(blocks, nt, slow=0)
    np.testing.assert_array_equal((took > 0).sum(axis=0), np.ones(blocks))
    own = list(own_range(0, nt, blocks))
    mine = [k for k in own if took[0, k]]
    # thread 0 pauses 2 ms a block: the others finish theirs and take its last blocks;
    # it took a prefix of its own range, in order, and nothing of anyone else's
    assert len(mine) < len(own), f"thread 0 took {mine} of its range {own}"
    assert mine == own[:len(mine)] and (took[0] > 0).sum() == len(mine)
    np.testing.assert_array_equal(took[0, mine], np.arange(1, len(mine) + 1))
    # the rest of its range was taken from the back: each thief's blocks of it, in the
    # order it took them, run downwards
    for t in range(1, nt):
        stolen = [k for k in own[len(mine):] if took[t, k]]
        order = sorted(stolen, key=lambda k: took[t, k])
        assert order == sorted(stolen, reverse=True), f"thread {t} took {order} of thread 0's range"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="nt"):
        _core._team_blocks(4, 0)
    with pytest.raises(ValueError, match="blocks"):
        _core._team_blocks(-1, 2)
