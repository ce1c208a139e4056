"""tinygen: readable generative models on the autograd engine."""
