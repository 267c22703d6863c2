"""Every config file composes and validates; bad values fail with a message naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from al_sim.config.registry import validate
from al_sim.runtime.errors import ConfigError
from tests.conftest import SHARED_MEDMNIST, compose_config, run_cli

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["dataset", "model", "strategy", "budget", "trainer", "tracking"]
NEEDS = {("dataset", "folder"): ["dataset.root=/nonexistent"]}


def _compose(overrides: list[str]):
    return compose_config(overrides)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"),
                         [(g, o) for g in GROUPS for o in _options(g)])
def test_every_config_file_composes_and_validates(group: str, option: str) -> None:
    cfg = _compose([f"{group}={option}", *NEEDS.get((group, option), [])])
    validate(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    if group in ("model", "strategy", "budget"):  # run names and tags use these names
        assert resolved[group]["name"] == option


def _sweep_values(option: str, key: str) -> list[str]:
    params = compose_config([f"experiment={option}"], hydra=True).hydra.sweeper.params
    return str(params[key]).split(",")


@pytest.mark.slow
@pytest.mark.parametrize("option", _options("experiment"))
def test_every_experiment_runs_as_a_real_sweep(option: str, tmp_path: Path) -> None:
    """Each named sweep, one seed, tiny budget: every strategy it lists composes, runs, finishes."""
    medmnist = _compose([f"experiment={option}"]).dataset.name != "synthetic"
    if medmnist and not SHARED_MEDMNIST.is_dir():
        pytest.skip("needs ../shared/data/medmnist")
    data = ([f"dataset.root={SHARED_MEDMNIST}", "dataset.max_pool=120"] if medmnist
            else ["dataset.n_pool=300", "dataset.n_test=150"])
    proc = run_cli(["-m", f"experiment={option}", "seed=0", "hydra.launcher.n_jobs=1",
                    "budget.initial=20", "budget.query_size=10", "budget.rounds=1",
                    "trainer.epochs=1", "trainer.min_steps=2", "trainer.num_threads=1",
                    "progress=false", "tracking.enabled=false", "tracking.query_grids=false",
                    f"hydra.sweep.dir={tmp_path / 'sweep'}", *data], tmp_path,
                   process=False)  # n_jobs=1: joblib runs the jobs in the launcher's process
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = sorted((tmp_path / "sweep").glob("*/metrics.csv"))
    assert len(jobs) == len(_sweep_values(option, "strategy"))
    ran = {OmegaConf.load(j.parent / "config.yaml").strategy.name for j in jobs}
    assert ran == set(_sweep_values(option, "strategy"))


def test_defaults_match_the_design() -> None:
    cfg = _compose([])
    assert cfg.dataset.name == "synthetic" and cfg.model.name == "simple_cnn"
    assert cfg.strategy.name == "entropy" and cfg.budget.name == "default"
    assert cfg.seed == 0


# Each schema's defaults written out in conf/ (a config's one home; the dataclass repeats them
# for code that builds configs without Hydra). oracle/panel is left out: its schema has no
# default panel, conf/oracle/panel.yaml is one.
SCHEMA_DEFAULTS = ["budget/default", "trainer/default", "tracking/mlflow", "oracle/simulated",
                   "oracle/human", "dataset/synthetic", "dataset/synthetic_chest",
                   "dataset/synthetic_volume", "dataset/medmnist", "dataset/folder"]


def _differences(written: object, schema: object, key: str) -> list[str]:
    """Where a conf file's value differs from its schema's default (interpolations skipped)."""
    if isinstance(written, dict) and isinstance(schema, dict):
        return [d for k, v in written.items() if k != "defaults"
                for d in (_differences(v, schema[k], f"{key}.{k}") if k in schema
                          else [f"{key}.{k}: not in the schema"])]
    if isinstance(written, str) and written.startswith("${"):
        return []
    return [] if written == schema else [f"{key}: {written!r} in conf/, {schema!r} in the schema"]


# Schema fields a conf file leaves out on purpose: the schema is shared with another option.
UNWRITTEN = {"oracle/simulated": {"oracle.image_size"},  # the labelling page's (oracle/human)
             "oracle/human": {"oracle.noise_rate"}}  # an expert's answers are not simulated


def _unwritten(written: dict, schema: dict, key: str) -> list[str]:
    """The schema's fields (nested too) that a conf file does not write out."""
    return [d for k, v in schema.items()
            for d in ([f"{key}.{k}"] if k not in written else
                      _unwritten(written[k], v, f"{key}.{k}")
                      if isinstance(v, dict) and v and isinstance(written[k], dict) else [])]


