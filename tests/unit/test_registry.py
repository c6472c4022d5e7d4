"""The variant registry: order, lookup, double registration, optional dependencies and tunables."""

from __future__ import annotations

import pytest

from fluxperf import variants
from fluxperf.variants import MissingDependency


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry that the test may add to; the real one is restored afterwards."""
    variants.names()  # import every shipped variant first, so they land in the copy
    monkeypatch.setattr(variants, "_REGISTRY", dict(variants._REGISTRY))
    return variants._REGISTRY


def _build(pipe, scenario, params):
    return pipe


def test_names_put_eager_first_and_in_place_variants_last(registry):
    variants.register("aaa_in_place", in_place=True)(_build)
    variants.register("zzz_wrapper")(_build)
    names = variants.names()
    assert names[0] == "eager"
    in_place = [variants.get(n).in_place for n in names]
    assert in_place == sorted(in_place), list(zip(names, in_place))
    assert names.index("zzz_wrapper") < names.index("aaa_in_place")


def test_the_shipped_variants_include_eager_and_compile():
    assert {"eager", "compile"} <= set(variants.names())
    assert variants.get("compile").lossless and not variants.get("compile").in_place


def test_getting_an_unknown_variant_lists_the_choices():
    with pytest.raises(KeyError) as info:
        variants.get("nope")
    assert "unknown variant 'nope'; choose from: " + ", ".join(variants.names()) in str(info.value)


def test_registering_a_name_twice_raises(registry):
    variants.register("twin")(_build)
    with pytest.raises(ValueError, match="variant 'twin' registered twice"):
        variants.register("twin")(_build)


def test_a_variant_takes_the_first_line_of_its_module_docstring_as_its_doc():
    assert (
        variants.get("compile").doc == "torch.compile on the transformer, the part that runs once per denoising step."
    )


def test_require_turns_a_missing_package_into_missing_dependency_naming_the_install_command():
    with pytest.raises(MissingDependency) as info:
        variants.require("fluxperf_no_such_package.sub", "pip install fluxperf-no-such-package")
    assert info.value.install == "pip install fluxperf-no-such-package"
    assert "install it with: pip install fluxperf-no-such-package" in str(info.value)


def test_require_returns_the_module_when_it_is_installed():
    import json

    assert variants.require("json", "pip install json") is json


def test_require_reraises_a_broken_installs_import_error_of_another_module(tmp_path, monkeypatch):
    pkg = tmp_path / "fluxperf_broken_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import fluxperf_missing_inner_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError) as info:
        variants.require("fluxperf_broken_pkg", "pip install fluxperf-broken-pkg")
    assert not isinstance(info.value, MissingDependency)
    assert info.value.name == "fluxperf_missing_inner_dependency"


def test_all_params_merges_every_variants_tunables(registry):
    variants.register("with_a", params={"test_interval_a": 3})(_build)
    variants.register("with_b", params={"test_threshold_b": 0.1})(_build)
    merged = variants.all_params()
    assert merged["test_interval_a"] == 3 and merged["test_threshold_b"] == 0.1
    for name in variants.names():
        for key in variants.get(name).params:
            assert key in merged
