"""The models as keras.Model subclasses, trained on rate + lambda * distortion (eq. 10), one class per kind.

    FactorizedPrior:      x -g_a-> y -Q-> y_hat -g_s-> x_hat;  y_hat coded with the factorized density (eq. 6)
    ScaleHyperprior:      additionally |y| -h_a-> z -Q-> z_hat -h_s-> sigma_hat; y_hat coded with N(0, sigma_hat^2)
                          convolved with a unit uniform (eq. 7, 11), z_hat with the factorized density (eq. 9)
    MeanScaleHyperprior:  y -h_a-> z; h_s(z_hat) -> (sigma_hat, mu_hat); round(y - mu_hat) coded under
                          N(0, sigma_hat^2) * U (Minnen et al. 2018, without the context model)

Each class owns its coding (`LATENTS`, `latent_shapes`, `segment`): which latents a file holds, in which
order, and with which tables, indexes and offsets; `codec` only packs, validates and calls it. `MODELS` maps
the kinds' names ("factorized", "hyperprior", "meanscale") to the classes; `register` adds one.

Images are float32 NHWC in [0, 1], of any size: the input is padded to a multiple of 16 by repeating
its border and the reconstruction is cropped back.
"""
import hashlib
import json
import weakref

import keras
import numpy as np
import tensorflow as tf

from tfhyper import bitstream, distribute, losses, paper
from tfhyper.densities import scale_table
from tfhyper.entropy_models import (
    EntropyBottleneck,
    GaussianConditional,
    factorized_tables,
    gaussian_tables,
    scale_thresholds,
)
from tfhyper.integer_hyper_synthesis import IntegerHyperSynthesis
from tfhyper.transforms import (
    analysis_transform,
    hyper_analysis_transform,
    hyper_synthesis_transform,
    mean_scale_hyper_analysis_transform,
    mean_scale_hyper_synthesis_transform,
    synthesis_transform,
)

DISTORTIONS = ("mse", "ms-ssim")
# What each model derives from its coding tables (fingerprint, integer h_s), with the tables it was derived from;
# kept outside Keras' attribute tracking, and rebuilt whenever `coding_tables` is another object.
_DERIVED = weakref.WeakKeyDictionary()

MODELS = {}  # kind name -> model class, filled by `register`


def register(kind, file_kind, title):
    """Class decorator adding a model kind: its name (`MODELS`, --model), its byte in file headers, and its title.

    The class is registered with Keras too, so saved models load by class name.
    """

    def add(cls):
        taken = {other.FILE_KIND: name for name, other in MODELS.items()}
        if kind in MODELS or file_kind in taken:
            raise ValueError(f"model kind {kind!r} or file kind {file_kind} is registered already")
        cls.KIND, cls.FILE_KIND, cls.TITLE = kind, file_kind, title
        bitstream.register_kind(file_kind, title, side_information=len(cls.LATENTS) > 1)
        MODELS[kind] = keras.saving.register_keras_serializable(package="tfhyper")(cls)
        return MODELS[kind]

    return add


