"""Every registered dataset checks its parameters before anything is read or drawn (a config's
``data.dataset.params`` are free): out-of-range values were NumPy / PyTorch tracebacks after the reading, or ran on
without end, and are now one ConfigError line naming the dataset and the parameter."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medanomaly.errors import ConfigError
from medanomaly.registry import DATASETS

ROOT = Path(__file__).resolve().parents[3]
NOWHERE = "/nonexistent/medanomaly-bounds"  # never read: the arguments are refused first


def test_every_registered_dataset_checks_its_arguments():
    unchecked = [name for name in DATASETS.names() if not hasattr(DATASETS.get(name), "raw_function")]
    assert not unchecked, f"wrap these loaders in medanomaly.data.bounds.checked: {unchecked}"


@pytest.mark.parametrize("name, params, words", [
    ("busi", {"root": NOWHERE, "seed": -1}, "seed: Input should be greater than or equal to 0"),
    ("busi", {"root": NOWHERE, "image_size": [0, 0]}, "image_size.0: Input should be greater than or equal to 1"),
    ("busi", {"root": NOWHERE, "image_size": [10**6, 10**6]}, "image_size: [1000000, 1000000] is 1,000,000,000,000 "
                                                               "voxels per image; the limit is 67,108,864"),
    ("busi", {"root": NOWHERE, "image_size": [2**40, 2**40]},  # an int64 count wrapped it to 0, under the limit
     "image_size: [1099511627776, 1099511627776] is 1,208,925,819,614,629,174,706,176 voxels per image; the limit is "
     "67,108,864"),
    ("busi", {"root": NOWHERE, "val": float("nan")}, "val: Input should be a finite number"),
    ("busi_lesions", {"root": NOWHERE, "pixel_mm": -0.1}, "pixel_mm: Input should be greater than 0"),
    ("inbreast", {"root": NOWHERE, "margin": -5.0}, "margin: Input should be greater than or equal to 0"),
    ("inbreast_lesions", {"root": NOWHERE, "min_cluster": 0}, "min_cluster: Input should be greater than or equal to 1"),
    ("cbis_ddsm_lesions", {"root": NOWHERE, "uncertain_assessments": [7]},
     "uncertain_assessments.0: Input should be less than or equal to 6"),
    ("medmnist", {"path": NOWHERE, "max_per_split": 0}, "max_per_split: Input should be greater than or equal to 1"),
    ("lidc", {"root": NOWHERE, "cluster_mm": 0.0}, "cluster_mm: Input should be greater than 0"),
    ("lidc_malignancy", {"patch_mm": -5.0}, "patch_mm: Input should be greater than or equal to 4"),
    ("lung_nodule_patches", {"n_nodules": 10**9}, "n_nodules: Input should be less than or equal to 100000"),
    ("lung_nodule_patches", {"diameter_range_mm": [20.0, 4.0]},
     "diameter_range_mm: the range must go from low to high, got [20.0, 4.0]"),
    ("lung_nodule_patches", {"sources": []}, "sources: Tuple should have at least 1 item after validation, not 0"),
    ("lidc_malignancy", {"sources": ["lung1", "lung1"]}, "sources: 'lung1' is named twice"),
    ("mammo_phantom_lesions", {"max_lesions": -1}, "max_lesions: Input should be greater than or equal to 0"),
    ("manifest", {"csv": NOWHERE, "channels": 0}, "channels: Input should be greater than or equal to 1"),
])  # fmt: skip
def test_a_parameter_out_of_bounds_is_one_line_before_anything_is_read(name, params, words):
    with pytest.raises(ConfigError) as error:
        DATASETS.create(name, **params)
    assert str(error.value) == f"dataset {name!r}: {words}"


def test_the_dataset_cannot_be_given_another_image_size_than_the_network(tmp_path):
    """``data.dataset.params.image_size`` went to the loader while the network was built for ``data.image_size``."""
    from medanomaly.classify.engine import load_data
    from medanomaly.config import load_config

    config = yaml.safe_load((ROOT / "configs" / "breast_3class.yaml").read_text())
    config["data"]["dataset"]["params"]["image_size"] = [64, 64]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"^data.dataset.params.image_size=\[64, 64\] contradicts data.image_size "
                                          r"\(\[128, 128\]\); set data.image_size$"):  # fmt: skip
        load_data(load_config(path))
