"""CompressAI weights imported into tfhyper reproduce CompressAI's own outputs (../shared/fixtures).

Tolerances, per tensor against the fixture:
- real-valued tensors (y, z, scales_hat): |ours - theirs| <= 1e-4 (|theirs| + max |theirs|), i.e. 1e-4 relative,
  measured against the tensor's scale where an element is near zero (a sum of float32 products has no elementwise
  relative accuracy there);
- quantized tensors (y_hat, z_hat): exactly equal, except at elements whose unquantized fixture value lies within
  1e-4 of a rounding boundary, where they may differ by one step;
- likelihoods: 1e-4 relative where the fixture's is above 1e-6; x_hat: 1e-3 absolute; total bits: 0.1 %.
"""
import math
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfhyper import convert
from tfhyper.entropy_models import bound_likelihood
from tfhyper.layers import GDN
from tfhyper.models import FactorizedPrior, MeanScaleHyperprior, ScaleHyperprior, load_model

FIXTURES = {"hyperprior": "compressai_hyperprior_n32_m48.npz", "factorized": "compressai_factorized_n32_m48.npz",
            "meanscale": "compressai_meanscale_n32_m48.npz"}
# The same state dicts as PyTorch writes them: zip format (torch >= 1.6) and legacy format (older zoo files).
CHECKPOINTS = {"hyperprior": "compressai_hyperprior_n32_m48.pth.tar",
               "factorized": "compressai_factorized_n32_m48.legacy.pth.tar"}
RTOL = 1e-4
BOUNDARY = 1e-4
LIKELIHOOD_FLOOR = 1e-6


def fixture_path(shared_dir, kind):
    return shared_dir / "fixtures" / FIXTURES[kind]


@pytest.fixture(scope="module")
def fixtures(shared_dir):
    out = {}
    for kind in FIXTURES:
        with np.load(fixture_path(shared_dir, kind)) as archive:
            arrays = {name: archive[name] for name in archive.files}
        params = {name[len("param/") :]: value for name, value in arrays.items() if name.startswith("param/")}
        out[kind] = (arrays, params)
    return out


@pytest.fixture(scope="module")
def converted(fixtures):
    return {kind: convert.from_compressai(params) for kind, (_, params) in fixtures.items()}


@pytest.fixture(scope="module")
def converted_checkpoints(shared_dir):
    """The .pth.tar fixtures converted with `import torch` failing: they must be read without PyTorch."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "torch", None)
        return {
            kind: convert.from_compressai(convert.read_state_dict(shared_dir / "fixtures" / name))
            for kind, name in CHECKPOINTS.items()
        }


@pytest.fixture(params=["npz", "pth"])
def converted_from(request, converted, converted_checkpoints):
    """Each conversion test runs on the model converted from the .npz and on the one read from the .pth.tar."""
    return converted if request.param == "npz" else converted_checkpoints


# -- comparisons --------------------------------------------------------------------------------------------


def assert_close(actual, expected, name):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    scale = np.max(np.abs(expected))
    error = np.abs(actual - expected)
    allowed = RTOL * (np.abs(expected) + scale)
    assert np.all(error <= allowed), f"{name}: max error {error.max():.3g} (scale {scale:.3g})"


def assert_quantized(actual, expected, unquantized, medians, name):
    """Equal, except where (unquantized - median) lies within BOUNDARY of a half-integer: one step off there."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    offset = np.asarray(unquantized) - medians
    on_boundary = np.abs(np.abs(offset - np.floor(offset)) - 0.5) < BOUNDARY
    np.testing.assert_array_equal(actual[~on_boundary], expected[~on_boundary], err_msg=name)
    assert np.all(np.abs(actual - expected)[on_boundary] <= 1 + 1e-6), name
    return on_boundary


def assert_likelihoods(actual, expected, exclude, name):
    actual, expected = np.asarray(actual), np.asarray(expected)
    compared = (expected > LIKELIHOOD_FLOOR) & ~exclude
    assert compared.any(), name
    np.testing.assert_allclose(actual[compared], expected[compared], rtol=RTOL, atol=0, err_msg=name)


def total_bits(*likelihoods):
    return sum(float(np.sum(-np.log2(np.asarray(p, np.float64)))) for p in likelihoods)


