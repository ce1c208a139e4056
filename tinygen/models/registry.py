"""The registry: every lecture model's name and where its class lives, in one table (MODULES). The CLI,
the training loop and the evaluation suite find models here; a model class reads its own `name` from it
(tinygen/models/base.py). It imports no model: each is imported only when asked for, so `list` stays fast.
"""
import importlib

# model name -> "module:Class" (imported only when asked for, so `list` stays fast)
MODULES = {
    "mlp": "tinygen.models.classifier:MLP",
    "cnn": "tinygen.models.classifier:CNN",
    "ae": "tinygen.models.ae:AE",
    "vae": "tinygen.models.vae:VAE",
    "cvae": "tinygen.models.cvae:CVAE",
    "gan": "tinygen.models.gan:GAN",
    "dcgan": "tinygen.models.dcgan:DCGAN",
    "cgan": "tinygen.models.cgan:CGAN",
    "pix2pix": "tinygen.models.pix2pix:Pix2Pix",
    "realnvp": "tinygen.models.realnvp:RealNVP",
    "pixelcnn": "tinygen.models.pixelcnn:PixelCNN",
    "vqvae": "tinygen.models.vqvae:VQVAE",
    "ddpm": "tinygen.models.ddpm:DDPM",
    "noisy_classifier": "tinygen.models.guidance:NoisyClassifier",
    "latent_diffusion": "tinygen.models.latent_diffusion:LatentDiffusion",
    "vit": "tinygen.models.vit:ViT",
    "dvae": "tinygen.models.dvae:DVAE",
    "dvae_rolfe": "tinygen.models.dvae_rolfe:RolfeDVAE",
    "mixture_vae": "tinygen.models.mixture_vae:MixtureVAE",
    "igpt": "tinygen.models.igpt:ImageGPT",
    "clip": "tinygen.models.clip:CLIP",
    "dit": "tinygen.models.dit:DiT",
    "dalle": "tinygen.models.dalle:DALLE",
    "glide": "tinygen.models.glide:GLIDE",
    "unclip": "tinygen.models.unclip:UnCLIP",
    "stable_diffusion": "tinygen.models.stable_diffusion:StableDiffusion",
}

_NAMES = {target: name for name, target in MODULES.items()}  # "module:Class" -> name


def registered_name(cls):
    """The name `cls` is registered under, or None (base classes, subclasses made in tests)."""
    return _NAMES.get(f"{cls.__module__}:{cls.__qualname__}")


def get_model_class(name):
    """The model class registered as `name` (a ValueError lists the valid names)."""
    if name not in MODULES:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODULES))}")
    module, _, cls = MODULES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


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
