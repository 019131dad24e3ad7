import pytest

from sglang_dsv4_sparse.core import router


def test_scheduler_limit_matches_the_spec():
    # 228 KB of shared memory per Hopper SM: 4 * (5 * b + 1) <= 233472 -> b <= 11673.
    assert router.scheduler_row_limit(228 * 1024) == 11673
    assert 4 * (5 * 11673 + 1) <= 228 * 1024 < 4 * (5 * 11674 + 1)


@pytest.mark.parametrize("value,expected", [(None, True), ("1", True), ("true", True), ("0", False), ("false", False)])
def test_flag_from_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(router.FLAG, raising=False)
    else:
        monkeypatch.setenv(router.FLAG, value)
    assert router.sparse_prefill_flag() is expected


def test_large_extends_take_sparse_prefill_whatever_the_flag():
    assert router.use_sparse_prefill(100, row_limit=11673, flag=True)
    assert not router.use_sparse_prefill(100, row_limit=11673, flag=False)
    assert router.use_sparse_prefill(11674, row_limit=11673, flag=False)
    assert not router.use_sparse_prefill(11673, row_limit=11673, flag=False)
    # The Triton paged kernel has no row limit.
    assert not router.use_sparse_prefill(10**6, row_limit=None, flag=False)
