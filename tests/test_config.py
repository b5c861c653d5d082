"""config.py: defaults, camelCase parsing (flat or under "parafill"), validation keeps the old."""

from __future__ import annotations

from lsp_server.config import Settings, parse_settings, to_json


def test_defaults():
    s = Settings()
    assert s.model_path is None and s.schedule == "threshold" and s.language_enabled("python")
    assert s.language_enabled("anything")  # "*" by default


def test_parse_flat_and_nested():
    s, problems = parse_settings({"lineBudget": 16, "debounceMs": 0})
    assert not problems and s.line_budget == 16 and s.debounce_ms == 0
    s2, problems = parse_settings(
        {"parafill": {"schedule": "fixed", "steps": 4, "languages": ["python"]}}, s
    )
    assert not problems and s2.schedule == "fixed" and s2.steps == 4 and s2.line_budget == 16
    assert s2.language_enabled("python") and not s2.language_enabled("go")
    assert s2.budgets().line == 16


def test_invalid_settings_keep_previous():
    base = Settings(line_budget=20)
    s, problems = parse_settings(
        {"lineBudget": -1, "device": "tpu", "threshold": "high", "steps": True}, base
    )
    assert s is base
    assert len(problems) == 4 and any("lineBudget" in p for p in problems)
    s, problems = parse_settings("nonsense", base)
    assert s is base and problems
    s, problems = parse_settings({"parafill": 3}, base)
    assert s is base and problems


def test_unknown_keys_and_none():
    s, problems = parse_settings({"trace": {"server": "verbose"}, "serverPath": "/x"})
    assert not problems and s == Settings()
    assert parse_settings(None) == (Settings(), [])
    s, problems = parse_settings({"modelPath": None, "steps": None, "logFile": "/tmp/x.log"})
    assert not problems and s.log_file == "/tmp/x.log"
    s, problems = parse_settings({"modelPath": "", "logFile": ""})  # a cleared editor field
    assert not problems and s.model_path is None and s.log_file is None


def test_to_json_round_trip():
    s = Settings(line_budget=9, languages=("python",))
    again, problems = parse_settings(to_json(s))
    assert not problems and again == s
