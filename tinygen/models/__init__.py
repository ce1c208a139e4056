"""The lecture models, one readable file each, and the registry that the CLI, the training loop and the
evaluation suite use to find them.

A model file imports the engine, tinygen.nn, optim, io, data, text, diffusion and at most the earlier
lecture models it builds on; it never imports evaluate, train or the CLI, which sit above the models
(tests/test_layering.py keeps this). A model is registered in one place: a line in MODULES of registry.py. Its
class gets its `name` from there, and the contract test (tests/models/test_contract.py) trains, saves,
reloads and samples every registered model with the class's `tiny_config`.

    build_model(name, overrides)   a fresh model, its Config updated
    load_model(checkpoint)         the trained model of a checkpoint (EMA weights where kept), and its meta
    save_model(model, path)        the weights, EMA and config of a model, for load_model
    load_stage(path, name, ...)    a trained model that a later one builds on (DALL-E's dVAE), checked
    set_sample_settings(model, s)  change the Config fields a trained model's sampling alone reads
"""
from dataclasses import asdict
from pathlib import Path

from .. import io, nn
from .base import check_field, check_values, config_from_dict
from .registry import MODULES, available, get_model_class, registered_name  # noqa: F401 (the package's API)


# ---------------------------------------------------------------------- building and loading
def build_model(name, overrides=None, seed=0):
    """A fresh model from its registered class, its Config updated with `overrides` (each checked against
    the type of the recipe's value; None keeps the recipe's), then every field checked (base.check_values),
    its initial weights drawn from the generator seeded with `seed`."""
    cls = get_model_class(name)
    nn.manual_seed(seed)
    defaults = asdict(cls.Config())
    values = dict(defaults)
    for k, v in (overrides or {}).items():
        if v is not None:
            values[k] = check_field(k, v, defaults[k]) if k in defaults and defaults[k] is not None else v
    config = config_from_dict(cls.Config, values)
    check_values(config)  # every field, before a network is built (the trainer adds the model's check_config)
    return cls(config)


def save_model(model, path, **meta):
    """Write the weights (and the EMA of them, where the model keeps one), the name, config and dataset
    of `model` to a checkpoint that load_model reads; `meta` adds JSON-able entries."""
    arrays, scalars = {}, {}
    io.flatten_state("model", model.state_dict(), arrays, scalars)
    if getattr(model, "ema", None) is not None:
        io.flatten_state("ema", model.ema.state_dict(), arrays, scalars)
    io.save_checkpoint(path, arrays, {**meta, "kind": "tinygen-model", "model": model.name,
                                      "dataset": model.dataset, "config": model.config_dict(), "scalars": scalars})


CHECKPOINT_KINDS = ("tinygen-run", "tinygen-model")  # written by the training loop, by save_model


def load_model(checkpoint, name=None):
    """(model, meta): the model a training checkpoint (or a save_model file) holds, built from its saved
    config and registered class, with its weights, in eval mode; where it kept an EMA of its weights,
    the averaged weights are the ones put in. `name`, if given, must be the model's."""
    arrays, meta = io.load_checkpoint(checkpoint)
    if meta.get("kind") not in CHECKPOINT_KINDS:
        raise io.CheckpointError(f"{checkpoint}: not a training checkpoint of a tinygen run (its kind is "
                                 f"{meta.get('kind')!r}; runs keep theirs in <run folder>/last.npz) nor a "
                                 f"save_model file")
    if name is not None and meta.get("model") != name:
        raise io.CheckpointError(f"{checkpoint} holds a {meta.get('model')!r} model, not {name!r}")
    if meta.get("model") not in MODULES:
        raise io.CheckpointError(f"{checkpoint} holds a {meta.get('model')!r} model, which is not registered; "
                                 f"valid models: {', '.join(sorted(MODULES))}")
    model = build_model(meta["model"], meta["config"])
    model.dataset = meta["dataset"]
    model.load_state_dict(io.unflatten_state("model", arrays, meta["scalars"]))
    if getattr(model, "ema", None) is not None:
        model.ema.load_state_dict(io.unflatten_state("ema", arrays, meta["scalars"]))
        model.ema.copy_to(model)
    model.eval()
    return model, meta


def load_stage(path, name, field, user):
    """The trained `name` model in the checkpoint `path`, for a later model (`user`) that builds on it as
    its frozen stage (DALL-E on the dVAE, ...). The stage is named on the command line (--set field=PATH),
    never found at a default path: a missing one is a one-line error naming the command that makes it."""
    make = f"`python -m tinygen train {name}` makes one (runs/{name}-mnist/last.npz)"
    if not path:
        raise ValueError(f"{user} builds on a trained {name}: give its checkpoint with --set {field}=PATH; {make}")
    if not Path(path).is_file():
        raise ValueError(f"--set {field}={path}: no such checkpoint; {make}")
    return load_model(path, name)[0]


def frozen_stage(model, field, name):
    """The trained `name` model that `model` builds on, frozen (DALL-E's dVAE, unCLIP's and latent
    text-to-image's CLIP; GLIDE's text_init, whose weights it copies as a start): config.<field> names its
    checkpoint (load_stage). Its config is recorded in
    config.<field>_config and its weights travel in `model`'s checkpoints, so a checkpoint loads
    (load_model) on its own even where the stage's file is not: the stage is then built from the
    recorded config, and the checkpoint's weights go in next."""
    c = model.config
    recorded, path = getattr(c, f"{field}_config"), getattr(c, field)
    if recorded is not None and not Path(path).is_file():
        stage = build_model(name, recorded)
    else:
        stage = load_stage(path, name, field=field, user=model.name)
        setattr(c, f"{field}_config", stage.config_dict())
    stage.requires_grad_(False)
    return stage


def set_sample_settings(model, settings):
    """Change settings of a trained model that its sampling alone reads (`--set FIELD=VALUE` of `sample` and
    of the prompt benchmark: unCLIP's decode_from, prior_candidates, ...): only the Config fields its class
    lists in `sample_settings`, each checked as build_model checks it, then the whole config (check_values,
    the model's check_config). The weights are unchanged. Returns the settings as set (a dict)."""
    allowed = tuple(getattr(model, "sample_settings", ()))
    defaults = asdict(type(model.config)())
    done = {}
    for key, value in settings.items():
        if key not in allowed:
            raise ValueError(f"--set {key}: not a sampling setting of {model.name} (its sampling settings: "
                             f"{', '.join(allowed) or 'none'})")
        done[key] = check_field(key, value, defaults[key])
        setattr(model.config, key, done[key])
    check_values(model.config)
    model.check_config(model.config)
    return done
