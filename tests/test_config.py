"""Every flag parsed one way (config.py): defaults, switch spellings, and one clear error per bad value."""

import pytest

from sglang_dsv4_sparse import config


def test_defaults():
    s = config.read_settings({})
    assert (s.enabled, s.kernels, s.prefill_route, s.check_bounds, s.route_table) == (True, "auto", "auto", False, None)


@pytest.mark.parametrize("raw,value", [("1", True), ("TRUE", True), (" on ", True), ("y", True),
                                       ("0", False), ("No", False), ("off", False), ("", True)])
def test_switch_spellings(raw, value):
    assert config.read_settings({"SGLANG_DSV4_SPARSE": raw}).enabled is value


@pytest.mark.parametrize("name,value", [
    ("SGLANG_DSV4_SPARSE", "maybe"),
    ("SGLANG_DSV4_SPARSE_KERNELS", "bogus"),
    ("SGLANG_DSV4_SPARSE_PREFILL_ROUTE", "fastest"),
    ("SGLANG_DSV4_SPARSE_CHECK_BOUNDS", "2"),
    ("SGLANG_OPT_FLASHMLA_SPARSE_PREFILL", "maybe"),
])
def test_bad_value_names_the_flag_and_its_allowed_values(name, value):
    flag = next(f for f in config.FLAGS if f.name == name)
    with pytest.raises(config.FlagError, match=rf"^{name}='{value}' is not allowed: use one of "):
        flag.parse({name: value})
    errors = config.bad_flags({name: value})
    assert len(errors) == 1 and errors[0].startswith(name) and flag.allowed() in errors[0]


def test_every_flag_is_in_the_readme():
    import pathlib

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    for flag in config.FLAGS:
        assert f"`{flag.name}`" in readme, flag.name
