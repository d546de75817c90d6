"""globalctx.extras.require: import optional modules or fail in one line naming the extra."""

import re
import sys
from pathlib import Path

import pytest

from globalctx.extras import EXTRAS, MissingExtraError, require

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_returns_the_modules_in_order():
    import json
    import math

    assert require("train", "math", "json") == (math, json)


def test_missing_modules_named_in_one_line_with_the_install_command():
    with pytest.raises(MissingExtraError) as e:
        require("train", "math", "globalctx_absent_a", "globalctx_absent_b.sub", feature="globalctx train")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == (
        "globalctx train needs globalctx_absent_a, globalctx_absent_b.sub, which are not installed: "
        "pip install 'globalctx[train]'"
    )
    assert e.value.extra == "train"
    assert e.value.missing == ["globalctx_absent_a", "globalctx_absent_b.sub"]
    assert isinstance(e.value, ImportError)


def test_message_without_feature_names_the_extra():
    with pytest.raises(MissingExtraError, match=r"^the 'viz' extra needs globalctx_absent, which is not installed"):
        require("viz", "globalctx_absent")


def test_default_modules_are_the_extras_own(monkeypatch):
    monkeypatch.setitem(EXTRAS, "viz", ("math", "globalctx_absent"))
    with pytest.raises(MissingExtraError) as e:
        require("viz")
    assert e.value.missing == ["globalctx_absent"]


def test_unknown_extra_is_a_value_error_listing_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown extra 'trian'; valid extras: images, mmcv, timm, train, viz"):
        require("trian", "tqdm")


def test_a_broken_install_is_not_reported_as_missing(tmp_path, monkeypatch):
    """A module that is present but imports a missing dependency of its own propagates as is."""
    (tmp_path / "globalctx_broken_mod.py").write_text("import globalctx_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as e:
        require("train", "globalctx_broken_mod")
    assert not isinstance(e.value, MissingExtraError)
    assert e.value.name == "globalctx_absent_dependency"
    sys.modules.pop("globalctx_broken_mod", None)


def test_every_extra_is_an_extra_of_the_package():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    extras = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(extras)
    # each listed module comes from a distribution the extra installs
    dist_of = {"PIL": "pillow", "skimage": "scikit-image", "mmcv": "mmcv-lite"}
    for extra, modules in EXTRAS.items():
        dists = {re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0].lower() for d in extras[extra]}
        for module in modules:
            assert dist_of.get(module, module) in dists, (extra, module)
