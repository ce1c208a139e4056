"""The public op namespace:  import autograd.functional as F

Names follow PyTorch's torch.nn.functional where one exists (F.conv2d, F.cross_entropy,
F.scaled_dot_product_attention, ...), and NumPy's vocabulary otherwise (sum(axis, keepdims),
reshape, transpose(*axes), concat, stack, where, einsum)."""
from .ops.elementwise import *  # noqa: F401,F403
from .ops.reduce import *  # noqa: F401,F403
from .ops.shape import *  # noqa: F401,F403
from .ops.linalg import *  # noqa: F401,F403
from .ops.conv import *  # noqa: F401,F403
from .ops.pooling import *  # noqa: F401,F403
from .ops.nn import *  # noqa: F401,F403
