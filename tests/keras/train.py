"""Trains and saves the Keras models tests/keras/ exports, in a process of its own
(``KERAS_BACKEND=jax``: Keras and JAX never enter the test process, as they never
enter scorewire's): ``python -m tests.keras.train OUT_DIR``. Each model is saved as
``NAME.keras`` and ``NAME.h5`` (and the seed's weights alone as ``seed.weights.h5``);
``predictions.npz`` holds, for each model scorewire exports, its test rows
(``NAME_X``) and Keras's own ``predict`` on them (``NAME``)."""

from __future__ import annotations

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"

import keras
import numpy as np


def data(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Features on very different scales and centres: what Normalization is for."""
    scale = np.array([1.0, 10.0, 100.0, 0.1, 3.0, 0.5][:d])
    centre = np.array([0.0, 5.0, -50.0, 1.0, 2.0, -1.0][:d])
    return (rng.normal(size=(n, d)) * scale + centre).astype(np.float32)


def main(out: str) -> None:
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    X = data(rng, 400, 4)
    z = (X[:, 0] + (X[:, 1] - 5) / 10 - (X[:, 2] + 50) / 100).astype(np.float32)
    y_bin = (z > 0).astype(np.float32)
    y_multi = np.digitize(z, [-0.7, 0.7]).astype(np.int32)
    y_reg = np.stack([2 * z + 1, -z], axis=1).astype(np.float32)
    models: dict[str, keras.Model] = {}

    # the seed's example, exactly: one sigmoid unit, sgd, binary cross-entropy
    # (no Input layer: the model is built by fit, its config holds no InputLayer)
    seed = keras.Sequential([keras.layers.Dense(1, activation="sigmoid")])
    seed.compile(optimizer="sgd", loss="binary_crossentropy")
    unit = np.abs(X).max(axis=0)  # the models with no preprocessing see features near [-1, 1]
    seed.fit(X / unit, y_bin, epochs=3, verbose=0)
    models["seed"] = seed

    # ... after an adapted Normalization (folded into the weights)
    norm = keras.layers.Normalization()
    norm.adapt(X)
    binary = keras.Sequential([keras.Input((4,)), norm, keras.layers.Dense(1, activation="sigmoid")])
    binary.compile(optimizer="sgd", loss="binary_crossentropy")
    binary.fit(X, y_bin, epochs=5, verbose=0)
    models["normalized"] = binary

    # multinomial: softmax over three units
    norm3 = keras.layers.Normalization()
    norm3.adapt(X)
    softmax = keras.Sequential([keras.Input((4,)), norm3, keras.layers.Dense(3, activation="softmax")])
    softmax.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    softmax.fit(X, y_multi, epochs=5, verbose=0)
    models["softmax"] = softmax

    # regression with two targets: Rescaling, a Normalization given its statistics
    # (and one inverted), then two linear Dense layers (still linear)
    regression = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Rescaling(0.5, offset=0.25),
        keras.layers.Normalization(mean=[0.0, 2.5, -25.0, 0.5], variance=[0.25, 25.0, 2500.0, 0.0025]),
        keras.layers.Normalization(mean=1.0, variance=4.0, invert=True),
        keras.layers.Dense(3),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(2),
    ])
    regression.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-3), loss="mse")
    regression.fit(X, y_reg, epochs=3, verbose=0)
    models["regression"] = regression

    # a Functional chain: named input, Rescaling, Dropout, Dense, Activation("softmax")
    inp = keras.Input((4,), name="features")
    h = keras.layers.Rescaling([1.0, 0.1, 0.01, 10.0])(inp)
    h = keras.layers.Dropout(0.1)(h)
    h = keras.layers.Dense(3)(h)
    functional = keras.Model(inp, keras.layers.Activation("softmax")(h))
    functional.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    functional.fit(X, y_multi, epochs=3, verbose=0)
    models["functional"] = functional

    # independent sigmoids (multi-label): one probability per unit
    multilabel = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Activation("sigmoid")])
    multilabel.compile(optimizer="sgd", loss="binary_crossentropy")
    multilabel.fit(X / unit, np.eye(3, dtype=np.float32)[y_multi], epochs=2, verbose=0)
    models["multilabel"] = multilabel

    # refused: a hidden non-linearity, two inputs, an embedding, a one-unit softmax
    models["hidden_relu"] = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1, activation="sigmoid"),
    ])
    a, b = keras.Input((2,), name="a"), keras.Input((2,), name="b")
    models["two_inputs"] = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Concatenate()([a, b])))
    models["embedding"] = keras.Sequential([
        keras.Input((4,), dtype="int32"), keras.layers.Embedding(10, 2), keras.layers.Flatten(), keras.layers.Dense(1),
    ])
    models["softmax_one_unit"] = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="softmax")])

    X_test = data(np.random.default_rng(8), 64, 4)
    arrays = {}
    for name, model in models.items():
        model.save(os.path.join(out, f"{name}.keras"))
        model.save(os.path.join(out, f"{name}.h5"))
        if name in ("hidden_relu", "two_inputs", "embedding", "softmax_one_unit"):
            continue
        rows = (X_test / unit).astype(np.float32) if name in ("seed", "multilabel") else X_test
        arrays[f"{name}_X"] = rows
        arrays[name] = np.asarray(model.predict(rows, verbose=0))
    seed.save_weights(os.path.join(out, "seed.weights.h5"))  # weights only: refused
    np.savez(os.path.join(out, "predictions.npz"), **arrays)


if __name__ == "__main__":
    main(sys.argv[1])
