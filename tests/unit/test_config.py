"""Config: YAML loading, validation by the task's class, errors naming the file."""

from __future__ import annotations

import pydantic
import pytest
import yaml

from medanomaly import registry
from medanomaly.config import ComponentConfig, RunConfig, Section, load_config, parse_config, save_config
from medanomaly.errors import ConfigError


class ToyModel(Section):
    width: int = 8


class ToyConfig(RunConfig):
    model: ComponentConfig
    toy: ToyModel = ToyModel()


class ToyTask:
    config_class = ToyConfig


@pytest.fixture
def toy_tasks(monkeypatch):
    tasks = registry.Registry("task")
    tasks.register("toy")(ToyTask())
    monkeypatch.setattr(registry, "TASKS", tasks)
    return tasks


def test_config_load_validate_save(tmp_path, toy_tasks):
    path = tmp_path / "toy.yaml"
    path.write_text("task: toy\nseed: 3\nmodel: {name: compact_cnn, params: {depth: 2}}\ntoy: {width: 16}\n")
    cfg = load_config(path)
    assert isinstance(cfg, ToyConfig) and cfg.seed == 3 and cfg.toy.width == 16
    assert cfg.model.params == {"depth": 2}
    saved = save_config(cfg, tmp_path / "run")
    assert yaml.safe_load(saved.read_text())["toy"] == {"width": 16}
    assert load_config(saved).model_dump() == cfg.model_dump()
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.seed = 4  # frozen


def test_config_errors_name_the_file(tmp_path, toy_tasks):
    bad = tmp_path / "typo.yaml"
    bad.write_text("task: toy\nmodel: {name: a}\ntoy: {widht: 3}\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: toy.widht: Extra inputs are not permitted"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("task: nope\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml: unknown task 'nope'; valid: toy"):
        load_config(unknown)
    # a key given twice: YAML loaders kept the last without a word (``width: 4`` then ``width: 4096`` ran 4096)
    (tmp_path / "twice.yaml").write_text("task: toy\nmodel: {name: a}\ntoy:\n  width: 4\n  width: 4096\n")
    with pytest.raises(ConfigError, match=r"twice\.yaml: key 'width' given twice in one mapping \(lines 4 and 5\)"):
        load_config(tmp_path / "twice.yaml")


def test_a_merge_key_may_still_be_overridden(tmp_path, toy_tasks):
    (tmp_path / "merged.yaml").write_text("task: toy\nmodel: {name: a}\ntoy:\n  <<: {width: 4}\n  width: 8\n")
    assert load_config(tmp_path / "merged.yaml").toy.width == 8
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping with a 'task' key"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("task: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match="model: Field required"):
        parse_config({"task": "toy"})


def _alias_bomb(levels: int) -> str:
    """``levels`` anchors, each a list of nine aliases of the one before: 9 ** levels values once expanded."""
    anchors = ['&l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    anchors += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return f"task: toy\nmodel: {{name: a, params: {{p: [{', '.join(anchors)}]}}}}\n"


def test_hostile_yaml_is_refused_before_it_is_built(tmp_path, toy_tasks):
    """A "billion laughs" alias file used to grow memory without end (6.8 GB in two minutes), 50,000 nested
    brackets ended in a RecursionError trace: each is one line naming the file, decided before building."""
    cases = {
        "bomb.yaml": (_alias_bomb(9), "expands to more than 100,000 values"),
        "deep.yaml": ("task: toy\nname: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested deeper than 64 levels"),
        "loop.yaml": ("task: toy\nname: &n [*n]\n", "alias refers to itself"),
        "huge.yaml": ("task: toy\n#" + "x" * (2 << 20) + "\n", "over the 1,048,576-byte limit"),
    }
    for name, (text, reason) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=rf"{name}: .*{reason}"):
            load_config(tmp_path / name)


def test_yaml_aliases_within_the_limits_still_load(tmp_path, toy_tasks):
    path = tmp_path / "shared.yaml"
    path.write_text(_alias_bomb(4) + "toy: {width: 4}\n")  # 9 ** 4 = 6,561 values: a legitimate size
    cfg = load_config(path)
    assert len(cfg.model.params["p"]) == 4 and cfg.model.params["p"][3][0][0][0] == ["x"] * 9