def quantize_with_medians(bottleneck, v, medians):
    """What `bottleneck(v, training=False)` computes, with the quantization offsets given explicitly."""
    v_hat = bottleneck.from_symbols(bottleneck.to_symbols(v, medians), medians)
    return v_hat, bound_likelihood(bottleneck.density.likelihood(v_hat))


# -- the fixtures -------------------------------------------------------------------------------------------


def test_models_and_sizes_are_read_from_the_state_dicts(fixtures, converted):
    for kind, cls in (("hyperprior", ScaleHyperprior), ("factorized", FactorizedPrior),
                      ("meanscale", MeanScaleHyperprior)):
        model = converted[kind]
        meta = fixtures[kind][0]["meta"]
        assert type(model) is cls
        assert (model.num_filters, model.latent_filters) == (meta[0], meta[1])
        assert model.density_filters == (3, 3, 3, 3)
        assert model.distortion == "mse" and math.isnan(model.lmbda)
        assert model.coding_tables is not None


def test_gdn_values_follow_compressai_reparameterization(fixtures, converted):
    params = fixtures["hyperprior"][1]
    model = converted["hyperprior"]
    checked = 0
    for prefix in ("g_a", "g_s"):
        for index, layer in enumerate(getattr(model, prefix).layers):
            if not isinstance(layer, GDN):
                continue
            for name, minimum, value in (("beta", 1e-6, layer.beta), ("gamma", 0.0, layer.gamma)):
                stored = params[f"{prefix}.{index}.{name}"].astype(np.float64)
                expected = np.maximum(stored, math.sqrt(minimum + 2.0**-36)) ** 2 - 2.0**-36
                np.testing.assert_allclose(value.numpy(), expected, rtol=1e-6, atol=1e-12)
                checked += 1
    assert checked == 12


def test_bottleneck_call_quantizes_with_its_own_medians(fixtures, converted):
    bottleneck = converted["hyperprior"].entropy_bottleneck
    z = fixtures["hyperprior"][0]["z"]
    v_hat, likelihood = bottleneck(z, training=False)
    expected_hat, expected_likelihood = quantize_with_medians(bottleneck, z, bottleneck.medians())
    np.testing.assert_array_equal(v_hat.numpy(), expected_hat.numpy())
    np.testing.assert_array_equal(likelihood.numpy(), expected_likelihood.numpy())


def check_hyperprior_against_fixture(model, f, params):
    """y, z, sigma (and mu), the quantized latents, likelihoods, x_hat and total bits, to the module's tolerances."""
    # CompressAI quantizes z around its own learned medians, which differ from the exact ones (see convert).
    medians = convert.compressai_medians(params)
    y = model.analysis(f["x"])
    assert_close(y, f["y"], "y")
    z = model.hyper_analysis(y)
    assert_close(z, f["z"], "z")
    z_hat, z_likelihoods = quantize_with_medians(model.entropy_bottleneck, z, medians)
    z_edge = assert_quantized(z_hat, f["z_hat"], f["z"], medians, "z_hat")
    assert_likelihoods(z_likelihoods, f["z_likelihoods"], z_edge, "z_likelihoods")
    parameters = model.prior_parameters(z_hat, tf.shape(y))
    assert_close(parameters["sigma"], f["scales_hat"], "scales_hat")
    mu = parameters.get("mu")
    assert (mu is None) == ("means_hat" not in f)
    y_hat, y_likelihoods = model.gaussian_conditional(y, parameters["sigma"], mu, training=False)
    if mu is None:
        y_edge = assert_quantized(y_hat, f["y_hat"], f["y"], 0.0, "y_hat")
    else:
        # y_hat = round(y - mu) + mu: its integer part is compared exactly, the whole to the real-valued tolerance.
        assert_close(mu, f["means_hat"], "means_hat")
        symbols, expected = np.round(y_hat.numpy() - mu.numpy()), np.round(f["y_hat"] - f["means_hat"])
        y_edge = assert_quantized(symbols, expected, f["y"], f["means_hat"], "y_hat symbols")
        assert_close(y_hat, f["y_hat"], "y_hat")
    assert_likelihoods(y_likelihoods, f["y_likelihoods"], y_edge, "y_likelihoods")
    x_hat = model.synthesis(y_hat, f["x"].shape[1], f["x"].shape[2])
    np.testing.assert_allclose(x_hat.numpy(), f["x_hat"], rtol=0, atol=1e-3)
    expected_bits = total_bits(f["y_likelihoods"], f["z_likelihoods"])
    assert total_bits(y_likelihoods, z_likelihoods) == pytest.approx(expected_bits, rel=1e-3)


