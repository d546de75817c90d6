"""Every numeric flag of every command is checked when the command line is parsed (the message
names the flag and its range); constructor counts are checked once in the factories; a broken
checkpoint given to analyze/eval is one line naming the file."""

import argparse

import pytest

import globalctx
from globalctx.cli import main
from globalctx.cli.__init__ import build_parser

NUMBERS = ["nan", "inf", "-1", "0", "abc", "1.5"]


def _numeric_actions(parser: argparse.ArgumentParser, path=()):
    """(command path, flag, type) of every option whose type parses numbers, in every sub-command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _numeric_actions(sub, path + (name,))
        elif action.option_strings and getattr(action.type, "__name__", "") in ("int", "float"):
            if action.choices is None:  # a list of choices is its own range check
                yield path, action.option_strings[-1], action.type


def test_every_numeric_flag_refuses_nonsense_naming_itself():
    parser = build_parser()
    found = list(_numeric_actions(parser))
    assert len(found) >= 20, found  # train, compare, eval, analyze, bench, blocks
    for path, flag, parse in found:
        assert parse.__module__.endswith("cli.flags"), f"{' '.join(path)} {flag} uses a plain {parse.__name__}"
        for text in ("nan", "inf", "abc"):
            with pytest.raises(argparse.ArgumentTypeError, match=r"must be (an integer|a finite number)"):
                parse(text)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["train", "--gamma", "nan"], "--gamma: must be a finite number > 0, got 'nan'"),
        (["train", "--gamma", "-1"], "--gamma: must be a finite number > 0, got '-1'"),
        (["train", "--momentum", "nan"], "--momentum: must be a finite number >= 0 and < 1"),
        (["train", "--label-smoothing", "1"], "--label-smoothing: must be a finite number >= 0 and < 1"),
        (["train", "--dist-timeout", "inf"], "--dist-timeout: must be a finite number > 0"),
        (["train", "--workers", "-1"], "--workers: must be an integer >= 0"),
        (["train", "--milestones", "5,2"], "--milestones: expected increasing non-negative epochs"),
        (["eval", "x", "--subset", "0"], "--subset: must be an integer >= 1, got '0'"),
        (["eval", "x", "--subset", "-5"], "--subset: must be an integer >= 1, got '-5'"),
        (["compare", "--epochs", "0"], "--epochs: must be an integer >= 1"),
        (["analyze", "x", "--queries", "0"], "--queries: must be an integer >= 1"),
        (["bench", "models", "--num-classes", "-1"], "--num-classes: must be an integer >= 0"),
    ],
)
def test_flag_errors_name_the_flag(argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "argument " in err and match in err, err  # "-j/--workers: ..." too


def test_model_kw_of_the_wrong_type_is_one_line(fmnist, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model-kw", "base_width=abc", "--subset", "32", "-b", "16", "--epochs", "1",
            "--out", str(out), "--no-progress", "--no-tensorboard"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "base_width must be an int >= 1, got str 'abc'" in err, err
    assert not (out / "last.safetensors").exists()


@pytest.mark.parametrize("value, error", [(8.0, TypeError), ("8", TypeError), (True, TypeError), (0, ValueError),
                                          (-1, ValueError)])  # fmt: skip
def test_factories_check_counts_naming_the_argument(value, error):
    with pytest.raises(error, match="channels must be"):
        globalctx.create_block("gc", value)
    with pytest.raises(error, match="in_chans must be an int >= 1"):
        globalctx.create_model("resnet18_small", in_chans=value)
    with pytest.raises(error, match="base_width must be an int >= 1"):
        globalctx.create_model("resnet18_small", base_width=value)
    if value != 0:  # num_classes=0 is a model without a head
        with pytest.raises(error, match="num_classes must be an int >= 0"):
            globalctx.create_model("resnet18_small", num_classes=value)


@pytest.mark.parametrize("which", ["best.safetensors", "last.safetensors"])
@pytest.mark.parametrize("command", ["analyze", "eval"])
def test_a_truncated_checkpoint_is_one_line_naming_it(which, command, fmnist, tmp_path, capsys):
    pytest.importorskip("safetensors")
    run = tmp_path / "run"
    assert main(["train", "--base-width", "4", "--subset", "32", "--val-subset", "16", "-b", "16", "--epochs", "1",
                 "--threads", "1", "--no-progress", "--no-tensorboard", "--out", str(run)]) == 0  # fmt: skip
    capsys.readouterr()
    f = run / which
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert main([command, str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(f) in err and "Traceback" not in err, err
