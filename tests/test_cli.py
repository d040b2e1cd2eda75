import subprocess
import sys

import pytest

from stedq.cli import build_parser

SUBCOMMANDS = ["data", "train", "evaluate", "export", "serve", "score", "loop", "bench", "study"]


def run_stedq(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stedq", *args], capture_output=True, text=True,
                          timeout=120)


def test_top_level_help_lists_every_subcommand():
    result = run_stedq("--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert f"\n    {name} " in result.stdout, name


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: stedq " + name)
    assert len(text.splitlines()) > 3  # says more than its usage line


def test_serve_help_names_env_vars_and_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = capsys.readouterr().out
    assert "STEDQ_PORT" in text and "default: 50051" in text
    assert "STEDQ_METRICS_PORT" in text and "default: 8000" in text


def test_missing_subcommand_is_an_error():
    result = run_stedq()
    assert result.returncode == 2
    assert "COMMAND" in result.stderr


def test_invalid_setting_is_one_clear_line_for_any_command(tmp_path):
    result = subprocess.run([sys.executable, "-m", "stedq", "score", str(tmp_path), "--timeout-s", "-1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "stedq score: --timeout-s / STEDQ_TIMEOUT_S = -1.0: Input should be greater than 0" in result.stderr
    assert "Traceback" not in result.stderr
