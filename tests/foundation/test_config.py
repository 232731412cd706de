"""The config loader: typo suggestions, env interpolation, overrides, redaction."""

from __future__ import annotations

import pytest
import yaml

from llamaduo.config import Config, closest, load_config
from llamaduo.docs import config_template
from llamaduo.errors import ConfigError


def write(tmp_path, text: str):
    path = tmp_path / "llamaduo.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLAMADUO_CONFIG", raising=False)
    cfg = load_config()
    assert cfg.train.learning_rate == 2e-4
    assert [j.model for j in cfg.service.judge] == ["gpt-4o-mini"]


def test_missing_required_file_names_init(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="llamaduo init"):
        load_config(required=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("servce: {}", "Did you mean `service`?"),
        ("service:\n  genrator: {}", "Did you mean `service.generator`?"),
        ("service:\n  judge:\n    - modle: x", "Did you mean `service.judge.0.model`?"),
        ("train:\n  learning_rat: 0.1", "Did you mean `train.learning_rate`?"),
    ],
)
def test_unknown_key_suggests_the_closest(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_wrong_type_and_provider_typo_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"`train.epochs`.*'many'"):
        load_config(write(tmp_path, "train:\n  epochs: many"))
    with pytest.raises(ConfigError, match=r"'opneai', not one of 'openai', 'anthropic' or 'gemini'"):
        load_config(write(tmp_path, "service:\n  generator:\n    provider: opneai"))


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"at line \d+, column \d+"):
        load_config(write(tmp_path, "train:\n  epochs: [1\n"))


def test_env_interpolation_with_default(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_MODEL", "claude-sonnet-4")
    path = write(tmp_path, "service:\n  judge:\n    provider: anthropic\n    model: ${JUDGE_MODEL}\n  generator:\n    model: ${GEN:-gpt-4.1}\n")
    cfg = load_config(path)
    assert cfg.service.judge[0].model == "claude-sonnet-4"
    assert cfg.service.generator.model == "gpt-4.1"


def test_unset_env_var_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match=r"\$\{NOPE_NOT_SET\}.*Export NOPE_NOT_SET"):
        load_config(write(tmp_path, "project:\n  name: ${NOPE_NOT_SET}\n"))


def test_set_overrides_parse_yaml_values_and_reach_lists(tmp_path):
    path = write(tmp_path, "service:\n  judge:\n    - model: a\n    - model: b\n")
    cfg = load_config(path, ["train.epochs=3", "service.judge.1.model=c", "evaluate.thresholds=[60, 80]", "service.budget_usd=2.5"])
    assert cfg.train.epochs == 3
    assert [j.model for j in cfg.service.judge] == ["a", "c"]
    assert cfg.evaluate.thresholds == [60, 80]
    assert cfg.service.budget_usd == 2.5


@pytest.mark.parametrize("bad", ["train.epochs", "=3", "service.judge.5.model=x"])
def test_bad_overrides(tmp_path, bad):
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, ""), [bad])


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    sub = tmp_path / "proj"
    sub.mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(sub, "project:\n  workdir: work\n"))
    assert cfg.path("data") == (sub / "work" / "data").resolve()


def test_redaction_hides_secret_values_but_keeps_env_names():
    from llamaduo.config import redact

    out = redact({"api_key_env": "OPENAI_API_KEY", "api_keys": ["sk-secret"], "nested": {"token": "t0k"}, "model": "m"})
    assert out == {"api_key_env": "OPENAI_API_KEY", "api_keys": ["***"], "nested": {"token": "***"}, "model": "m"}


def test_init_template_round_trips_to_the_defaults():
    raw = yaml.safe_load(config_template(project_name="demo"))
    assert Config.model_validate(raw).model_dump() == Config(project={"name": "demo"}).model_dump()


def test_closest_prefers_a_swap_over_a_deletion():
    assert closest("modle", ["mode", "model", "provider"]) == "model"
    assert closest("zzzzzz", ["mode", "model"]) is None
