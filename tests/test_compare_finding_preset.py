"""``globalctx compare --preset gcnet-finding`` dispatches to the study with the user's seeds and
directory, and refuses flags the study would ignore."""

from __future__ import annotations

import pytest

from globalctx.cli import main


def test_preset_runs_the_study_with_seeds_and_out(monkeypatch, tmp_path):
    calls = []
    import globalctx.compare.finding as finding

    monkeypatch.setattr(finding, "run_finding", lambda out, **kw: calls.append((out, kw)) or {})
    assert main(["compare", "--preset", "gcnet-finding", "--seeds", "0,3", "--out", str(tmp_path / "f")]) == 0
    (out, kw), = calls
    assert out == str(tmp_path / "f") and kw["seeds"] == [0, 3]


@pytest.mark.parametrize("flags, word", [(["--variants", "none gc"], "--variants"), (["--subset", "64"], "subset")])
def test_preset_refuses_flags_it_would_ignore(flags, word, tmp_path, capsys):
    assert main(["compare", "--preset", "gcnet-finding", "--out", str(tmp_path / "f"), *flags]) == 2
    err = capsys.readouterr().err
    assert word in err and "gcnet-finding" in err and not (tmp_path / "f").exists()
