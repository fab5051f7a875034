"""The benchmark models of the federated-learning literature, as plain ``nn.Module`` classes.

Every class uses PyTorch's default initialisation; :func:`velocity.models.build_model` makes
it reproducible by seeding a forked CPU generator. Parameter counts are those of
``sum(p.numel() for p in model.parameters())`` with the default sizes.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = [
    "CharLSTM",
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


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (trainable or not) of ``model``.

    Examples
    --------
    >>> count_parameters(Mnist2NN())
    199210
    """
    return sum(p.numel() for p in model.parameters())
