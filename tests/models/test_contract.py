"""The contract every registered model keeps (tinygen/models/base.py), checked for each entry of
tinygen.models.MODULES with its class's tiny_config: build it, take two training steps, round-trip a
checkpoint, and

    generative models       sample(n) is a NumPy float array (n, 1, 28, 28) in [0, 1];
                            conditional ones draw other images for another label (same seed) and refuse
                            a bad label by name; unconditional ones refuse a label
    image-to-image models   sample(n, condition=images) as above, and nothing without a condition
    classifiers             predict(images) gives labels in 0..9, evaluate(images, labels) accuracies

and visualize(images, labels, path) draws the picture the trainer keeps as samples_latest.png.

A new model is covered by registering it and giving its class a tiny_config.
"""
import math

import numpy as np
import pytest
from PIL import Image

from tinygen import data, io, text
from tinygen.models import MODULES, build_model, get_model_class, load_model, registered_name, save_model
from tinygen.models.base import Model

# Tiny configs of the models whose files are being rewritten: each moves into its class as tiny_config,
# then its entry here goes (test_pending_tiny_configs_are_still_needed says when).
PENDING_TINY = {}  # name -> tiny config, for a model whose class does not carry one yet


def tiny_config(name):
    cls = get_model_class(name)
    if cls.__dict__.get("tiny_config") is not None:
        return cls.tiny_config
    if name in PENDING_TINY:
        return PENDING_TINY[name]
    pytest.fail(f"{name}: {cls.__module__}.{cls.__name__} has no tiny_config; give the class one "
                f"(Config overrides that train in well under a second; see tinygen/models/base.py)")


def a_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 1, 28, 28), dtype=np.uint8), np.arange(n) % data.N_CLASSES


def check_images(x, n):
    assert isinstance(x, np.ndarray) and x.dtype.kind == "f", type(x)
    assert x.shape == (n, 1, 28, 28), x.shape
    assert np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0, (x.min(), x.max())


def sample_with_seed(model, n, seed, **condition):
    model.rng = np.random.default_rng(seed)
    return model.sample(n, **condition)


def with_stages(name, tmp_path):
    """The tiny config of `name`, with a tiny checkpoint of each stage it builds on (cls.stages: config field
    -> the model it names) made in tmp_path: untrained, but real, and named as a user names theirs."""
    config = dict(tiny_config(name))
    for field, stage in getattr(get_model_class(name), "stages", {}).items():
        path = tmp_path / f"{field}.npz"
        save_model(build_model(stage, with_stages(stage, tmp_path)), path)
        config[field] = str(path)
    return config


