"""The stage's configs load and validate; unknown keys are refused; the CLI has every verb."""

import pytest

from app.banners.config import BannerGenerateConfig, BannersConfig
from app.config import load_config
from app.errors import ConfigError


@pytest.mark.parametrize("model, path", [
    (BannerGenerateConfig, "configs/banners/generate.yaml"),
    (BannerGenerateConfig, "configs/banners/smoke/generate.yaml"),
    (BannersConfig, "configs/banners/banners.yaml"),
    (BannersConfig, "configs/banners/smoke/banners.yaml"),
    (BannersConfig, "configs/banners/digits.yaml"),
])
def test_configs_validate(model, path):
    assert isinstance(load_config(model, path), model)


def test_unknown_key_and_bad_values_are_refused():
    with pytest.raises(ConfigError, match="nope"):
        load_config(BannersConfig, "configs/banners/banners.yaml", ["sweep.nope=1"])
    with pytest.raises(ConfigError, match="select_by"):
        load_config(BannersConfig, "configs/banners/banners.yaml", ["sweep.select_by=inertia"])
    cfg = load_config(BannersConfig, "configs/banners/banners.yaml", ["sweep.k_grid=[12,3]", "sweep.pca_components=16"])
    assert cfg.sweep.k_grid == [3, 12] and cfg.sweep.pca_components == 16


def test_cli_has_the_banner_verbs():
    from app.cli import build_parser

    parser = build_parser()
    for verb in ("generate", "digits", "dedupe", "sweep", "predict", "features", "run"):
        args = parser.parse_args(["banners", verb, "--smoke"])
        assert args.stage == "banners" and callable(args.func)
    assert parser.parse_args(["banners", "run"]).steps == ["dedupe", "sweep", "predict", "features"]