@pytest.mark.parametrize("path", SCHEMA_DEFAULTS)
def test_the_schema_defaults_are_the_values_in_conf(path: str) -> None:
    """Every knob of the schema is in the file with the schema's default: a user reading
    conf/ sees every setting there is (a config's one home)."""
    from hydra.core.config_store import ConfigStore

    from al_sim.config.registry import register_configs

    register_configs()
    written = OmegaConf.to_container(OmegaConf.load(CONF / f"{path}.yaml"))
    [schema_name] = [f"{ref.split('@')[0].lstrip('/')}/{name}.yaml"
                     for entry in written["defaults"] if isinstance(entry, dict)
                     for ref, name in entry.items() if ref.startswith("/_schemas/")]
    schema = OmegaConf.to_container(ConfigStore.instance().load(schema_name).node,
                                    enum_to_str=True)
    assert _differences(written, schema, path.split("/")[0]) == []
    assert set(_unwritten(written, schema, path.split("/")[0])) == UNWRITTEN.get(path, set())


def test_unknown_option_fails_at_composition() -> None:
    with pytest.raises(ConfigCompositionException, match="strategy"):
        _compose(["strategy=does_not_exist"])


def test_ill_typed_value_fails_at_composition() -> None:
    with pytest.raises(ConfigCompositionException, match="budget.rounds"):
        _compose(["budget.rounds=many"])


def test_unknown_initial_selection_fails_at_composition() -> None:
    with pytest.raises(ConfigCompositionException, match="budget.initial_selection"):
        _compose(["budget.initial_selection=smart"])


def test_unknown_key_fails_at_composition() -> None:
    with pytest.raises(ConfigCompositionException):
        _compose(["budget.round=3"])


# an appended key the schema lacks: (overrides, the key, the real key it is close to)
APPENDED = [(["+budget.round=3"], "budget.round", "budget.rounds"),
            (["+trainer.epoch=3"], "trainer.epoch", "trainer.epochs"),
            (["+tracking.urii=x"], "tracking.urii", "tracking.uri"),
            (["+dataset.n_pools=5"], "dataset.n_pools", "dataset.n_pool"),
            (["+dataset.preprocess.hflips=true"], "dataset.preprocess.hflips",
             "dataset.preprocess.hflip"),
            (["oracle=panel", "+oracle.annotator=[]"], "oracle.annotator", "oracle.annotators"),
            (["+oracle.noise=0.1"], "oracle.noise", "oracle.noise_rate"),
            (["+sed=3"], "sed", "seed")]


@pytest.mark.parametrize(("overrides", "key", "close"), APPENDED, ids=[a[1] for a in APPENDED])
def test_an_appended_key_the_schema_lacks_is_refused_not_ignored(overrides: list[str], key: str,
                                                                 close: str) -> None:
    """``+key=value`` composes (Hydra's own message suggests it for a typo); the run would
    ignore it. Validation names the key, its closest real one and the node's keys."""
    with pytest.raises(ConfigError) as refused:
        validate(_compose(overrides))
    assert f"{key} is not a setting" in str(refused.value)
    assert f"did you mean {close}?" in str(refused.value)


def test_an_open_table_still_takes_new_entries() -> None:
    cfg = _compose(["+trainer.eval_batch_table.cuda-MyNet=256"])
    validate(cfg)
    assert cfg.trainer.eval_batch_table["cuda-MyNet"] == 256


def test_a_misspelt_override_is_one_line_with_the_real_key() -> None:
    from al_sim.run import error_line

    lines = {}
    for override in ("budget.round=3", "strategy.mc_sample=3", "trainer.eval_batch_table.tpu=8"):
        with pytest.raises(ConfigCompositionException) as refused:
            _compose(["strategy=bald", override])
        lines[override] = error_line(refused.value)
    assert "did you mean budget.rounds?" in lines["budget.round=3"]
    assert "its keys: cost_limit, full, initial" in lines["budget.round=3"]
    assert "did you mean strategy.mc_samples?" in lines["strategy.mc_sample=3"]
    # a strategy's knobs are its constructor's: appending one is no fix; a table takes entries
    assert "+strategy" not in lines["strategy.mc_sample=3"]
    assert "+trainer.eval_batch_table.tpu=<value>" in lines["trainer.eval_batch_table.tpu=8"]
    assert all("\n" not in line and "+budget.round" not in line for line in lines.values())


