"""Every config group option composes against its schema; typos, wrong types and bad values fail at once."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from toolkit import pipeline
from toolkit.errors import UserError
from toolkit.settings import CONF_DIR, register_schemas

SCHEMAS = register_schemas(CONF_DIR)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _available(group: str) -> list[str]:
    """The options whose code imports here (a part needing a missing extra is left out)."""
    return [o for o in _options(group) if (group, o) in SCHEMAS]


@pytest.fixture()
def compose_cfg():
    """compose(overrides) with the project's conf folder and its schemas."""

    def _compose(overrides: list[str]):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=overrides, return_hydra_config=False)

    return _compose


def test_default_config_composes_and_resolves(compose_cfg):
    cfg = compose_cfg([])
    assert cfg.tracker._target_ == "adapters.local.LocalTracker"
    assert cfg.tracker.path is None
    assert cfg.recipe._target_ == "toolkit.recipes.lr_bs_sweep.LrBsSweep"
    assert list(cfg.analysis) == ["minima"]
    job = pipeline.resolve(cfg)
    assert job.analyses[0].settings.horizons == "pow2" and job.selection.name_regex is None


@pytest.mark.parametrize("tracker", _available("tracker"))
def test_every_tracker_composes_typed(compose_cfg, tracker):
    cfg = compose_cfg([f"tracker={tracker}"])
    assert OmegaConf.get_type(cfg.tracker) is SCHEMAS[("tracker", tracker)]
    assert "select" not in cfg.tracker  # selection is one top-level node, shared by every tracker
    assert set(cfg.select) == {"name_regex", "config", "state", "tags", "run_ids"}


@pytest.mark.parametrize("recipe", _available("recipe"))
def test_every_recipe_composes_and_resolves(compose_cfg, recipe):
    cfg = compose_cfg([f"recipe={recipe}", "analysis=[]"])
    assert isinstance(pipeline.resolve(cfg).recipe.settings, SCHEMAS[("recipe", recipe)])


@pytest.mark.parametrize("analysis", _available("analysis"))
def test_every_analysis_composes_under_its_own_key(compose_cfg, analysis):
    cfg = compose_cfg([f"analysis=[{analysis}]"])
    assert list(cfg.analysis) == [analysis]
    part = pipeline.resolve(cfg).analyses[0]
    assert part.name == analysis and isinstance(part.settings, SCHEMAS[("analysis", analysis)])


def test_several_analyses_at_once(compose_cfg):
    names = _available("analysis")
    cfg = compose_cfg([f"analysis=[{','.join(names)}]"])
    assert sorted(cfg.analysis) == names


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes_and_resolves(compose_cfg, experiment):
    needs = {"porian": ["recipe.path=experiment_results.pickle.xz"]}  # the preset's data file is the user's
    cfg = compose_cfg([f"experiment={experiment}", *needs.get(experiment, [])])
    if any(("analysis", a) not in SCHEMAS for a in cfg.analysis):
        pytest.skip(f"{experiment} needs an extra")
    job = pipeline.resolve(cfg)
    assert job.recipe.settings is not None and len(job.analyses) >= 1


@pytest.mark.parametrize("override, key", [
    ("analysis.minima.fitk=3", "fitk"),
    ("tracker.pth=x", "pth"),
    ("recipe.seq_lenn=1024", "seq_lenn"),
    ("cache.dirr=x", "dirr"),
    ("select.name=x", "name"),
    ("analysis.minima.bootstrap.nn=3", "nn"),
])
def test_a_typo_fails_at_compose_time_naming_the_key(compose_cfg, override, key):
    with pytest.raises(Exception, match=key):
        compose_cfg([override])


@pytest.mark.parametrize("override, key", [
    ("analysis.minima.weighted=maybe", "weighted"),
    ("analysis.minima.bootstrap.n=lots", "bootstrap.n"),
    ("analysis.minima.fit_axis=loss", "fit_axis"),
    ("recipe.seq_len=abc", "seq_len"),
    ("progress=sometimes", "progress"),
])
def test_a_wrong_type_or_choice_fails_at_compose_time(compose_cfg, override, key):
    with pytest.raises(Exception, match=key.replace(".", r"\.")):
        compose_cfg([override])


@pytest.mark.parametrize("override, key", [
    ("analysis.minima.fit_k=2", "fit_k"),
    ("analysis.minima.bootstrap.level=1.5", "bootstrap.level"),
    ("analysis.minima.avg_rel_from=1", "avg_rel_from"),
    ("analysis.minima.horizons=[abc]", "horizons"),
    ("tracker=wandb tracker.per_page=0", "tracker: per_page=0; expected an integer >= 1"),
    ("tracker=mlflow tracker.max_workers=0", "tracker: max_workers=0; expected an integer >= 1"),
    ("tracker=aim tracker.timeout=0", "tracker: timeout=0.0; expected a number of seconds > 0"),
    ("tracker=tensorboard tracker.workers=0", "tracker: workers=0; expected an integer >= 1"),
])
def test_an_out_of_range_value_fails_before_any_work(compose_cfg, override, key):
    cfg = compose_cfg(override.split())
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        pipeline.resolve(cfg)


def test_a_typo_in_an_experiment_file_fails_at_compose_time(tmp_path):
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "experiment" / "typo.yaml").write_text(
        "# @package _global_\nanalysis:\n  minima:\n    horizon: [268435456]\n")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(Exception, match="horizon"):
            compose("config", overrides=["experiment=typo"])


def test_select_config_takes_keys_no_file_lists(compose_cfg):
    from toolkit.cli import prepare_argv

    overrides = prepare_argv(["select.config.bs=[64,128]", "select.config.optim.lr=0.001"])
    cfg = compose_cfg(overrides)
    assert OmegaConf.to_container(cfg.select.config) == {"bs": [64, 128], "optim": {"lr": 0.001}}


def test_config_files_need_no_module_key():
    for path in Path(CONF_DIR).rglob("*.yaml"):
        assert "\nmodule:" not in path.read_text(), path
