"""The paper's two models as keras.Model subclasses, trained on rate + lambda * distortion (eq. 10).

    FactorizedPrior:  x -g_a-> y -Q-> y_hat -g_s-> x_hat;  y_hat coded with the factorized density (eq. 6)
    ScaleHyperprior:  additionally |y| -h_a-> z -Q-> z_hat -h_s-> sigma_hat; y_hat coded with N(0, sigma_hat^2)
                      convolved with a unit uniform (eq. 7, 11), z_hat with the factorized density (eq. 9)

Images are float32 NHWC in [0, 1], of any size: the input is padded to a multiple of 16 by repeating
its border and the reconstruction is cropped back.
"""
import hashlib
import itertools
import json
import weakref

import keras
import numpy as np
import tensorflow as tf

from tfhyper import losses, paper
from tfhyper.densities import scale_table
from tfhyper.entropy_models import (
    EntropyBottleneck,
    GaussianConditional,
    factorized_tables,
    gaussian_tables,
    scale_thresholds,
)
from tfhyper.transforms import (
    analysis_transform,
    hyper_analysis_transform,
    hyper_synthesis_transform,
    synthesis_transform,
)

DISTORTIONS = ("mse", "ms-ssim")
# Fingerprints per model, valid for one version of its coding tables (kept outside Keras' attribute tracking).
_FINGERPRINTS = weakref.WeakKeyDictionary()
_TABLE_VERSIONS = itertools.count(1)


def pad_to_multiple(x, multiple):
    """Pad the bottom and right of NHWC `x` to multiples of `multiple` by repeating the last row/column.

    Repeating the border (rather than zeros) adds no artificial edge for the transforms to code.
    """
    pad_h = (-tf.shape(x)[1]) % multiple
    pad_w = (-tf.shape(x)[2]) % multiple
    x = tf.concat([x, tf.repeat(x[:, -1:], pad_h, axis=1)], axis=1)
    return tf.concat([x, tf.repeat(x[:, :, -1:], pad_w, axis=2)], axis=2)