def _refusal(tmp_path, config: str, where: tuple[str, ...], value) -> str:
    """The one-line error of configs/<config> with the value at ``where`` (keys, created as needed) replaced."""
    from pathlib import Path

    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / config).read_text())
    node = data
    for key in where[:-1]:
        node = node.setdefault(key, {})
    node[where[-1]] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    return str(error.value).removeprefix(f"{path}: ")


@pytest.mark.parametrize("config, section, key, value, words", [
    ("breast_mammo_detect_tiny.yaml", "train", "patch_size", [1, 33, 31],
     "train.patch_size [1, 33, 31] must be a multiple of [1, 4, 4] (z, y, x) for heatmap_unet, e.g. [1, 32, 28]"),
    ("breast_mammo_detect_tiny.yaml", "infer", "roi_size", [1, 95, 96],
     "infer.roi_size [1, 95, 96] must be a multiple of [1, 4, 4] (z, y, x) for heatmap_unet, e.g. [1, 92, 96]"),
    ("lung_nodule_tiny.yaml", "train", "patch_size", [7, 32, 32],
     "train.patch_size [7, 32, 32] must be a multiple of [2, 4, 4] (z, y, x) for nodule_unet, e.g. [6, 32, 32]"),
    ("lung_nodule_tiny.yaml", "infer", "roi_size", [8, 64, 66],
     "infer.roi_size [8, 64, 66] must be a multiple of [2, 4, 4] (z, y, x) for nodule_unet, e.g. [8, 64, 64]"),
])  # fmt: skip
def test_a_window_the_network_cannot_take_is_one_line_before_any_work(tmp_path, config, section, key, value, words):
    """A patch or sliding window the U-Net's poolings do not divide was a tensor-size traceback after the data was
    simulated (train) or at the first window (detect)."""
    assert _refusal(tmp_path, config, (section, key), value) == f"{words} (1 error(s))"


@pytest.mark.parametrize("section, key, value, words", [
    ("data", "train", [], "data: train names no brain: give one"),
    ("data", "val", [], "data: val names no brain: give one"),
    ("data", "train", ["ch2", "mni152", "ch2"], "data: train names 'ch2' twice: each volume counts once"),
    ("evaluate", "cases", ["brain2", "brain2"], "evaluate.cases: cases names 'brain2' twice: each volume counts once"),
    ("threshold", "sigmas", [], "threshold.sigmas: Tuple should have at least 1 item after validation, not 0"),
])  # fmt: skip
def test_anomaly_lists_name_each_volume_once(tmp_path, section, key, value, words):
    """An empty training list was a NumPy traceback after the data work; a brain named 50 times trained on 50 copies
    of it without a word."""
    assert _refusal(tmp_path, "anomaly_tiny.yaml", (section, key), value) == f"{words} (1 error(s))"


@pytest.mark.parametrize("sources, words", [
    ([], "simulation.sources names no chest CT: give one (or a luna16 section)"),
    ([{"case": "lung1"}, {"case": "lung2"}, {"case": "lung1"}],
     "simulation.sources: names the chest CT 'lung1' twice: each source counts once (more scans per source: "
     "train_scans_per_source)"),
])  # fmt: skip
def test_lung_sources_name_each_ct_once(tmp_path, sources, words):
    """No source was a traceback after the data work; lung1 listed 50 times ran on without end."""
    assert _refusal(tmp_path, "lung_nodule_tiny.yaml", ("simulation", "sources"), sources) == f"{words} (1 error(s))"


@pytest.mark.parametrize("where, value, words", [
    (("model", "params", "dropout"), float("nan"), "model.params: dropout is nan: give a finite number (1 error(s))"),
    (("data", "dataset", "params", "seed"), float("nan"),
     "data.dataset.params: seed is nan: give a finite number (1 error(s))"),
])  # fmt: skip
def test_a_component_parameter_that_is_not_finite_is_refused_at_load(tmp_path, where, value, words):
    """A NaN dropout built, then failed at the first forward pass; a NaN seed failed in NumPy: tracebacks."""
    assert _refusal(tmp_path, "breast_3class.yaml", where, value) == words