def model_class(kind):
    """The class registered as `kind`; a clear ValueError for an unknown name."""
    try:
        return MODELS[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}: choose one of {', '.join(MODELS)}") from None


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
        density_init_scale=paper.DENSITY_INIT_SCALE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.fixed_medians = bool(fixed_medians)
        # How the convolutions and the factorized density start (`layers.initializers`, appendix 6.1's density of
        # about this width); neither changes what a trained model computes.
        self.initializer = initializer
        self.density_init_scale = float(density_init_scale)
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

    def factorized_density(self, channels):
        """The factorized prior of eq. 6 / 9 over `channels` channels (y of the factorized model, z of a hyperprior)."""
        return EntropyBottleneck(
            channels, self.density_filters, init_scale=self.density_init_scale, fixed_medians=self.fixed_medians,
            name="entropy_bottleneck", dtype="float32",
        )

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
        results = {name: tracker.result() for name, tracker in self._trackers.items() if name in terms}
        return distribute.step_logs(results)

    @property
    def metrics(self):
        return list(self._trackers.values())

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            terms = self.rate_distortion(x, training=True)
            loss = tf.reduce_mean(terms["loss"])  # eq. 10 over this replica's crops
            scaled = self.optimizer.scale_loss(distribute.replica_share(loss))
        gradients = tape.gradient(scaled, self.trainable_variables)
        gradients = distribute.cross_replica_gradients(self.optimizer, gradients)  # the global batch's, clipped
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

    # -- coding (used by codec) ---------------------------------------------------------------------------
    LATENTS = ("y",)  # the latents a file codes, in coding order; each one's coding may depend on those before

    def encoder_latents(self, x):
        """{name: float32 latent} of an image batch in [0, 1], for every name in LATENTS."""
        return {"y": self.analysis(x)}

    def latent_shapes(self, height, width):
        """{name: (h, w, c)} of the latents of an image of height x width."""
        y_hw = bitstream.expected_latent_hw(height, width, paper.Y_DOWNSAMPLING)
        return {"y": (*y_hw, self.latent_filters)}

    def segment(self, name, symbols, shapes):
        """How latent `name` is coded (`entropy_models.Segment`), given the symbols of the latents before it."""
        raise NotImplementedError

    def explain(self, values, shapes):
        """Extra maps for plots (`analysis`): for the hyperpriors, sigma_hat (and mu_hat) from z_hat."""
        return {}

    # -- integer coding tables (see entropy_models) ------------------------------------------------------------
    coding_tables = None  # {"y": CodingTables, "z": CodingTables or absent, "medians": float32 array}
    TABLE_KEYS = ("y", "medians")  # what a saved model must carry (update_tables makes them)

    def update_tables(self, precision=16):
        """Builds the integer coding tables from the trained densities; run after training (`save` does)."""
        raise NotImplementedError

    def tables(self):
        """The coding tables, built from the densities first if the model has none yet."""
        if self.coding_tables is None:
            self.update_tables()
        return self.coding_tables

    def _derived(self, name, build):
        """`build()`, computed once per set of coding tables (a new `coding_tables` object starts afresh)."""
        entry = _DERIVED.get(self)
        if entry is None or entry[0] is not self.coding_tables:
            entry = _DERIVED[self] = (self.coding_tables, {})
        if name not in entry[1]:
            entry[1][name] = build()
        return entry[1][name]

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

    def fingerprint(self):
        """4 bytes identifying this model's weights and tables: files are only decoded by the model that wrote them.

        Computed once per set of tables (hashing 20 MB of weights on every file would cost more than coding it);
        `update_tables()` after changing weights makes a new one.
        """
        if self.coding_tables is None:
            raise ValueError("the model has no coding tables yet: call update_tables() (or save it) first")
        return self._derived("fingerprint", self._fingerprint)

    def _fingerprint(self):
        # What decoding depends on: architecture, weights, tables (not the name, lambda or distortion).
        decoding = {k: self.get_config()[k] for k in ("num_filters", "latent_filters", "density_filters", "fixed_medians")}
        digest = hashlib.sha256(type(self).__name__.encode())
        digest.update(json.dumps(decoding, sort_keys=True).encode())
        for weight in self.weights:
            digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
        for name, array in sorted(_tables_to_arrays(self.coding_tables).items()):
            digest.update(name.encode() + np.ascontiguousarray(array).tobytes())
        return digest.digest()[:4]

    def get_config(self):
        return {
            "num_filters": self.num_filters,
            "latent_filters": self.latent_filters,
            "lmbda": self.lmbda,
            "distortion": self.distortion,
            "density_filters": self.density_filters,
            "fixed_medians": self.fixed_medians,
            "initializer": self.initializer,
            "density_init_scale": self.density_init_scale,
            "name": self.name,
        }