def test_hyperprior_reproduces_compressai(fixtures, converted_from):
    check_hyperprior_against_fixture(converted_from["hyperprior"], *fixtures["hyperprior"])


def test_meanscale_reproduces_compressai(fixtures, converted):
    """mbt2018-mean: the same comparisons, plus the means mu of y."""
    check_hyperprior_against_fixture(converted["meanscale"], *fixtures["meanscale"])


def test_factorized_reproduces_compressai(fixtures, converted_from):
    f, params = fixtures["factorized"]
    model = converted_from["factorized"]
    medians = convert.compressai_medians(params)
    y = model.analysis(f["x"])
    assert_close(y, f["y"], "y")
    y_hat, y_likelihoods = quantize_with_medians(model.entropy_bottleneck, y, medians)
    y_edge = assert_quantized(y_hat, f["y_hat"], f["y"], medians, "y_hat")
    assert_likelihoods(y_likelihoods, f["y_likelihoods"], y_edge, "y_likelihoods")
    x_hat = model.synthesis(y_hat, f["x"].shape[1], f["x"].shape[2])
    np.testing.assert_allclose(x_hat.numpy(), f["x_hat"], rtol=0, atol=1e-3)
    assert total_bits(y_likelihoods) == pytest.approx(total_bits(f["y_likelihoods"]), rel=1e-3)


# -- refusing what is not a bmshj2018 state dict ----------------------------------------------------------


def one_line_error(state_dict):
    with pytest.raises(ValueError) as error:
        convert.from_compressai(state_dict)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_unexpected_key_is_named(fixtures):
    params = dict(fixtures["hyperprior"][1])
    params["h_s.6.weight"] = np.zeros((48, 48, 3, 3), np.float32)
    assert "unexpected key h_s.6.weight" in one_line_error(params)


@pytest.mark.parametrize("key", ["h_s.2.bias", "entropy_bottleneck.factors.3", "g_s.5.gamma", "h_a.0.weight"])
def test_missing_key_is_named(fixtures, key):
    params = dict(fixtures["hyperprior"][1])
    del params[key]
    assert f"missing key {key}" in one_line_error(params)


@pytest.mark.parametrize(
    "key, shape",
    [
        ("h_s.4.weight", (32, 48, 3, 3)),  # a ConvTranspose2d layout where a Conv2d belongs
        ("g_s.0.weight", (32, 48, 5, 5)),  # a Conv2d layout where a ConvTranspose2d belongs
        ("g_a.3.gamma", (32, 31)),
        ("entropy_bottleneck.matrices.1", (32, 3, 4)),  # filters other than (3, 3, 3, 3)
        ("entropy_bottleneck.quantiles", (32, 3)),
    ],
)
def test_wrong_shape_is_named(fixtures, key, shape):
    params = dict(fixtures["hyperprior"][1])
    params[key] = np.zeros(shape, np.float32)
    assert key in one_line_error(params)


def test_factorized_state_dict_is_checked_too(fixtures):
    params = dict(fixtures["factorized"][1])
    params["entropy_bottleneck.biases.4"] = np.zeros((32, 1, 1), np.float32)  # z's channels, not y's
    assert "entropy_bottleneck.biases.4" in one_line_error(params)


def test_buffers_tfhyper_relies_on_are_checked(fixtures):
    params = dict(fixtures["hyperprior"][1])
    params["g_a.1.beta_reparam.pedestal"] = np.array([2.0**-30], np.float32)
    assert "g_a.1.beta_reparam.pedestal" in one_line_error(params)
    params = dict(fixtures["hyperprior"][1])
    params["gaussian_conditional.scale_bound"] = np.array([0.2], np.float32)
    assert "gaussian_conditional.scale_bound" in one_line_error(params)