def test_hydra_messages_become_one_line() -> None:
    from al_sim.config.composition import one_line

    hydra_text = ("In 'config': Could not find 'strategy/smartest'\n\nAvailable options in "
                  "'strategy':\n\tbadge\n\tbald\nConfig search path:\n\tprovider=hydra\n")
    assert one_line(hydra_text) == ("In 'config': Could not find 'strategy/smartest'; Available "
                                    "options in 'strategy': badge, bald")
    omegaconf_text = ("Value 'ten' of type 'str' could not be converted to Integer\n"
                      "    full_key: budget.rounds\n    object_type=BudgetConf")
    assert one_line(omegaconf_text) == "Value 'ten' of type 'str' could not be converted to Integer"


@pytest.mark.parametrize("override", ["oracle=panel oracle.aggregation=median",
                                      "budget.stop_when=kappa>=0.9, plateau<0.1"])
def test_an_override_hydra_cannot_parse_is_named(override: str) -> None:
    """Hydra's own line ('mismatched input '=' expecting <EOF>; See https://...') names none:
    two overrides in one quoted argument, or an unquoted value with a space."""
    from hydra.errors import OverrideParseException

    from al_sim.config.composition import composition_error_line

    with pytest.raises(OverrideParseException) as err:
        _compose([override])
    line = composition_error_line(err.value)
    assert line is not None and "\n" not in line and "https://" not in line
    assert line.startswith(f"error: cannot parse the override {override!r} (")
    assert line.endswith("give one key=value per argument and quote a value holding spaces or "
                         "brackets, e.g. 'budget.stop_when=\"kappa>=0.99\"'")


@pytest.mark.parametrize(
    ("override", "field"),
    [("budget.query_size=0", "budget.query_size"), ("budget.initial=-5", "budget.initial"),
     ("budget.rounds=-1", "budget.rounds"), ("trainer.lr=0", "trainer.lr"),
     ("model.dropout=1.5", "model.dropout"), ("trainer.device=tpu", "trainer.device"),
     ("trainer.eval_batch_size=0", "trainer.eval_batch_size"),
     ("trainer.eval_batch_size=big", "trainer.eval_batch_size"),
     ("trainer.precision=fp8", "trainer.precision"),
     ("+trainer.eval_batch_table.tpu=64", "trainer.eval_batch_table"),
     ("trainer.eval_batch_table.cpu=0", "trainer.eval_batch_table.cpu"),
     ("trainer.resident_memory_fraction=1.5", "trainer.resident_memory_fraction")],
)
def test_semantic_errors_name_the_field(override: str, field: str) -> None:
    cfg = _compose([override])
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        validate(cfg)


@pytest.mark.parametrize("path", sorted(str(p.relative_to(CONF)) for g in
                                        ("dataset", "model", "strategy")
                                        for p in (CONF / g).glob("*.yaml")))
def test_every_instantiable_file_shows_its_target(path: str) -> None:
    assert "_target_" in OmegaConf.load(CONF / path)


def test_every_callback_node_shows_its_target() -> None:
    for option in _options("callbacks"):
        nodes = OmegaConf.load(CONF / "callbacks" / f"{option}.yaml")
        assert nodes and all("_target_" in node for node in nodes.values())


def test_our_refusal_inside_hydras_instantiate_is_said_alone() -> None:
    from hydra.errors import InstantiationException

    from al_sim.run import error_line

    ours = ConfigError("hydra.launcher.memory_fraction=2.0 is not in (0, 1]")
    try:
        try:
            raise ours
        except ConfigError as exc:
            raise InstantiationException("Error in call to target 'x.Launcher':\n"
                                         f"{exc!r}") from exc
    except InstantiationException as wrapped:
        assert error_line(wrapped) == f"error: {ours}"
