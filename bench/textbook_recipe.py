"""The textbook transfer-learning recipe for VGG16, written by hand in plain Keras.

This is the reference ``bench/quality.py`` holds ecoclassify to: the keras-io guide
(``guides/transfer_learning.py``) applied to VGG16, with nothing from ecoclassify in the model
or the training loop.

1. Frozen VGG16 base (called with ``training=False``), global average pooling, dropout 0.2,
   softmax; Adam at 1e-3 for ``head_epochs``.
2. Unfreeze block5 (``block5_conv1`` .. ``block5_pool``), recompile with Adam at 1e-5 and train
   ``finetune_epochs`` more.

No class weights, no augmentation, no early stopping, no best-epoch selection: the model after
the last epoch is the result, as in the guide.

**Same mathematics, less CPU.** Blocks 1-4 stay frozen in both stages and hold no dropout,
BatchNorm or augmentation, so their output for an image never changes: it is computed once per
image (``vgg16_block4_features``) and shared by every split and seed. In stage 1 block5 is
frozen too, so its pooled output is computed once per run. Training the remaining layers on
those inputs performs the same updates as ``model.fit`` on the images would, for a fraction of
the compute. :func:`end_to_end_model` assembles the real image -> probabilities model from the
trained layers so that the equivalence is checked on real images (see ``bench/quality.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

#: The last layer of the part that never trains.
FROZEN_OUTPUT = "block4_pool"
DROPOUT = 0.2
HEAD_LEARNING_RATE = 1e-3
FINETUNE_LEARNING_RATE = 1e-5
BATCH_SIZE = 32


def vgg16_base(weights: Path, image_size: tuple[int, int]) -> keras.Model:
    """The VGG16 convolutional base with the given weights file (no top, no pooling)."""
    return keras.applications.VGG16(weights=str(weights), include_top=False, input_shape=(*image_size, 3))


def vgg16_block4_features(weights: Path, images: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Output of VGG16 blocks 1-4 (pretrained, frozen) for ``uint8`` RGB images."""
    base = vgg16_base(weights, images.shape[1:3])
    frozen = keras.Model(base.input, base.get_layer(FROZEN_OUTPUT).output)
    pixels = keras.applications.vgg16.preprocess_input(images.astype("float32"))
    return frozen.predict(pixels, batch_size=batch_size, verbose=0)


@dataclass
class TextbookModel:
    """The recipe's layers: the VGG16 base, and the head applied after global average pooling."""

    base: keras.Model
    dropout: keras.layers.Dropout
    classifier: keras.layers.Dense

    @property
    def block5(self) -> list[keras.layers.Layer]:
        names = [layer.name for layer in self.base.layers]
        return self.base.layers[names.index(FROZEN_OUTPUT) + 1:]

    def head(self, x):
        return self.classifier(self.dropout(x))

    def from_block4(self) -> keras.Model:
        """block4 features -> probabilities: block5, pooling and head (layers shared)."""
        inputs = keras.Input(self.base.get_layer(FROZEN_OUTPUT).output.shape[1:])
        x = inputs
        for layer in self.block5:
            x = layer(x)
        return keras.Model(inputs, self.head(keras.layers.GlobalAveragePooling2D()(x)))

    def from_pooled(self) -> keras.Model:
        """Pooled block5 features -> probabilities: the head alone (layers shared)."""
        inputs = keras.Input((self.base.output.shape[-1],))
        return keras.Model(inputs, self.head(inputs))

    def pooled_block5(self, block4: np.ndarray) -> np.ndarray:
        inputs = keras.Input(block4.shape[1:])
        x = inputs
        for layer in self.block5:
            x = layer(x)
        pool = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
        return pool.predict(block4, batch_size=BATCH_SIZE, verbose=0)

    def end_to_end_model(self) -> keras.Model:
        """uint8 image -> probabilities: the model the guide builds, with the trained layers."""
        inputs = keras.Input(self.base.input.shape[1:])
        x = keras.applications.vgg16.preprocess_input(inputs)
        x = self.base(x, training=False)
        return keras.Model(inputs, self.head(keras.layers.GlobalAveragePooling2D()(x)))


def build(weights: Path, image_size: tuple[int, int], num_classes: int, seed: int) -> TextbookModel:
    keras.utils.set_random_seed(seed)
    base = vgg16_base(weights, image_size)
    base.trainable = False
    return TextbookModel(base, keras.layers.Dropout(DROPOUT, seed=seed),
                         keras.layers.Dense(num_classes, activation="softmax"))


def train(block4: dict[str, np.ndarray], labels: dict[str, np.ndarray], num_classes: int, weights: Path,
          image_size: tuple[int, int], seed: int, head_epochs: int, finetune_epochs: int
          ) -> tuple[TextbookModel, dict[str, np.ndarray]]:
    """Run both stages on cached block4 features of the ``train`` split.

    Args:
        block4: ``{"train": ..., "test": ...}`` outputs of :func:`vgg16_block4_features`.
        labels: Class indices per split.

    Returns:
        The trained model and the test probabilities after each stage (``"head"``, and
        ``"finetune"`` unless ``finetune_epochs`` is 0).
    """
    model = build(weights, image_size, num_classes, seed)
    onehot = np.eye(num_classes, dtype="float32")[labels["train"]]
    # Stage 1: base frozen; block5 is frozen as well, so its pooled output is fixed.
    pooled = {split: model.pooled_block5(features) for split, features in block4.items()}
    head = model.from_pooled()
    head.compile(optimizer=keras.optimizers.Adam(HEAD_LEARNING_RATE), loss="categorical_crossentropy",
                 metrics=["accuracy"])
    head.fit(pooled["train"], onehot, batch_size=BATCH_SIZE, epochs=head_epochs, verbose=0)
    test = {"head": head.predict(pooled["test"], verbose=0)}
    if not finetune_epochs:
        return model, test
    # Stage 2: unfreeze block5, recompile at a 100x smaller learning rate, keep training.
    model.base.trainable = True
    for layer in model.base.layers:
        layer.trainable = layer.name.startswith("block5")
    tail = model.from_block4()
    tail.compile(optimizer=keras.optimizers.Adam(FINETUNE_LEARNING_RATE), loss="categorical_crossentropy",
                 metrics=["accuracy"])
    tail.fit(block4["train"], onehot, batch_size=BATCH_SIZE, epochs=finetune_epochs, verbose=0, shuffle=True)
    test["finetune"] = tail.predict(block4["test"], verbose=0)
    return model, test