@pytest.mark.parametrize("name", list(MODULES))
def test_the_model_contract(name, tmp_path):
    model = build_model(name, with_stages(name, tmp_path))
    assert isinstance(model, Model) and model.name == name
    model.rng = np.random.default_rng(0)
    optimizers = model.configure_optimizers()
    images, labels = a_batch()

    # ---- two training steps change the weights and log finite numbers
    before = model.state_dict()
    for _ in range(2):
        logs = model.training_step(model.prepare_batch(images, labels), optimizers)
        assert logs and all(math.isfinite(float(v)) for v in logs.values()), logs
    after = model.state_dict()
    assert any(not np.array_equal(before[k], after[k]) for k in after), f"{name}: training changed nothing"

    # ---- a checkpoint round trip: the same class and config, the weights sampling uses (EMA where kept)
    ema = getattr(model, "ema", None)
    if ema is not None:
        with ema.average_parameters(model):
            expected = model.state_dict()
    else:
        expected = after
    save_model(model, tmp_path / "model.npz")
    loaded, meta = load_model(tmp_path / "model.npz", name)
    assert type(loaded) is type(model) and meta["model"] == name
    assert loaded.config == model.config
    state = loaded.state_dict()
    assert state.keys() == expected.keys()
    for k in expected:
        np.testing.assert_array_equal(state[k], expected[k], err_msg=f"{name}: {k} after load_model")
    if ema is not None:
        for k, v in ema.shadow.items():
            np.testing.assert_array_equal(loaded.ema.shadow[k], v, err_msg=f"{name}: EMA {k} after load_model")

    # ---- what the model does
    if hasattr(model, "translate"):  # image-to-image: conditioned on images, nothing else
        conditions = model.condition_of(images[:4])
        check_images(model.sample(4, condition=conditions), 4)
        with pytest.raises(ValueError, match="condition"):
            model.sample(4)
    elif "prompt" in model.sample_options:  # text-conditioned: sample(n, prompt=...)
        seven, two = text.fill_template("a thick {label}", "digit seven"), "a small digit two"
        check_images(sample_with_seed(model, 4, 0, prompt=seven), 4)
        np.testing.assert_array_equal(sample_with_seed(model, 2, 1, prompt=seven),
                                      sample_with_seed(model, 2, 1, prompt=seven))
        assert not np.array_equal(sample_with_seed(model, 2, 1, prompt=seven),
                                  sample_with_seed(model, 2, 1, prompt=two)), f"{name}: the prompt changed nothing"
        check_images(sample_with_seed(model, 2, 1, prompt=[seven, two]), 2)
        for bad, message in (("", "empty"), ("a purple digit seven", "not in the vocabulary")):
            with pytest.raises(ValueError, match=message):
                model.sample(2, prompt=bad)
    elif hasattr(model, "sample"):
        check_images(sample_with_seed(model, 4, 0), 4)
        np.testing.assert_array_equal(sample_with_seed(model, 2, 1), sample_with_seed(model, 2, 1))
        if model.conditional:
            a, b = sample_with_seed(model, 2, 1, label=3), sample_with_seed(model, 2, 1, label=5)
            check_images(a, 2)
            assert not np.array_equal(a, b), f"{name}: label 3 and label 5 drew the same images"
            check_images(sample_with_seed(model, 3, 1, label=np.array([0, 4, 9])), 3)
            for bad in (data.N_CLASSES, -1):
                with pytest.raises(ValueError, match="label"):
                    model.sample(2, label=bad)
        else:
            with pytest.raises(TypeError):
                model.sample(2, label=3)
    else:  # a classifier
        predicted = model.predict(images)
        assert predicted.shape == (len(images),) and predicted.dtype.kind in "iu"
        assert predicted.min() >= 0 and predicted.max() < data.N_CLASSES
        metrics = model.evaluate(images, labels)
        assert any(k.startswith("test_acc") for k in metrics), metrics
        assert all(0.0 <= v <= 1.0 for v in metrics.values()), metrics

    # ---- the picture of what the model does now (the trainer's samples_latest.png)
    model.visualize(images, labels, tmp_path / "picture.png")
    with Image.open(tmp_path / "picture.png") as picture:
        assert picture.format == "PNG" and min(picture.size) >= 28, (picture.format, picture.size)
    assert model.training  # sampling, evaluating and drawing leave the model in the mode it was in


def test_pending_tiny_configs_are_still_needed():
    moved = [n for n in PENDING_TINY if get_model_class(n).__dict__.get("tiny_config") is not None]
    assert not moved, f"{moved} now define tiny_config: delete them from PENDING_TINY in {__file__}"
    assert set(PENDING_TINY) <= set(MODULES)


# ---------------------------------------------------------------------- the registry and loading
def test_the_registry_names_every_class():
    for name in MODULES:
        cls = get_model_class(name)
        assert cls.name == name and registered_name(cls) == name
    with pytest.raises(ValueError, match="valid models: .*mlp"):
        get_model_class("resnet")

    class Tweaked(get_model_class("mlp")):  # not registered: it does not pass for the mlp
        pass
    assert registered_name(Tweaked) is None and Tweaked.name == "tweaked"


def test_every_models_sampling_options_are_parameters_of_its_sample():
    import inspect
    from tinygen import models
    for name in models.MODULES:
        cls = models.get_model_class(name)
        takes = set(getattr(cls, "sample_options", ()))
        assert takes <= {"label", "prompt", "guidance", "steps"}, name
        if takes:
            assert takes <= set(inspect.signature(cls.sample).parameters), name


def test_load_model_reads_a_training_checkpoint(tmp_path):
    from tinygen.train import TrainOptions, Trainer
    model = build_model("mlp", {"hidden": 16, "batch_size": 8})
    Trainer(model, TrainOptions(out=str(tmp_path), max_steps=2, progress=False, evaluate=False)).fit()
    loaded, meta = load_model(tmp_path / "last.npz")
    assert meta["kind"] == "tinygen-run" and meta["step"] == 2 and loaded.name == "mlp" and not loaded.training
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v)
    with pytest.raises(io.CheckpointError, match="holds a 'mlp' model, not 'cnn'"):
        load_model(tmp_path / "last.npz", "cnn")


def test_load_model_refuses_other_files(tmp_path):
    io.save_checkpoint(tmp_path / "judge.npz", {}, {"kind": "tinygen-judge"})
    with pytest.raises(io.CheckpointError, match="not a training checkpoint"):
        load_model(tmp_path / "judge.npz")
    io.save_checkpoint(tmp_path / "odd.npz", {}, {"kind": "tinygen-model", "model": "resnet"})
    with pytest.raises(io.CheckpointError, match="'resnet' model, which is not registered"):
        load_model(tmp_path / "odd.npz")
