"""The lecture models, one readable file each, and the registry that the CLI and the evaluation
suite use to find them. A model file imports the engine, tinygen.nn, and at most the earlier
lecture models it builds on; it never imports the CLI or the training loop."""
import importlib

# model name -> module that defines it (imported only when asked for, so `list` stays fast)
MODULES = {
    "mlp": "tinygen.models.classifier",
    "cnn": "tinygen.models.classifier",
    "ae": "tinygen.models.ae",
    "vae": "tinygen.models.vae",
    "cvae": "tinygen.models.cvae",
    "gan": "tinygen.models.gan",
    "dcgan": "tinygen.models.dcgan",
    "cgan": "tinygen.models.cgan",
    "pix2pix": "tinygen.models.pix2pix",
    "realnvp": "tinygen.models.realnvp",
    "pixelcnn": "tinygen.models.pixelcnn",
    "ddpm": "tinygen.models.ddpm",
    "noisy_classifier": "tinygen.models.guidance",
    "latent_diffusion": "tinygen.models.latent_diffusion",
    "vit": "tinygen.models.vit",
}

REGISTRY = {}  # name -> model class, filled by @register as modules are imported


def register(name):
    """Class decorator: make a model available to the CLI as `name`."""
    def decorate(cls):
        cls.name = name
        REGISTRY[name] = cls
        return cls
    return decorate


def get_model_class(name):
    """The model class registered as `name` (a ValueError lists the valid names)."""
    if name not in MODULES:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODULES))}")
    importlib.import_module(MODULES[name])
    return REGISTRY[name]


def available():
    """[(name, one-line summary)] for every registered model."""
    rows = []
    for name in MODULES:
        try:
            cls = get_model_class(name)
        except ImportError as e:  # a model file that fails to import is reported, not hidden
            rows.append((name, f"(cannot be imported: {e})"))
            continue
        rows.append((name, (cls.__doc__ or "").strip().splitlines()[0]))
    return rows