@register("factorized", file_kind=0, title="factorized prior")
class FactorizedPrior(CompressionModel):
    """Ballé et al. 2017's model as the paper's baseline: y coded with the factorized density (eq. 6)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.entropy_bottleneck = self.factorized_density(self.latent_filters)

    def latent_likelihoods(self, y, training):
        y_tilde, y_likelihoods = self.entropy_bottleneck(y, training=training)
        return y_tilde, {"y": y_likelihoods}

    def update_tables(self, precision=16):
        tables, medians = factorized_tables(self.entropy_bottleneck, precision=precision)
        self.coding_tables = {"y": tables, "medians": medians}

    def segment(self, name, symbols, shapes):
        """y: round(y - median) per channel, one table per channel (eq. 6)."""
        tables = self.tables()
        return self.entropy_bottleneck.segment(shapes["y"], tables["y"], tables["medians"])


class Hyperprior(CompressionModel):
    """What the hyperprior models share: side information z = h_a(y) coded with the factorized density (eq. 9),
    and y coded under a Gaussian whose parameters h_s computes from z_hat (eq. 7, 11).

    A subclass says how h_a and h_s are built (`hyper_transforms`), what h_a sees (`hyper_analysis`) and which
    Gaussian parameters h_s's output holds (`prior_parameters`, `y_segment`).
    """

    LATENTS = ("z", "y")  # side information first: the decoder needs z_hat to find y's tables
    TABLE_KEYS = ("y", "z", "medians", "scales", "thresholds")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h_a, self.h_s = self.hyper_transforms()
        self.entropy_bottleneck = self.factorized_density(self.num_filters)
        self.gaussian_conditional = GaussianConditional(name="gaussian_conditional", dtype="float32")

    def hyper_transforms(self):
        raise NotImplementedError

    def hyper_analysis(self, y):
        raise NotImplementedError

    def prior_parameters(self, z_hat, y_shape):
        """{"sigma": ..., and "mu" where the model has means}: h_s(z_hat) cropped to y's positions
        (z covers ceil(H_y / 4) * 4 >= H_y), float32."""
        raise NotImplementedError

    def latent_likelihoods(self, y, training):
        z = self.hyper_analysis(y)
        z_tilde, z_likelihoods = self.entropy_bottleneck(z, training=training)
        parameters = self.prior_parameters(z_tilde, tf.shape(y))
        y_tilde, y_likelihoods = self.gaussian_conditional(y, parameters["sigma"], parameters.get("mu"), training=training)
        return y_tilde, {"y": y_likelihoods, "z": z_likelihoods}

    def encoder_latents(self, x):
        y = self.analysis(x)
        return {"y": y, "z": self.hyper_analysis(y)}

    def latent_shapes(self, height, width):
        z_hw = bitstream.expected_latent_hw(height, width, paper.Z_DOWNSAMPLING)
        return {**super().latent_shapes(height, width), "z": (*z_hw, self.num_filters)}

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

    def integer_hyper_synthesis(self):
        """h_s in integer arithmetic (`integer_hyper_synthesis`), built once per set of tables."""
        tables = self.tables()
        return self._derived(
            "integer_hyper_synthesis",
            lambda: IntegerHyperSynthesis.from_model(self, tables["medians"], tables["thresholds"]),
        )

    def segment(self, name, symbols, shapes):
        tables = self.tables()
        if name == "z":
            return self.entropy_bottleneck.segment(shapes["z"], tables["z"], tables["medians"])
        return self.y_segment(symbols["z"], shapes["y"])

    def y_segment(self, z_symbols, y_shape):
        raise NotImplementedError

    def explain(self, values, shapes):
        parameters = self.prior_parameters(tf.constant(values["z"][None]), (1, *shapes["y"]))
        sigma = np.maximum(parameters["sigma"].numpy()[0], self.gaussian_conditional.scale_bound)
        found = {"sigma_hat": sigma}
        if "mu" in parameters:
            found["mu_hat"] = parameters["mu"].numpy()[0]
        return found


@register("hyperprior", file_kind=1, title="scale hyperprior")
class ScaleHyperprior(Hyperprior):
    """The paper's model (figure 3, right): z = h_a(|y|) is side information carrying the scales of y, which is
    coded as round(y) under N(0, sigma^2) convolved with U(-1/2, 1/2) (eq. 7, 11)."""

    def hyper_transforms(self):
        return (
            hyper_analysis_transform(self.num_filters, self.latent_filters, initializer=self.initializer),
            hyper_synthesis_transform(self.num_filters, self.latent_filters, initializer=self.initializer),
        )

    def hyper_analysis(self, y):
        return tf.cast(self.h_a(tf.abs(y)), tf.float32)

    def hyper_synthesis(self, z_hat, y_shape):
        """sigma_hat = h_s(z_hat), cropped to y's positions."""
        return self.prior_parameters(z_hat, y_shape)["sigma"]

    def prior_parameters(self, z_hat, y_shape):
        sigma = self.h_s(z_hat)
        return {"sigma": tf.cast(sigma[:, : y_shape[1], : y_shape[2], :], tf.float32)}

    def y_segment(self, z_symbols, y_shape):
        indexes = self.integer_hyper_synthesis().indexes(z_symbols, y_shape[:2])
        return self.gaussian_conditional.segment(indexes, self.tables()["y"])


@register("meanscale", file_kind=2, title="mean-scale hyperprior")
class MeanScaleHyperprior(Hyperprior):
    """The "mean & scale" hyperprior of Minnen, Ballé and Toderici 2018 (section 3, without the context model;
    CompressAI's `MeanScaleHyperprior`, `mbt2018-mean`): h_a sees y itself, h_s predicts a mean mu as well as a
    scale sigma for every element of y, and y is coded as round(y - mu) under N(0, sigma^2) * U(-1/2, 1/2).

        h_a:  conv N 3x3/1, LeakyReLU, conv N 5x5/2, LeakyReLU, conv N 5x5/2
        h_s:  deconv M 5x5/2, LeakyReLU, deconv 3M/2 5x5/2, LeakyReLU, conv 2M 3x3/1 -> (sigma, mu)

    mu, like sigma's table indexes, comes from the integer-exact h_s, so encoder and decoder subtract and add
    exactly the same value on any machine.
    """

    def hyper_transforms(self):
        return (
            mean_scale_hyper_analysis_transform(self.num_filters, self.latent_filters, initializer=self.initializer),
            mean_scale_hyper_synthesis_transform(self.num_filters, self.latent_filters, initializer=self.initializer),
        )

    def hyper_analysis(self, y):
        return tf.cast(self.h_a(y), tf.float32)

    def prior_parameters(self, z_hat, y_shape):
        out = tf.cast(self.h_s(z_hat)[:, : y_shape[1], : y_shape[2], :], tf.float32)
        return {"sigma": out[..., : self.latent_filters], "mu": out[..., self.latent_filters :]}

    def y_segment(self, z_symbols, y_shape):
        indexes, means = self.integer_hyper_synthesis().indexes_and_means(z_symbols, y_shape[:2], self.latent_filters)
        return self.gaussian_conditional.segment(indexes, self.tables()["y"], means)


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
    return model_class(kind)(q.num_filters, q.latent_filters, q.lmbda(distortion), distortion, **kwargs)
