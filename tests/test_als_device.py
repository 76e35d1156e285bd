"""Where ALS trains (``CRATEDIGGER_ALS_USE_GPU``): implicit's CUDA solver when asked for and
present, its CPU solver otherwise, and a clear refusal when the GPU is demanded but absent."""

from __future__ import annotations

from pathlib import Path

import implicit.gpu
import numpy as np
import pytest

from jobs.training import ResolvedParams
from recsys.als import ALSParams, train_als, use_gpu
from recsys.blend import ModelConfig
from recsys.settings import ConfigError, Settings, load_settings
from tests.test_recommenders import checker_board

NO_CUDA = pytest.mark.skipif(implicit.gpu.HAS_CUDA, reason="this implicit has CUDA")


def test_auto_follows_the_installed_implicit_and_false_never_uses_the_gpu() -> None:
    assert use_gpu("auto") is bool(implicit.gpu.HAS_CUDA)
    assert use_gpu("false") is False


@NO_CUDA
def test_a_gpu_demanded_without_cuda_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CRATEDIGGER_ALS_USE_GPU=true"):
        use_gpu("true")
    settings = Settings(data_dir=tmp_path, als_use_gpu="true", use_tuned_params=False)
    with pytest.raises(ValueError, match="no CUDA"):
        ResolvedParams.of(settings)


@NO_CUDA
def test_the_weekly_configuration_trains_on_the_cpu_here_and_gets_the_factors(
    tmp_path: Path,
) -> None:
    config = ResolvedParams.of(Settings(data_dir=tmp_path, use_tuned_params=False)).config
    assert config.gpu is False
    matrix = checker_board()
    params = ALSParams(factors=4, regularization=0.01, alpha=10.0, iterations=5)
    model = ModelConfig(params, gpu=config.gpu).train(matrix)
    reference = train_als(matrix, params)
    np.testing.assert_array_equal(model.item_factors, reference.item_factors)
    assert model.item_factors.dtype == np.float32


@pytest.mark.parametrize("value", ["yes", "gpu", "", "AUTO!"])
def test_a_bad_device_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CRATEDIGGER_ALS_USE_GPU", value)
    with pytest.raises(ConfigError, match="CRATEDIGGER_ALS_USE_GPU"):
        load_settings()
