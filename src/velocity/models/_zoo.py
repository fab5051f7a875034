"""The benchmark models of the federated-learning literature, as plain ``nn.Module`` classes.

Every class uses PyTorch's default initialisation; :func:`velocity.models.build_model` makes
it reproducible by seeding a forked CPU generator. Parameter counts are those of
``sum(p.numel() for p in model.parameters())`` with the default sizes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from velocity.errors import ConfigurationError, ValidationError

__all__ = [
    "CharLSTM",
    "CharTransformer",
    "CifarCNN",
    "LogisticRegression",
    "Mnist2NN",
    "MnistCNN",
    "count_parameters",
]


class MnistCNN(nn.Module):
    """The "CNN" of McMahan et al. 2017 for MNIST: 1,663,370 parameters.

    McMahan, Moore, Ramage, Hampson, Agüera y Arcas, "Communication-Efficient Learning of
    Deep Networks from Decentralized Data", AISTATS 2017, Sec. 3: "a CNN with two 5x5
    convolution layers (the first with 32 channels, the second with 64, each followed with
    2x2 max pooling), a fully connected layer with 512 units and ReLU activation, and a final
    softmax output layer (1,663,370 total parameters)". The count is reached with "same"
    padding (2 pixels), so the feature map is ``64 x 7 x 7`` before the dense layer.

    Shapes: input ``(N, 1, 28, 28)`` float32, output logits ``(N, num_classes)``.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 512),
            nn.ReLU(),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.classifier(self.features(x))
        return logits


class Mnist2NN(nn.Module):
    """The "2NN" of McMahan et al. 2017 for MNIST: 199,210 parameters.

    McMahan et al. 2017, Sec. 3: "a simple multilayer-perceptron with 2-hidden layers with 200
    units each using ReLu activations (199,210 total parameters)".

    Shapes: input ``(N, 1, 28, 28)`` or ``(N, 784)`` float32, output ``(N, num_classes)``.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 200),
            nn.ReLU(),
            nn.Linear(200, 200),
            nn.ReLU(),
            nn.Linear(200, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.net(x)
        return logits


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: one linear layer, softmax in the loss.

    The convex baseline of the federated-optimization papers: MNIST (784 inputs, 7,850
    parameters for 10 classes), and the Synthetic(alpha, beta) data of Li et al. 2020,
    "Federated Optimization in Heterogeneous Networks" (60 inputs, 10 classes, 610
    parameters).

    Shapes: input ``(N, in_features)`` or any ``(N, ...)`` whose trailing dimensions hold
    ``in_features`` entries (``(N, 1, 28, 28)`` for MNIST); output ``(N, num_classes)``.
    """

    def __init__(self, in_features: int = 784, num_classes: int = 10) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.linear(self.flatten(x))
        return logits


