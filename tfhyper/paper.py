"""The paper's numbers, in one place, each with the section it comes from.

Ballé, Minnen, Singh, Hwang, Johnston, "Variational image compression with a scale hyperprior", ICLR 2018.
Where tfhyper follows the reference implementations rather than the paper's text, the comment says so.
"""
import dataclasses

# Appendix 6.1: "For all experiments in this paper, we used K = 4, with the dimensionalities r1 = r2 = r3 = 3."
DENSITY_FILTERS = (3, 3, 3)
# Initial spread of the non-parametric density (both references use 10; the paper does not say).
DENSITY_INIT_SCALE = 10.0

# Section 4.1: Adam with a learning rate of 1e-4, minibatches of 8 random 256x256 crops.
LEARNING_RATE = 1e-4
BATCH_SIZE = 8
PATCH_SIZE = 256

# -- What the paper leaves unsaid about training (section 4.1 names only Adam, its rate, the batch and the crops).
# tfhyper's defaults (`tfhyper.training.RunConfig`, the sweep's cpu preset, the quickstart) are the recipe that
# measured best; the sweep's `paper` preset keeps what the authors' own implementation (tensorflow/compression, TF
# defaults) trained with: AUTHORS_INITIALIZER, AUTHORS_ADAM_EPSILON, no clipping. Measured on Kodak from real
# files, ScaleHyperprior N=32, M=48, lambda 0.013, 5000 steps of 8 x 128x128 crops of ../shared/data/train,
# Adam 1e-3 with the cosine decay (WORKSPACE_NOTES.md, "Training recipe"):
#   authors' choices                    0.3834 bpp, 25.13 dB
#   + fan-in initialization alone       0.3430 bpp, 24.84 dB
#   + clipping at 1.0 alone             0.4454 bpp, 27.03 dB
#   + both (the defaults)               0.4269 bpp, 27.24 dB   (CompressAI's own recipe: 0.4196 bpp, 27.12 dB)
#   + both, Adam epsilon 1e-8           0.4914 bpp, 27.25 dB
# Gradient clipping: each step's gradients scaled down to this global norm when longer (CompressAI clips at 1.0).
# Without it, rare large gradients inflate Adam's second-moment estimate, which then damps the steps that follow.
GRADIENT_CLIP_NORM = 1.0
# Starting weights of the convolutions (`tfhyper.layers.initializers`): PyTorch's default, as CompressAI trains.
INITIALIZER = "fan_in_uniform"
AUTHORS_INITIALIZER = "glorot_uniform"
# The learning rate is the paper's for the paper's 10^6 steps; for the 5000 of the cpu preset, Adam starting at 2e-3
# (with the clipping above, cosine decay) measured 0.4322 bpp, 27.96 dB against the 1e-3 row above: +0.7 dB at the
# same rate, the factorized prior alike (`experiments.sweep`, cpu preset; WORKSPACE_NOTES.md, 2026-12-07).
# Adam's epsilon: Keras' default. PyTorch's 1e-8 measured no better (above), within the spread between seeds.
ADAM_EPSILON = 1e-7
AUTHORS_ADAM_EPSILON = 1e-7

# Section 4.1: photos downsampled so that the shorter side lies between 640 and 1200 pixels.
DOWNSAMPLE_SHORT_SIDE = (640, 1200)

# Lower bound on sigma of eq. 7 and the 64 coding scales between it and 256 (both references).
SCALE_BOUND = 0.11
SCALE_TABLE_MAX = 256.0
SCALE_TABLE_SIZE = 64
# Lower bound on a likelihood, so that -log2 p stays finite in training (both references).
LIKELIHOOD_BOUND = 1e-9
# Probability mass left outside the coding tables of the factorized density (both references).
TAIL_MASS = 1e-9

# Figure 4 and section 4.1 stride structure: g_a downsamples by 2^4, h_a by a further 2^2.
Y_DOWNSAMPLING = 16
Z_DOWNSAMPLING = 64


@dataclasses.dataclass(frozen=True)
class Quality:
    """One of the paper's eight rate points (section 4.1: 8 values of lambda per model family).

    N and M follow figure 4's caption: N=128, M=192 for the five lower lambdas, N=192, M=320 for the
    three higher. The paper does not publish its lambdas; these are CompressAI's for the same
    architecture (loss = lambda * 255^2 * MSE + bpp, or lambda * (1 - MS-SSIM) + bpp), as listed in
    `../shared/reference/README.md`.
    """

    num_filters: int
    latent_filters: int
    lmbda_mse: float
    lmbda_ms_ssim: float

    def lmbda(self, distortion):
        return self.lmbda_mse if distortion == "mse" else self.lmbda_ms_ssim


QUALITIES = {
    1: Quality(128, 192, 0.0018, 2.40),
    2: Quality(128, 192, 0.0035, 4.58),
    3: Quality(128, 192, 0.0067, 8.73),
    4: Quality(128, 192, 0.0130, 16.64),
    5: Quality(128, 192, 0.0250, 31.73),
    6: Quality(192, 320, 0.0483, 60.50),
    7: Quality(192, 320, 0.0932, 115.37),
    8: Quality(192, 320, 0.1800, 220.00),
}
