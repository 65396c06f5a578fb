"""Service config: API keys from config and environment, the key -> owner mapping, bounds."""

import pytest

from app.config import validate
from app.errors import ConfigError
from app.serve.app import resolve_config
from app.serve.commands import app_args
from app.serve.config import API_KEYS_ENV, ServeConfig, parse_api_keys_env, resolve_api_keys
from app.serve.deployments import key_digest


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", {}),
        ("key-aaaa1:alice", {"key-aaaa1": "alice"}),
        (" key-aaaa1:alice , key-bbbb2:bob ,", {"key-aaaa1": "alice", "key-bbbb2": "bob"}),
        ("key=aaaa1:carol", {"key=aaaa1": "carol"}),
    ],
)
def test_parse_api_keys_env(text, expected):
    assert parse_api_keys_env(text) == expected


@pytest.mark.parametrize(
    "text, words",
    [("nokeyowner", "entry 1"), ("short:alice", "8-256"), ("key-aaaa1:", "entry 1"),
     ("key-aaaa1:al ice", "owner"), ("key-aaaa1:alice,key bad1:bob", "entry 2")],
)
def test_parse_api_keys_env_refuses(text, words):
    with pytest.raises(ConfigError, match=words):
        parse_api_keys_env(text)


def test_env_keys_add_to_and_override_config_keys():
    cfg = ServeConfig(api_keys={"key-aaaa1": "alice", "key-bbbb2": "bob"})
    keys = resolve_api_keys(cfg, {API_KEYS_ENV: "key-bbbb2:robert,key-cccc3:carol"})
    assert keys == {"key-aaaa1": "alice", "key-bbbb2": "robert", "key-cccc3": "carol"}


def test_no_keys_at_all_is_refused():
    with pytest.raises(ConfigError, match="no API keys"):
        resolve_api_keys(ServeConfig(), {})


def test_key_digest_maps_each_key_to_its_owner_only():
    owners = {key_digest(k): o for k, o in {"key-aaaa1": "alice", "key-bbbb2": "bob"}.items()}
    assert owners.get(key_digest("key-aaaa1")) == "alice"
    assert owners.get(key_digest("key-aaaa1 ")) is None
    assert owners.get(key_digest("KEY-AAAA1")) is None


@pytest.mark.parametrize(
    "data, words",
    [({"min_seeds": 10, "max_seeds": 5}, "above max_seeds"), ({"api_keys": {"short": "a"}}, "8-256"),
     ({"engine": "not a path"}, "import path"), ({"unknown": 1}, "unknown"), ({"port": 0}, "port")],
)
def test_invalid_config_is_refused(data, words):
    with pytest.raises(ConfigError, match=words):
        validate(ServeConfig, data)


def test_shipped_serve_configs_validate(tmp_path):
    for path in ("configs/serve.yaml", "configs/smoke/serve.yaml"):
        args = app_args(path, ["max_concurrent_jobs=2"], root=str(tmp_path))
        cfg = resolve_config(args)
        assert cfg.max_concurrent_jobs == 2 and cfg.root == str(tmp_path)
        assert resolve_api_keys(cfg, {}) == {"dev-key-change-me": "demo"}


def test_relative_root_becomes_absolute():
    assert resolve_config({"root": "var/x"}).root.startswith("/")
