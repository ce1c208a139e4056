"""tinygen.nn: modules and layers on the autograd engine, after torch.nn.

    from tinygen import nn
    nn.manual_seed(0)
    net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    logits = net(x)                        # x a Tensor (B, 784)
    net.state_dict(); net.load_state_dict(sd); net.to("cuda"); net.eval()

module.py      Parameter, Module (registration, state_dict, train/eval, to), Sequential, ModuleList
layers.py      Linear, Conv2d, ConvTranspose2d, norms, Embedding, Dropout, activations, pooling, ResBlock
attention.py   MultiheadAttention, TransformerBlock, timestep_embedding, TimestepEmbedding
transformer.py Transformer (blocks + final norm), patchify / unpatchify, PatchEmbed, position embeddings
quantize.py    VectorQuantizer (the VQ-VAE codebook), Quantized, kmeans, kmeans_plus_plus, squared_distances,
               perplexity
init.py        the global random generator (manual_seed) and in-place initialisers
"""
from . import init
from .attention import MultiheadAttention, TimestepEmbedding, TransformerBlock, timestep_embedding
from .init import get_rng, get_rng_state, manual_seed, set_rng_state
from .layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, Embedding, Flatten,
                     GELU, GroupNorm, Identity, LayerNorm, LeakyReLU, Linear, MaxPool2d, ReLU, Sigmoid, SiLU,
                     ResBlock, Softplus, Tanh, Upsample)
from .module import Module, ModuleList, Parameter, Sequential, StateDictError
from .quantize import Quantized, VectorQuantizer, kmeans, kmeans_plus_plus, perplexity, squared_distances
from .transformer import (LearnedPositionEmbedding, PatchEmbed, Transformer, patchify, sincos_2d_position_embedding,
                          sinusoidal_position_embedding, unpatchify)

__all__ = ["init", "manual_seed", "get_rng", "get_rng_state", "set_rng_state", "Parameter", "Module",
           "StateDictError", "Sequential", "ModuleList", "Linear", "Conv2d", "ConvTranspose2d", "BatchNorm1d",
           "BatchNorm2d", "LayerNorm", "GroupNorm", "Embedding", "Dropout", "Flatten", "Identity", "ResBlock", "ReLU",
           "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Tanh", "Softplus", "Upsample", "MaxPool2d", "AvgPool2d",
           "MultiheadAttention", "TransformerBlock", "timestep_embedding", "TimestepEmbedding",
           "Transformer", "patchify", "unpatchify", "PatchEmbed", "LearnedPositionEmbedding",
           "sinusoidal_position_embedding", "sincos_2d_position_embedding",
           "VectorQuantizer", "Quantized", "kmeans", "kmeans_plus_plus", "squared_distances", "perplexity"]
