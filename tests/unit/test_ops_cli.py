"""``sdeks dlq`` / ``sdeks top`` argument errors: a clear message and exit 1 before any AWS call."""

from __future__ import annotations

import pytest

from tests.fixtures.cli import run


def test_unknown_redrive_method(in_tmp):
    result = run("dlq", "redrive", "--runtime", "sdruntime", "--method", "bogus")
    assert result.exit_code == 1
    assert "--method must be auto, move-task or loop, not 'bogus'" in result.output


def test_move_task_cannot_select_ids(in_tmp):
    result = run("dlq", "redrive", "--runtime", "sdruntime", "--id", "a", "--method", "move-task")
    assert result.exit_code == 1
    assert "a message-move task moves the whole DLQ" in result.output


@pytest.mark.parametrize("command", [("dlq", "list", "--runtime", "sdruntime"), ("top", "--once")])
def test_without_a_local_stack_or_stack_name(in_tmp, command):
    result = run(*command)
    assert result.exit_code == 1
    assert "no local stack is running here" in result.output and "--stack" in result.output


def test_a_bad_config_for_a_stack_is_reported(in_tmp):
    (in_tmp / "bad.yaml").write_text("runtimes: []\n")
    result = run("top", "--once", "--stack", "prod", "--config", "bad.yaml")
    assert result.exit_code == 1
    assert "runtimes" in result.output and "Traceback" not in result.output