def test_non_finite_weights_are_refused(fixtures):
    params = dict(fixtures["factorized"][1])
    params["g_s.2.bias"] = np.full(32, np.nan, np.float32)
    assert "g_s.2.bias" in one_line_error(params)


def older_name(key, style):
    """The density parameter's name in older CompressAI releases: `_matrices.k` ("list") or `_matrixk` ("flat")."""
    names = (("matrices", "_matrices", "_matrix"), ("biases", "_biases", "_bias"), ("factors", "_factors", "_factor"))
    for new, listed, flat in names:
        prefix = f"entropy_bottleneck.{new}."
        if key.startswith(prefix):
            k = key[len(prefix) :]
            return f"entropy_bottleneck.{listed}.{k}" if style == "list" else f"entropy_bottleneck.{flat}{k}"
    return key


@pytest.mark.parametrize("style", ["list", "flat"])
def test_older_density_parameter_names_are_accepted(fixtures, style):
    params = {older_name(key, style): value for key, value in fixtures["factorized"][1].items()}
    assert "entropy_bottleneck.matrices.0" not in params
    kind, n, m, arrays = convert.check_state_dict(params)
    assert (kind, n, m) == ("factorized", 32, 48)
    assert set(arrays) == set(fixtures["factorized"][1])


# -- files and the command line ---------------------------------------------------------------------------


class FakeTensor:
    """Stands in for torch.Tensor: the loader converts anything with .detach().cpu().numpy()."""

    def __init__(self, array):
        self.array = array

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.array


def test_checkpoints_are_unwrapped():
    weight = np.ones((2, 3), np.float32)
    state = convert.state_dict_from_checkpoint(
        {"epoch": 3, "state_dict": {"module.g_a.0.weight": FakeTensor(weight), "g_a.0.bias": weight[0]}}
    )
    assert set(state) == {"g_a.0.weight", "g_a.0.bias"}
    assert isinstance(state["g_a.0.weight"], np.ndarray)
    with pytest.raises(ValueError, match="g_a.0.bias"):
        convert.state_dict_from_checkpoint({"g_a.0.bias": [1.0, 2.0]})


