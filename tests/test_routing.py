"""The route decision (routing.py): one place, shape-aware, from a measured table."""

import json

import pytest

from sglang_dsv4_sparse import routing
from sglang_dsv4_sparse.routing import RoutePolicy, RouteTable, StepShape, TableEntry

S = routing.ROUTE_SGLANG


def _table(*entries):
    return RouteTable({"gpu": "test"}, [TableEntry(StepShape(*shape), layers, plan) for shape, layers, plan in entries])


# A short prefix where SGLang wins every layer, a long one where our C128 and C4 layers win.
SHORT = ((8192, 1, 8192, 16), {0: {S: 0.6, "ours": 0.9}, 4: {S: 1.4, "ours": 1.5}, 128: {S: 0.8, "ours": 1.3}}, 0.1)
LONG = ((8192, 1, 128000, 16), {0: {S: 0.6, "ours": 0.62}, 4: {S: 1.5, "ours": 1.2}, 128: {S: 2.2, "ours": 1.0}}, 0.1)


def test_auto_follows_the_nearest_measured_shape():
    policy = RoutePolicy("auto", True, _table(SHORT, LONG))
    assert policy.routes(StepShape(8192, 1, 9000, 16)) == {0: S, 4: S, 128: S}
    # C0's 3% gain is under MIN_GAIN: SGLang's; C4 and C128 ours.
    assert policy.routes(StepShape(8000, 1, 100000, 16)) == {0: S, 4: "native", 128: "folded"}
    # 8 heads takes the nearest measured head count (16).
    assert policy.routes(StepShape(8192, 1, 120000, 8))[128] == "folded"


def test_auto_hands_the_step_to_sglang_when_the_gain_does_not_pay_for_the_plan():
    shape, layers, _ = LONG
    policy = RoutePolicy("auto", True, _table((shape, layers, 5.0)))
    assert set(policy.routes(StepShape(*shape)).values()) == {S}


def test_auto_at_64_heads_and_without_a_table_is_sglang():
    assert set(RoutePolicy("auto", True, _table(SHORT, LONG)).routes(StepShape(8192, 1, 128000, 64)).values()) == {S}
    assert set(RoutePolicy("auto", True, None).routes(StepShape(8192, 1, 128000, 16)).values()) == {S}


@pytest.mark.parametrize("mode", ["auto", "sglang"])
def test_without_flashmla_only_our_routes_run(mode):
    policy = RoutePolicy(mode, False, None)
    assert policy.routes(StepShape(8192, 1, 128000, 16)) == routing.NARROW_ROUTES
    assert set(policy.routes(StepShape(8192, 1, 128000, 64)).values()) == {"index"}


def test_forced_modes():
    shape = StepShape(8192, 1, 128000, 16)
    assert RoutePolicy("ours", True).routes(shape) == routing.NARROW_ROUTES
    assert set(RoutePolicy("index", True).routes(shape).values()) == {"index"}
    assert set(RoutePolicy("sglang", True).routes(shape).values()) == {S}


def test_table_round_trips_through_json(tmp_path):
    table = _table(SHORT, LONG)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table.to_json()))
    again = RouteTable.load(str(path))
    assert again.header == table.header and len(again.entries) == 2
    assert again.entries[1].layer_ms[128] == LONG[1][128] and again.entries[1].plan_ms == LONG[2]


def test_unreadable_table_names_the_path(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        RouteTable.load(str(path))


def test_shipped_tables_load():
    import os

    for name in os.listdir(routing.ROUTE_TABLE_DIR) if os.path.isdir(routing.ROUTE_TABLE_DIR) else []:
        table = RouteTable.load(os.path.join(routing.ROUTE_TABLE_DIR, name))
        assert table.entries and table.header.get("gpu") and table.header.get("commit"), name


class _Choice:
    def heads_to_run(self, real, width):
        return width


def test_kernel_heads():
    assert routing.kernel_heads("index", 16, 64, _Choice()) == 64
    assert routing.kernel_heads(None, 16, 64, _Choice()) == 64
    assert routing.kernel_heads("folded", 16, 64, _Choice()) == 16
    assert routing.kernel_heads("native", 16, 64, _Choice()) == 16
    assert routing.kernel_heads("index", 64, 64, _Choice()) == 64


def test_decisions_are_cached_per_bucketed_shape():
    policy = RoutePolicy("auto", True, _table(SHORT, LONG))
    a = policy.routes(StepShape(8192, 1, 128000, 8))
    a["mutated"] = "by a caller"
    # Lengths within one bucket (1/16 of a power of two) share one decision; callers get their own copy.
    assert policy.routes(StepShape(8190, 1, 127000, 8)) == {k: v for k, v in a.items() if k != "mutated"}
    assert policy._routes.cache_info().hits >= 1
    assert routing._bucket(StepShape(8190, 1, 127000, 8)) == routing._bucket(StepShape(8192, 1, 128000, 8))
    assert routing._bucket(StepShape(7, 1, 16, 8)) == StepShape(7, 1, 16, 8)


def test_paged_steps_go_to_sglang_only_where_it_runs():
    assert RoutePolicy("auto", True).paged_to_sglang and RoutePolicy("sglang", True).paged_to_sglang
    assert not RoutePolicy("ours", True).paged_to_sglang and not RoutePolicy("index", True).paged_to_sglang
    assert not RoutePolicy("auto", False).paged_to_sglang


def test_a_step_all_on_sglang_is_one_cached_lookup():
    policy = RoutePolicy("auto", True, _table(SHORT, LONG))
    assert policy.all_sglang(8192, 1, 8192, 16) and not policy.all_sglang(8192, 1, 128000, 16)
    hits = policy._all_sglang.cache_info().hits
    assert policy.all_sglang(8190, 1, 8100, 16) and policy._all_sglang.cache_info().hits == hits + 1
    assert not RoutePolicy("ours", True).all_sglang(8192, 1, 8192, 16)


def test_verify_steps_route_by_real_heads():
    ours, auto = RoutePolicy("ours", True), RoutePolicy("auto", True)
    assert ours.row_step_route("verify", 16) == routing.ROUTE_VERIFY
    assert ours.row_step_route("draft_extend", 8) == routing.ROUTE_VERIFY
    assert ours.row_step_route("verify", 64) == routing.ROUTE_PAGED
    assert ours.row_step_route("decode", 8) == routing.ROUTE_PAGED
    # auto: SGLang's attention wherever it runs the same kernel or measured faster than ours.
    expected = routing.ROUTE_VERIFY if routing.VERIFY_KERNEL_IN_AUTO else S
    assert auto.row_step_route("verify", 16) == expected and auto.row_step_route("verify", 64) == S
    assert auto.plans_row_step("verify") == routing.VERIFY_KERNEL_IN_AUTO and not auto.plans_row_step("decode")
    assert RoutePolicy("auto", False).row_step_route("verify", 64) == routing.ROUTE_PAGED