class CifarCNN(nn.Module):
    """The CIFAR-10 CNN of McMahan et al. 2017 (the TensorFlow tutorial model), on 32x32 input.

    McMahan et al. 2017, Sec. 3 takes "the model architecture from the TensorFlow tutorial,
    which consists of two convolutional layers followed by two fully connected layers and
    then a linear transformation layer to produce logits": 5x5 convolutions with 64 channels
    each, ReLU, 3x3 stride-2 max pooling, dense layers of 384 and 192 units, and the logits.

    On the full 32x32 images the flattened feature map is ``64 x 8 x 8`` and the model has
    1,756,426 parameters. (The paper's "about 10^6" is for the tutorial's 24x24 crops,
    where the feature map is ``64 x 6 x 6`` and the count is 1,068,298.) Two departures from
    the tutorial, neither of which changes the parameter count: the local response
    normalisation layers are left out (as in most PyTorch reproductions), and pooling pads
    one pixel on every side where TensorFlow's "SAME" pads only the bottom and right.

    Shapes: input ``(N, 3, 32, 32)`` float32, output ``(N, num_classes)``.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            nn.Conv2d(64, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 8 * 8, 384),
            nn.ReLU(),
            nn.Linear(384, 192),
            nn.ReLU(),
            nn.Linear(192, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.classifier(self.features(x))
        return logits


class CharLSTM(nn.Module):
    """The LEAF Shakespeare next-character model: 819,920 parameters for 80 characters.

    Caldas et al. 2018, "LEAF: A Benchmark for Federated Settings" (after McMahan et al.
    2017's Shakespeare LSTM): an 8-dimensional character embedding, a two-layer LSTM with 256
    hidden units, and a dense layer from the last time step to the vocabulary logits. The
    input is 80 characters, the target the next one. PyTorch's LSTM keeps two bias vectors
    per layer where Keras keeps one, so the count is 1,024 above LEAF's TensorFlow model
    (818,896).

    Shapes: input ``(N, seq_len)`` int64 character ids in ``[0, vocab_size)``
    (``seq_len = 80`` in LEAF), output ``(N, vocab_size)``.
    """

    def __init__(
        self, vocab_size: int = 80, embed_dim: int = 8, hidden_size: int = 256, num_layers: int = 2
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(self.embedding(x))
        last: Tensor = out[:, -1, :]
        logits: Tensor = self.head(last)
        return logits


class _CausalBlock(nn.Module):
    """One pre-LN transformer block: ``h + attn(ln(h))``, then ``h + mlp(ln(h))``."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, d_ff)
        self.out = nn.Linear(d_ff, d_model)

    def _heads(self, t: Tensor) -> Tensor:
        n, length, width = t.shape
        return t.view(n, length, self.num_heads, width // self.num_heads).transpose(1, 2)

    def forward(self, h: Tensor, *, last_only: bool = False) -> Tensor:
        """``(N, L, D) -> (N, L, D)``, or ``(N, 1, D)`` (the last position) with ``last_only``.

        With ``last_only`` the queries, the residual stream and the MLP are computed for the
        last position alone; its keys and values are still every position's, so the result
        equals the last row of the full output.
        """
        n, _, width = h.shape
        q, k, v = self.qkv(self.ln1(h)).split(width, dim=2)
        if last_only:
            h, q = h[:, -1:], q[:, -1:]
        # The last query attends to every position, so no mask is needed for it alone.
        attended = F.scaled_dot_product_attention(
            self._heads(q), self._heads(k), self._heads(v), is_causal=not last_only
        )
        h = h + self.proj(attended.transpose(1, 2).reshape(n, q.shape[1], width))
        result: Tensor = h + self.out(F.gelu(self.fc(self.ln2(h))))
        return result


class CharTransformer(nn.Module):
    """A small causal character transformer for Shakespeare: 115,536 parameters for 80
    characters (context 80, ``d_model = 64``, 2 blocks of 4 heads).

    Token embedding plus a learned position embedding, ``num_layers`` pre-LN blocks (causal
    multi-head self-attention with :func:`torch.nn.functional.scaled_dot_product_attention`,
    then a GELU MLP of width ``4 · d_model``, each in a residual branch after a
    ``LayerNorm``), a final ``LayerNorm`` and a dense layer to the vocabulary logits. It is
    the GPT-2 architecture (Radford et al. 2019) at toy scale; weights start as GPT-2's,
    ``N(0, 0.02)`` with zero biases, and the residual projections at
    ``0.02 / sqrt(2 · num_layers)``. No dropout.

    Shapes: input ``(N, L)`` int64 character ids in ``[0, vocab_size)``, ``L <= seq_len``;
    :meth:`forward` returns the logits of the character after the window ``(N, vocab_size)``
    (the target of the Shakespeare pipeline, as :class:`CharLSTM`); :meth:`sequence_logits`
    returns every position's next-character logits ``(N, L, vocab_size)``, position ``t``
    reading only characters ``0..t``.

    Parameters
    ----------
    vocab_size : int
        Characters in the vocabulary (80 for LEAF Shakespeare).
    seq_len : int
        Longest window (the size of the position embedding).
    d_model : int
        Width of the residual stream; a multiple of ``num_heads``.
    num_heads : int
        Attention heads per block.
    num_layers : int
        Transformer blocks (>= 1).

    Raises
    ------
    ConfigurationError
        ``num_layers < 1``, or ``d_model`` not a multiple of ``num_heads``.

    Examples
    --------
    >>> model = CharTransformer()
    >>> x = torch.randint(0, 80, (2, 80))
    >>> model(x).shape, model.sequence_logits(x).shape
    (torch.Size([2, 80]), torch.Size([2, 80, 80]))
    """

    def __init__(
        self,
        vocab_size: int = 80,
        seq_len: int = 80,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
    ) -> None:
        super().__init__()
        if num_layers < 1 or num_heads < 1 or d_model % num_heads:
            raise ConfigurationError(
                "CharTransformer needs num_layers >= 1 and d_model a multiple of num_heads; "
                f"got num_layers={num_layers}, d_model={d_model}, num_heads={num_heads}"
            )
        self.seq_len = seq_len
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(
            _CausalBlock(d_model, num_heads, 4 * d_model) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() > 1:
                deep = name.endswith(("proj.weight", "out.weight"))
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * num_layers) if deep else 0.02)

    def _embed(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] > self.seq_len:
            raise ValidationError(
                f"CharTransformer takes (N, L) character ids with L <= {self.seq_len}; "
                f"got shape {tuple(x.shape)}"
            )
        positions = torch.arange(x.shape[1], device=x.device)
        embedded: Tensor = self.embedding(x) + self.position(positions)
        return embedded

    def forward(self, x: Tensor) -> Tensor:
        h = self._embed(x)
        *body, last = self.blocks
        for block in body:
            h = block(h)
        h = last(h, last_only=True)
        logits: Tensor = self.head(self.norm(h[:, -1]))
        return logits

    def sequence_logits(self, x: Tensor) -> Tensor:
        """Next-character logits at every position: ``(N, L)`` ids -> ``(N, L, vocab_size)``."""
        h = self._embed(x)
        for block in self.blocks:
            h = block(h)
        logits: Tensor = self.head(self.norm(h))
        return logits


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (trainable or not) of ``model``.

    Examples
    --------
    >>> count_parameters(Mnist2NN())
    199210
    """
    return sum(p.numel() for p in model.parameters())