@pytest.mark.parametrize("where, value, words", [
    (("train", "threads"), 999, "train.threads: Input should be less than or equal to 256 (2 error(s))"),
    (("train", "threads"), "many", "train.threads: expected a whole number or 'auto', got 'many' (2 error(s))"),
    (("train", "patch_size"), [8, 48], "train.patch_size: item 2 (counting from 0) is missing, got [8, 48] (1 error(s))"),
    (("simulation", "sources"), [5], "simulation.sources.0: Input should be a mapping (key: value) (1 error(s))"),
    (("luna16", "root"), [1], "luna16.root: Input is not a valid path (1 error(s))"),
])  # fmt: skip
def test_a_union_or_a_short_tuple_is_said_plainly(tmp_path, where, value, words):
    """pydantic's first error was the union member's label ("train.threads.constrained-int: ...") or a bare "Field
    required" at a tuple's index ("train.patch_size.2")."""
    assert _refusal(tmp_path, "lung_nodule_tiny.yaml", where, value) == words


@pytest.mark.parametrize("params, words", [
    ({"n_patients": 10**9}, "n_patients: Input should be less than or equal to 100000"),
    ({"size": 10**9}, "size: Input should be less than or equal to 4096"),
    ({"split_fractions": [-0.6, -0.2, -0.2]}, "split_fractions.0: Input should be greater than or equal to 0"),
    ({"split_fractions": [0.6, 0.6, 0.2]}, "split_fractions: train / val / test fractions must add up to 1"),
    ({"two_view_fraction": 2.0}, "two_view_fraction: Input should be less than or equal to 1"),
])  # fmt: skip
def test_a_phantom_cohort_checks_its_parameters_before_drawing(tmp_path, params, words):
    """The classification datasets' params are free: 10^9 patients ran on without end, 10^9-pixel images were a
    NumPy traceback, negative split fractions were used as they were."""
    from medanomaly.registry import DATASETS

    with pytest.raises(ConfigError) as error:
        DATASETS.create("mammo_phantom", cache_dir=tmp_path, **params)
    assert str(error.value).startswith(f"dataset 'mammo_phantom': {words}")
    assert not any(tmp_path.iterdir())


def test_a_fusion_encoder_deeper_than_its_crops_is_refused_at_load(tmp_path):
    """Six width levels on 32 x 32 crops pooled them to nothing: a PyTorch traceback at the first batch."""
    words = _refusal(tmp_path, "fusion_brain_sim.yaml", ("model", "params", "widths"), [4, 4, 4, 4, 4, 4, 4])
    assert words == ("model: 7 width levels halve a 64-pixel crop side 7 times, to nothing; use at most 6 levels or "
                     "larger crops (data.size) (1 error(s))")


@pytest.mark.parametrize("value", ["abc", "1.5", "-1", "²", "1" * 13, "+3", "0x10", "1_000", "5"])
def test_a_whole_number_from_the_environment_is_ascii_digits_in_range(monkeypatch, value: str) -> None:
    """``int()`` takes '²', '+3', '1_000' and 4,300-digit strings; the environment's numbers are 1 to 12 ASCII digits in
    the caller's range, anything else one ConfigError naming the variable (blank = the default)."""
    from medanomaly.config import env_whole_number

    monkeypatch.setenv("MEDANOMALY_TEST_NUMBER", value)
    with pytest.raises(ConfigError, match=r"environment variable MEDANOMALY_TEST_NUMBER=.* is not a whole number from 0 to 4"):
        env_whole_number("MEDANOMALY_TEST_NUMBER", 1, high=4)
    monkeypatch.setenv("MEDANOMALY_TEST_NUMBER", "  ")
    assert env_whole_number("MEDANOMALY_TEST_NUMBER", 1, high=4) == 1
    monkeypatch.setenv("MEDANOMALY_TEST_NUMBER", " 4 ")
    assert env_whole_number("MEDANOMALY_TEST_NUMBER", 1, high=4) == 4


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-8-sig"])
def test_a_config_saved_by_windows_tools_loads(tmp_path, toy_tasks, encoding):
    """PowerShell 5's ``>`` and Notepad's "Unicode" save UTF-16 with a byte-order mark, which YAML allows: it was
    "cannot read config (UnicodeDecodeError)". CRLF line ends and a UTF-8 byte-order mark load too."""
    import codecs

    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}.get(encoding, b"")
    text = "task: toy\r\nmodel: {name: a}\r\ntoy:\r\n  width: 8\r\n"
    (tmp_path / "win.yaml").write_bytes(bom + text.encode(encoding))
    assert load_config(tmp_path / "win.yaml").toy.width == 8


def test_a_config_that_is_not_utf8_names_the_byte(tmp_path, toy_tasks):
    (tmp_path / "latin1.yaml").write_bytes("task: toy\nname: café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text \(byte 19 of the file\): save it as UTF-8"):
        load_config(tmp_path / "latin1.yaml")
