"""The schema (mmdrfuse/cfg/default.yaml) and the command line derived from it: every YAML key
is an option and every option a YAML key, defaults and help come from the file, and config
files are checked against the schema's types."""
from __future__ import annotations

import argparse

import pytest

from mmdrfuse.cli import build_parser, main
from mmdrfuse.config import defaults, schema, sections

GENERIC = {"help", "config"}  # options every command has, not settings


def leaf_parsers(parser=None, path=()):
    """(command path, parser) of every command that runs (has a schema section)."""
    parser = parser or build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if sub.get_default("_section"):
                    yield path + (name,), sub
                yield from leaf_parsers(sub, path + (name,))


def test_every_yaml_key_is_an_option_and_every_option_a_yaml_key():
    used = []
    for path, parser in leaf_parsers():
        section = parser.get_default("_section")
        assert section == "_".join(path), path  # `prepare patches` reads prepare_patches
        used.append(section)
        options = {a.dest: a for a in parser._actions if a.dest not in GENERIC}
        assert set(options) == set(schema(section)), path
        for key, option in schema(section).items():
            action = options[key]
            assert action.default == option.default, (path, key)
            if not option.positional:
                assert option.option_string in action.option_strings, (path, key)
    assert sorted(used) == sorted(sections())  # no section without its command


def test_help_shows_every_option_with_its_yaml_help(capsys):
    for path, parser in leaf_parsers():
        text = " ".join(parser.format_help().split())
        for option in schema(parser.get_default("_section")).values():
            assert " ".join(option.help.split())[:40] in text, (path, option.key)
            if not option.positional:
                assert option.option_string in text, (path, option.key)


def test_todays_command_lines_keep_their_names_and_defaults():
    parser = build_parser()
    args = parser.parse_args(["pipeline", "c.yaml", "--from", "fuse"])
    assert (args.config_file, args.from_stage, args.out) == ("c.yaml", "fuse", None)
    args = parser.parse_args(["train", "student", "--no-amp", "--max-steps", "none", "--distill-norm", "batch"])
    assert (args.amp, args.max_steps, args.distill_norm, args.epochs, args.out) == (False, None, "batch", 10, "runs/student")
    args = parser.parse_args(["bench", "--no-teacher-compile", "--threads", "2"])
    assert (args.teacher_compile, args.threads, args.size) == (False, 2, "1280x1024")
    args = parser.parse_args(["detect", "--method", "a=x", "--method", "b=y"])
    assert args.method == ["a=x", "b=y"] and args.builtin == "infrared,visible,average,max,laplacian"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "teacher", "--refresh", "sometimes"])  # choices from refresh.RULES


def test_choices_are_the_codes_constants():
    from mmdrfuse.fusion import distill, refresh
    from mmdrfuse.fusion.scaling import SCALINGS

    assert tuple(schema("train_student")["refresh"].choices) == refresh.RULES
    assert tuple(schema("train_student")["distill"].choices) == distill.MODES
    assert tuple(schema("train_student")["distill_norm"].choices) == distill.NORMS
    assert tuple(schema("fuse")["scaling"].choices) == SCALINGS


def test_defaults_leave_out_command_line_only_keys():
    teacher = defaults("train_teacher")
    assert "patches" not in teacher and "quiet" not in teacher and teacher["epochs"] == 8
    assert "teacher" not in defaults("train_student")


def test_required_option_missing_is_one_line(capsys):
    assert main(["prepare", "patches", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "--root" in err and len(err.strip().splitlines()) == 1


def test_training_defaults_are_the_papers_recipe():
    teacher, student = defaults("train_teacher"), defaults("train_student")
    assert (teacher["epochs"], teacher["batch"], teacher["lr"]) == (8, 36, 1e-4)
    assert (student["epochs"], student["batch"], student["lr"]) == (10, 26, 1e-4)
    weights = ("intensity_weight", "perception_weight", "gradient_weight")
    assert tuple(teacher[k] for k in weights) == (2.0, 1.0, 0.1)
    assert tuple(student[k] for k in weights) == (1.0, 2.0, 0.1)
    assert student["distill"] == "digestible" and student["distill_weight"] == 5.0
    assert teacher["recipe"] == student["recipe"] == "paper"
    from mmdrfuse.fusion.recipes import training_config

    assert training_config("teacher", {})["refresh"] == training_config("student", {})["refresh"] == "sample"
    assert teacher["refresh_weight"] == student["refresh_weight"] == 10.0


def test_config_file_supplies_required_options_and_is_checked(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("root: /nonexistent-llvip\nout: OUT\n")
    assert main(["prepare", "patches", "--config", str(config)]) == 2
    assert "/nonexistent-llvip" in capsys.readouterr().err  # got past the required check
    config.write_text("scaling: sqrt\n")
    assert main(["fuse", "--config", str(config)]) == 2
    assert "scaling must be one of" in capsys.readouterr().err


def test_explicit_flag_overrides_the_config_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 2\nbatch: 4\n")
    from mmdrfuse.config import apply_config, find_leaf_parser

    parser = build_parser()
    argv = ["train", "teacher", "--config", str(config), "--epochs", "5"]
    apply_config(find_leaf_parser(parser, argv), str(config))
    args = parser.parse_args(argv)
    assert (args.epochs, args.batch, args.lr) == (5, 4, 1e-4)


# ---------------------------------------------------------------------------------------------
# config files are checked against the schema's types (issue 14, item 5): one line naming the file


@pytest.mark.parametrize("command, text, message", [
    (["fuse"], "batch: [1, 2]\n", "batch must be an integer, got [1, 2]"),
    (["prepare", "patches"], "size: 32.5\n", "size must be an integer, got 32.5"),
    (["prepare", "patches"], "pairs: null\n", "pairs must be an integer, got None"),
    (["evaluate"], "metrics: 5\n", "metrics must be a string, got 5"),
    (["train", "teacher"], "epochs: 1.5\n", "epochs must be an integer, got 1.5"),
    (["train", "teacher"], "epochs: one\n", "epochs must be an integer, got 'one'"),
    (["train", "teacher"], "amp: 1\n", "amp must be true or false or null, got 1"),
    (["detect"], "method: x=y\n", "method must be a list of strings"),
    (["train", "teacher"], "a: [x\n", "not valid YAML at line 2"),
    (["train", "teacher"], "- epochs\n", "must hold a mapping"),
    (["train", "teacher"], "epoch: 3\n", "unknown option 'epoch'"),
])
def test_config_values_of_the_wrong_type_are_one_line_errors(tmp_path, capsys, command, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert main([*command, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(config) in err and len(err.strip().splitlines()) == 1, err


def test_optional_values_take_null_and_numbers_take_ints(tmp_path):
    from mmdrfuse.config import check_settings

    assert check_settings("train_teacher", {"max-steps": None, "lr": 1, "limit": 5}, "c.yaml") == \
        {"max_steps": None, "lr": 1, "limit": 5}
    assert check_settings("detect", {"device": 0}, "c.yaml") == {"device": 0}  # ultralytics' GPU index