class CompressionModel(keras.Model):
    """What both models share: the image autoencoder g_a / g_s, the loss of eq. 10, metrics and training steps.

    loss = bpp + lmbda * D, with D = MSE on the 0..255 scale or 1 - MS-SSIM (`distortion`), matching the
    lambdas in `paper.QUALITIES`.
    """

    def __init__(
        self,
        num_filters=128,
        latent_filters=192,
        lmbda=0.0130,
        distortion="mse",
        density_filters=paper.DENSITY_FILTERS,
        fixed_medians=False,
        initializer=paper.INITIALIZER,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.fixed_medians = bool(fixed_medians)
        # How the convolutions start (`layers.initializers`); it does not change what a trained model computes.
        self.initializer = initializer
        if distortion not in DISTORTIONS:
            raise ValueError(f"distortion must be one of {DISTORTIONS}, got {distortion!r}")
        self.num_filters = int(num_filters)
        self.latent_filters = int(latent_filters)
        self.lmbda = float(lmbda)
        self.distortion = distortion
        self.density_filters = tuple(int(f) for f in density_filters)
        self.g_a = analysis_transform(self.num_filters, self.latent_filters, initializer=initializer)
        self.g_s = synthesis_transform(self.num_filters, initializer=initializer)
        self._trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", "bpp", "bpp_y", "bpp_z", "mse", "psnr", "ms_ssim")
        }

    # -- the data path ------------------------------------------------------------------------------
    def call(self, x, training=False):
        """Returns (x_hat, {"y": likelihoods of y, "z": likelihoods of z (hyperprior only)})."""
        height, width = tf.shape(x)[1], tf.shape(x)[2]
        y = self.analysis(x)
        y_tilde, likelihoods = self.latent_likelihoods(y, training)
        x_hat = self.synthesis(y_tilde, height, width)
        return x_hat, likelihoods

    def analysis(self, x):
        """g_a on the border-padded image; y has ceil(H/16) x ceil(W/16) positions."""
        y = self.g_a(pad_to_multiple(x, paper.Y_DOWNSAMPLING))
        # Entropy models run in float32 even when the transforms compute in a mixed-precision policy.
        return tf.cast(y, tf.float32)

    def synthesis(self, y_hat, height, width):
        x_hat = self.g_s(y_hat)
        return tf.cast(x_hat[:, :height, :width, :], tf.float32)

    def latent_likelihoods(self, y, training):
        raise NotImplementedError

    # -- the loss of eq. 10 ---------------------------------------------------------------------------
    def rate_distortion(self, x, training):
        """Per-image terms of eq. 10: bits per pixel of y and z, distortion, and the reconstruction."""
        x_hat, likelihoods = self(x, training=training)
        num_pixels = tf.cast(tf.shape(x)[1] * tf.shape(x)[2], tf.float32)
        terms = {
            "x_hat": x_hat,
            "bpp_y": losses.bits_from_likelihoods(likelihoods["y"]) / num_pixels,
            "bpp_z": (
                losses.bits_from_likelihoods(likelihoods["z"]) / num_pixels
                if "z" in likelihoods
                else tf.zeros(tf.shape(x)[:1])
            ),
            "mse": losses.mse_255(x, x_hat),
        }
        terms["bpp"] = terms["bpp_y"] + terms["bpp_z"]
        if self.distortion == "ms-ssim":
            terms["ms_ssim"] = losses.ms_ssim(x, x_hat)
            terms["loss"] = terms["bpp"] + self.lmbda * (1.0 - terms["ms_ssim"])
        else:
            terms["loss"] = terms["bpp"] + self.lmbda * terms["mse"]
        return terms

    def _update_metrics(self, x, terms, with_ms_ssim):
        terms = dict(terms)
        terms["psnr"] = losses.psnr_from_mse_255(terms["mse"])
        big_enough = min(x.shape[1] or 0, x.shape[2] or 0) >= losses.MS_SSIM_MIN_SIDE
        if with_ms_ssim and "ms_ssim" not in terms and big_enough:
            terms["ms_ssim"] = losses.ms_ssim(x, tf.clip_by_value(terms["x_hat"], 0.0, 1.0))
        for name, tracker in self._trackers.items():
            if name in terms:
                tracker.update_state(terms[name])
        return {name: tracker.result() for name, tracker in self._trackers.items() if name in terms}

    @property
    def metrics(self):
        return list(self._trackers.values())

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            terms = self.rate_distortion(x, training=True)
            loss = tf.reduce_mean(terms["loss"])
            scaled = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        # MS-SSIM of an MSE-trained model is an evaluation metric (test_step); computing it on every
        # training step would cost time for a number nobody optimizes.
        return self._update_metrics(x, terms, with_ms_ssim=False)

    def test_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        terms = self.rate_distortion(x, training=False)
        terms["x_hat"] = tf.clip_by_value(terms["x_hat"], 0.0, 1.0)
        terms["mse"] = losses.mse_255(x, terms["x_hat"])
        return self._update_metrics(x, terms, with_ms_ssim=True)

    def build(self, input_shape=None):
        # Running the data path once creates every weight (needed before loading saved weights).
        self.call(tf.zeros((1, 64, 64, 3)), training=False)
        self.built = True

    # -- integer coding tables (see entropy_models and codec) ----------------------------------------------
    coding_tables = None  # {"y": CodingTables, "z": CodingTables or absent, "medians": float32 array}
    TABLE_KEYS = ("y", "medians")  # what a saved model must carry (update_tables makes them)
    tables_version = 0  # changes whenever coding_tables do; keys the caches derived from them

    def update_tables(self, precision=16):
        """Builds the integer coding tables from the trained densities; run after training (`save` does)."""
        raise NotImplementedError

    def save_own_variables(self, store):
        # Every way of saving (model.save, keras.saving.save_model, save_weights) stores tables that match
        # the weights being saved.
        self.update_tables()
        super().save_own_variables(store)
        for name, array in _tables_to_arrays(self.coding_tables).items():
            store[name] = array

    def load_own_variables(self, store):
        arrays = {key: np.asarray(store[key]) for key in store.keys() if key.startswith("tables.")}
        self.coding_tables = _tables_from_arrays(arrays) if arrays else None
        missing = sorted(set(self.TABLE_KEYS) - set(self.coding_tables or {}))
        if self.coding_tables is not None and missing:
            # Saved by a development build whose tables lacked these entries; they cannot be rebuilt here because
            # the sublayers' weights load after this method.
            raise ValueError(f"the saved model's coding tables lack {', '.join(missing)} (saved by an older build): "
                             "load it with tfhyper of that version, or retrain")
        self.tables_version = next(_TABLE_VERSIONS)

    def fingerprint(self):
        """4 bytes identifying this model's weights and tables: files are only decoded by the model that wrote them.

        Computed once per set of tables (hashing 20 MB of weights on every file would cost more than coding it);
        `update_tables()` after changing weights makes a new one.
        """
        if self.coding_tables is None:
            raise ValueError("the model has no coding tables yet: call update_tables() (or save it) first")
        cached = _FINGERPRINTS.get(self)
        if cached is not None and cached[0] == self.tables_version:
            return cached[1]
        # What decoding depends on: architecture, weights, tables (not the name, lambda or distortion).
        decoding = {k: self.get_config()[k] for k in ("num_filters", "latent_filters", "density_filters", "fixed_medians")}
        digest = hashlib.sha256(type(self).__name__.encode())
        digest.update(json.dumps(decoding, sort_keys=True).encode())
        for weight in self.weights:
            digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
        for name, array in sorted(_tables_to_arrays(self.coding_tables).items()):
            digest.update(name.encode() + np.ascontiguousarray(array).tobytes())
        _FINGERPRINTS[self] = (self.tables_version, digest.digest()[:4])
        return _FINGERPRINTS[self][1]

    def get_config(self):
        return {
            "num_filters": self.num_filters,
            "latent_filters": self.latent_filters,
            "lmbda": self.lmbda,
            "distortion": self.distortion,
            "density_filters": self.density_filters,
            "fixed_medians": self.fixed_medians,
            "initializer": self.initializer,
            "name": self.name,
        }


