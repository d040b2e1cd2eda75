import argparse

import pytest
from pydantic import SecretStr

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


def test_misspelled_variables_are_named_with_the_closest_setting():
    from stedq.settings import unknown_variables

    warnings = unknown_variables({"STEDQ_MAX_BATCHSIZE": "8", "STEDQ_LOGLEVEL": "DEBUG", "STEDQ_PORT": "1",
                                  "STEDQ_STUDY_PORT": "9", "STEDQ_FROBNICATE": "1", "PATH": "/bin"})
    assert warnings == [
        "environment variable STEDQ_FROBNICATE is not a stedq setting and is ignored",
        "environment variable STEDQ_LOGLEVEL is not a stedq setting and is ignored; did you mean STEDQ_LOG_LEVEL?",
        "environment variable STEDQ_MAX_BATCHSIZE is not a stedq setting and is ignored; "
        "did you mean STEDQ_MAX_BATCH_SIZE?",
    ]


def test_the_server_warns_at_start_up_and_logs_its_effective_settings(monkeypatch, caplog):
    from tests.server_support import ThreadedServer, model_bundle, server_settings

    monkeypatch.setenv("STEDQ_MAX_BATCHSIZE", "8")
    settings = server_settings(model_bundle()).model_copy(update={"token": SecretStr("s3cret")})
    with caplog.at_level("INFO"), ThreadedServer(settings):
        pass
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "STEDQ_MAX_BATCHSIZE is not a stedq setting and is ignored; did you mean STEDQ_MAX_BATCH_SIZE?" in text
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stedq serving model")]
    assert f"max_batch_size={settings.max_batch_size}" in line and "token=***" in line and "s3cret" not in text
