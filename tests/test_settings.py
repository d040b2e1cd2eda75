import argparse

import pytest

from stedq.settings import Settings, SettingsError, add_settings_arguments, settings_from_args


def parse(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, ["port", "max_batch_size", "max_queue_delay_ms", "batching", "device",
                                    "token", "model"])
    return settings_from_args(parser.parse_args(argv))


def test_defaults(monkeypatch):
    for name in Settings.model_fields:
        monkeypatch.delenv(f"STEDQ_{name.upper()}", raising=False)
    settings = parse([])
    assert settings.port == 50051
    assert settings.metrics_port == 8000
    assert settings.max_batch_size == 32
    assert settings.batching is True
    assert settings.model is None
    assert settings.token is None


def test_env_overrides_default(monkeypatch):
    monkeypatch.setenv("STEDQ_PORT", "6000")
    monkeypatch.setenv("STEDQ_BATCHING", "false")
    monkeypatch.setenv("STEDQ_TOKEN", "s3cret")
    settings = parse([])
    assert settings.port == 6000
    assert settings.batching is False
    assert settings.token.get_secret_value() == "s3cret"


def test_flag_overrides_env(monkeypatch):
    monkeypatch.setenv("STEDQ_PORT", "6000")
    monkeypatch.setenv("STEDQ_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("STEDQ_BATCHING", "false")
    settings = parse(["--port", "7000", "--batching", "--device", "cpu"])
    assert settings.port == 7000
    assert settings.batching is True
    assert settings.device == "cpu"
    assert settings.max_batch_size == 8  # env still applies where no flag was given


def test_invalid_values_are_rejected(monkeypatch):
    monkeypatch.setenv("STEDQ_PORT", "not-a-port")
    with pytest.raises(SettingsError, match="--port / STEDQ_PORT = 'not-a-port'"):
        parse([])
    monkeypatch.delenv("STEDQ_PORT")
    with pytest.raises(SystemExit):
        parse(["--device", "tpu"])  # argparse choices come from the settings' Literal


def test_empty_path_env_means_unset(monkeypatch):
    monkeypatch.setenv("STEDQ_MODEL", "")
    assert parse([]).model is None