@keras.saving.register_keras_serializable(package="tfhyper")
class FactorizedPrior(CompressionModel):
    """Ballé et al. 2017's model as the paper's baseline: y coded with the factorized density (eq. 6)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.entropy_bottleneck = EntropyBottleneck(
            self.latent_filters,
            self.density_filters,
            fixed_medians=self.fixed_medians,
            name="entropy_bottleneck",
            dtype="float32",
        )

    def latent_likelihoods(self, y, training):
        y_tilde, y_likelihoods = self.entropy_bottleneck(y, training=training)
        return y_tilde, {"y": y_likelihoods}

    def update_tables(self, precision=16):
        tables, medians = factorized_tables(self.entropy_bottleneck, precision=precision)
        self.coding_tables = {"y": tables, "medians": medians}
        self.tables_version = next(_TABLE_VERSIONS)


@keras.saving.register_keras_serializable(package="tfhyper")
class ScaleHyperprior(CompressionModel):
    """The paper's model (figure 3, right): z = h_a(|y|) is side information carrying the scales of y."""

    TABLE_KEYS = ("y", "z", "medians", "scales", "thresholds")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h_a = hyper_analysis_transform(self.num_filters, self.latent_filters, initializer=self.initializer)
        self.h_s = hyper_synthesis_transform(self.num_filters, self.latent_filters, initializer=self.initializer)
        self.entropy_bottleneck = EntropyBottleneck(
            self.num_filters,
            self.density_filters,
            fixed_medians=self.fixed_medians,
            name="entropy_bottleneck",
            dtype="float32",
        )
        self.gaussian_conditional = GaussianConditional(name="gaussian_conditional", dtype="float32")

    def hyper_analysis(self, y):
        return tf.cast(self.h_a(tf.abs(y)), tf.float32)

    def hyper_synthesis(self, z_hat, y_shape):
        """sigma_hat = h_s(z_hat), cropped to y's positions (z covers ceil(H_y / 4) * 4 >= H_y)."""
        sigma = self.h_s(z_hat)
        return tf.cast(sigma[:, : y_shape[1], : y_shape[2], :], tf.float32)

    def latent_likelihoods(self, y, training):
        z = self.hyper_analysis(y)
        z_tilde, z_likelihoods = self.entropy_bottleneck(z, training=training)
        sigma = self.hyper_synthesis(z_tilde, tf.shape(y))
        y_tilde, y_likelihoods = self.gaussian_conditional(y, sigma, training=training)
        return y_tilde, {"y": y_likelihoods, "z": z_likelihoods}

    def update_tables(self, precision=16):
        z_tables, medians = factorized_tables(self.entropy_bottleneck, precision=precision)
        y_tables = gaussian_tables(scale_table(), precision=precision)
        self.coding_tables = {
            "y": y_tables,
            "z": z_tables,
            "medians": medians,
            "scales": scale_table(),
            "thresholds": scale_thresholds(scale_table(), y_tables),
        }
        self.tables_version = next(_TABLE_VERSIONS)


def _tables_to_arrays(tables):
    """The coding tables as named numpy arrays (how they are stored inside a saved model)."""
    if tables is None:
        return {}
    arrays = {}
    for key, value in tables.items():
        if isinstance(value, np.ndarray):
            arrays[f"tables.{key}"] = value
        else:
            for name, array in value.to_dict().items():
                arrays[f"tables.{key}.{name}"] = array
    return arrays


def _tables_from_arrays(arrays):
    from tfhyper.coder import CodingTables

    tables, groups = {}, {}
    for name, array in arrays.items():
        parts = name.split(".")
        if len(parts) == 2:
            tables[parts[1]] = array
        else:
            groups.setdefault(parts[1], {})[parts[2]] = array
    for key, group in groups.items():
        tables[key] = CodingTables.from_dict(group)
        tables[key].validate()
    return tables


class IncompatibleModelError(ValueError):
    """A saved tfhyper model that this version cannot code with."""


def load_model(path):
    """Loads a model saved with `model.save(path)` (a `.keras` file)."""
    try:
        return keras.models.load_model(path)
    except ValueError as error:
        # Keras wraps what a layer raised while loading in its own message; ours says what is wrong.
        ours = [line.strip() for line in str(error).splitlines() if "coding tables lack" in line]
        if ours:
            raise IncompatibleModelError(f"{path}: {ours[0]}") from None
        raise


def model_for_quality(kind, quality, distortion="mse", **kwargs):
    """The paper's model at one of its eight rate points: N, M and lambda from `paper.QUALITIES`."""
    q = paper.QUALITIES[quality]
    cls = {"hyperprior": ScaleHyperprior, "factorized": FactorizedPrior}[kind]
    return cls(q.num_filters, q.latent_filters, q.lmbda(distortion), distortion, **kwargs)