def test_pth_files_are_read_without_torch(shared_dir, fixtures, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    for kind, name in CHECKPOINTS.items():
        state = convert.read_state_dict(shared_dir / "fixtures" / name)
        expected = fixtures[kind][1]
        assert set(state) == set(expected)
        for key, value in expected.items():
            assert state[key].dtype == value.dtype, key
            np.testing.assert_array_equal(state[key], value, err_msg=key)
    status, out, err = run_main([shared_dir / "fixtures" / CHECKPOINTS["factorized"], tmp_path / "f.keras"], capsys)
    assert status == 0 and err == "" and "FactorizedPrior N=32 M=48" in out


def test_hostile_checkpoint_is_refused_before_it_runs(shared_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the hostile pickle would write its marker into the current directory
    status, _, err = run_main([shared_dir / "fixtures" / "hostile_pickle.pth.tar", tmp_path / "h.keras"], capsys)
    assert status == 1 and err.count("\n") == 1 and "refused" in err and "system" in err, err
    assert not (tmp_path / "tfhyper-pwned").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def run_main(argv, capsys):
    status = convert.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_command_line_writes_a_model_that_reproduces_the_conversion(shared_dir, fixtures, converted, tmp_path, capsys):
    source = fixture_path(shared_dir, "hyperprior")
    output = tmp_path / "hyperprior.keras"
    status, out, err = run_main([source, output], capsys)
    assert status == 0 and err == "" and "ScaleHyperprior N=32 M=48" in out
    loaded = load_model(output)
    assert type(loaded) is ScaleHyperprior and math.isnan(loaded.lmbda)
    x = fixtures["hyperprior"][0]["x"]
    x_hat, likelihoods = loaded(x, training=False)
    expected_x_hat, expected_likelihoods = converted["hyperprior"](x, training=False)
    np.testing.assert_array_equal(x_hat.numpy(), expected_x_hat.numpy())
    for name in ("y", "z"):
        np.testing.assert_array_equal(likelihoods[name].numpy(), expected_likelihoods[name].numpy())
    np.testing.assert_array_equal(loaded.coding_tables["medians"], converted["hyperprior"].coding_tables["medians"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hyperprior.keras"]  # no temporary file left

    before = output.read_bytes()
    status, _, err = run_main([source, output], capsys)
    assert status == 1 and err.count("\n") == 1 and "--force" in err
    assert output.read_bytes() == before
    status, _, err = run_main([source, output, "--force"], capsys)
    assert status == 0 and err == ""


def test_command_line_reports_bad_inputs_in_one_line(shared_dir, fixtures, tmp_path, capsys):
    broken = tmp_path / "broken.npz"
    params = dict(fixtures["factorized"][1])
    del params["g_s.4.weight"]
    np.savez(broken, **params)  # plain names, no "param/" prefix
    cases = [
        ([broken, tmp_path / "out.keras"], "missing key g_s.4.weight"),
        ([tmp_path / "absent.npz", tmp_path / "out.keras"], "no such file"),
        ([fixture_path(shared_dir, "factorized"), tmp_path / "out.h5"], ".keras"),
    ]
    for argv, message in cases:
        status, _, err = run_main(argv, capsys)
        assert status == 1 and err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.npz"]


def test_converted_model_quantizes_with_compressai_medians_natively(fixtures):
    """The converted model carries CompressAI's medians, so its own evaluation path reproduces z_hat exactly."""
    f, params = fixtures["hyperprior"]
    model = convert.from_compressai(params)
    np.testing.assert_array_equal(model.entropy_bottleneck.medians().numpy(), convert.compressai_medians(params))
    z_hat, _ = model.entropy_bottleneck(tf.constant(f["z"]), training=False)
    np.testing.assert_allclose(z_hat.numpy(), f["z_hat"], atol=1e-5)


# The coder's fixed framing: one byte giving the lane count, and the last lane's final window, which
# carries a check of at least 24 bits over all decoded values (see tfhyper.coder).
CODER_FRAMING_BYTES = 5


@pytest.mark.parametrize("kind", ["hyperprior", "factorized", "meanscale"])
def test_converted_models_compress_through_tfhyper_coder(fixtures, converted, kind):
    from tfhyper import bitstream, codec

    arrays, _ = fixtures[kind]
    model = converted[kind]
    image = np.round(arrays["x"][0] * 255).astype(np.uint8)
    data = codec.compress(model, image)
    _, symbols, _ = codec.decode_symbols(model, data)
    # Round trip exact: the decoded symbols are the fixture's own rounded latents.
    medians = convert.compressai_medians(fixtures[kind][1])
    if kind == "hyperprior":
        np.testing.assert_array_equal(symbols["y"], arrays["y_hat"][0])
        np.testing.assert_allclose(symbols["z"] + medians, arrays["z_hat"][0], atol=1e-5)
        likelihoods = (arrays["y_likelihoods"], arrays["z_likelihoods"])
    elif kind == "meanscale":
        # y's symbols are round(y - mu) with the integer h_s's mu (within 2^-16 of CompressAI's float one).
        expected = np.round(arrays["y_hat"][0] - arrays["means_hat"][0])
        offset = arrays["y"][0] - arrays["means_hat"][0]
        away = np.abs(np.abs(offset - np.floor(offset)) - 0.5) > 1e-3
        np.testing.assert_array_equal(symbols["y"][away], expected[away])
        np.testing.assert_allclose(symbols["z"] + medians, arrays["z_hat"][0], atol=1e-5)
        likelihoods = (arrays["y_likelihoods"], arrays["z_likelihoods"])
    else:
        np.testing.assert_allclose(symbols["y"] + medians, arrays["y_hat"][0], atol=1e-5)
        likelihoods = (arrays["y_likelihoods"],)
    fixture_bytes = total_bits(*likelihoods) / 8
    header, sections = bitstream.unpack(data)
    container = len(data) - len(sections[0])
    assert len(data) <= 1.01 * (fixture_bytes + container + CODER_FRAMING_BYTES)
    assert len(data) >= fixture_bytes  # no coder beats the model's own likelihoods by much
