"""Service config: API keys from config and environment, the key -> owner mapping, bounds."""

import pytest

from app.config import validate
from app.errors import ConfigError
from app.serve.app import resolve_config
from app.serve.commands import app_args
from app.serve.config import (
    API_KEYS_ENV,
    DEV_KEY,
    ServeConfig,
    describe_keys,
    is_loopback,
    parse_api_keys_env,
    resolve_api_keys,
)
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


def test_env_keys_replace_config_keys():
    cfg = ServeConfig(api_keys={"key-aaaa1": "alice", "key-bbbb2": "bob"})
    keys = resolve_api_keys(cfg, {API_KEYS_ENV: "key-bbbb2:robert,key-cccc3:carol"})
    assert keys == {"key-bbbb2": "robert", "key-cccc3": "carol"}
    assert resolve_api_keys(cfg, {API_KEYS_ENV: "  "}) == cfg.api_keys  # blank: the config's


def test_no_keys_at_all_is_refused():
    with pytest.raises(ConfigError, match="no API keys"):
        resolve_api_keys(ServeConfig(), {})


@pytest.mark.parametrize(
    "development, host, env, expected",
    [
        (True, "127.0.0.1", {}, {DEV_KEY: "demo"}),
        (True, "localhost", {}, {DEV_KEY: "demo"}),
        (True, "::1", {}, {DEV_KEY: "demo"}),
        # real keys replace the development key, even in development mode and on any host
        (True, "127.0.0.1", {API_KEYS_ENV: "key-real-001:alice"}, {"key-real-001": "alice"}),
        (True, "0.0.0.0", {API_KEYS_ENV: "key-real-001:alice"}, {"key-real-001": "alice"}),
        (False, "0.0.0.0", {API_KEYS_ENV: "key-real-001:alice"}, {"key-real-001": "alice"}),
    ],
)
def test_development_key_only_in_development_mode(development, host, env, expected):
    assert resolve_api_keys(ServeConfig(development=development, host=host), env) == expected


@pytest.mark.parametrize(
    "cfg, env, words",
    [
        ({"development": False}, {}, "no API keys"),  # the development key needs development mode
        ({"development": True, "host": "0.0.0.0"}, {}, "refusing to serve on 0.0.0.0"),
        ({"development": True, "host": "10.1.2.3"}, {}, "only the published development key"),
        ({"api_keys": {DEV_KEY: "demo"}}, {}, "api_keys lists the published development key"),
        ({"development": True, "api_keys": {DEV_KEY: "x", "key-real-001": "a"}}, {}, "published"),
        ({}, {API_KEYS_ENV: f"{DEV_KEY}:demo"}, "LOOKALIKE_API_KEYS lists the published"),
    ],
)
def test_development_key_misuse_is_refused(cfg, env, words):
    with pytest.raises(ConfigError, match=words):
        resolve_api_keys(ServeConfig(**cfg), env)


@pytest.mark.parametrize("host, loop", [("127.0.0.1", True), ("127.8.0.1", True), ("localhost", True),
                                        ("::1", True), ("0.0.0.0", False), ("192.168.1.2", False),
                                        ("example.org", False), ("", False)])
def test_is_loopback(host, loop):
    assert is_loopback(host) is loop


def test_describe_keys_names_owners_never_keys():
    text = describe_keys({"key-secret-001": "alice", "key-secret-002": "alice", "key-secret-003": "bob"})
    assert text == "3 API key(s) for owner(s) alice, bob"
    assert "secret" not in text
    assert "development mode" in describe_keys({DEV_KEY: "demo"}) and DEV_KEY not in describe_keys({DEV_KEY: "demo"})


def test_key_digest_maps_each_key_to_its_owner_only():
    owners = {key_digest(k): o for k, o in {"key-aaaa1": "alice", "key-bbbb2": "bob"}.items()}
    assert owners.get(key_digest("key-aaaa1")) == "alice"
    assert owners.get(key_digest("key-aaaa1 ")) is None
    assert owners.get(key_digest("KEY-AAAA1")) is None


@pytest.mark.parametrize(
    "data, words",
    [({"min_seeds": 10, "max_seeds": 5}, "above max_seeds"), ({"api_keys": {"short": "a"}}, "8-256"),
     ({"engine": "not a path"}, "import path"), ({"unknown": 1}, "unknown"), ({"port": 0}, "port"),
     ({"per_key": {"max_uploads": 0}}, "max_uploads"), ({"per_key": {"colour": 1}}, "colour"),
     ({"jobs": {"heartbeat_s": 10, "heartbeat_timeout_s": 15}}, "at least twice"),
     ({"retention": {"seeds_after_s": -1}}, "seeds_after_s"), ({"body_min_rate": 0}, "body_min_rate")],
)
def test_invalid_config_is_refused(data, words):
    with pytest.raises(ConfigError, match=words):
        validate(ServeConfig, data)


def test_shipped_serve_configs_validate(tmp_path):
    for path in ("configs/serve.yaml", "configs/smoke/serve.yaml"):
        args = app_args(path, ["max_concurrent_jobs=2", "retention.seeds_after_s=60"], root=str(tmp_path))
        cfg = resolve_config(args)
        assert cfg.max_concurrent_jobs == 2 and cfg.root == str(tmp_path)
        assert cfg.retention.seeds_after_s == 60
        assert resolve_api_keys(cfg, {API_KEYS_ENV: "key-real-001:alice"}) == {"key-real-001": "alice"}
    # the default config needs real keys; the smoke config is development mode on 127.0.0.1
    with pytest.raises(ConfigError, match="no API keys"):
        resolve_api_keys(resolve_config(app_args("configs/serve.yaml", root=str(tmp_path))), {})
    smoke = resolve_config(app_args("configs/smoke/serve.yaml", root=str(tmp_path)))
    assert resolve_api_keys(smoke, {}) == {DEV_KEY: "demo"}
    with pytest.raises(ConfigError, match="refusing"):
        resolve_api_keys(resolve_config(app_args("configs/smoke/serve.yaml", ["host=0.0.0.0"], str(tmp_path))), {})


def test_relative_root_becomes_absolute():
    assert resolve_config({"root": "var/x"}).root.startswith("/")
