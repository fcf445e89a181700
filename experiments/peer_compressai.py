"""The peers' side of `experiments.benchmark_peers`: CompressAI (PyTorch) and constriction on the same work.

Run by the peers' interpreter, never imported by tfhyper (which has neither torch nor constriction as a dependency):

    PEER_PYTHON experiments/peer_compressai.py JOB.json

JOB.json names the work and its inputs (arrays in .npy / .npz files written by the tfhyper side); the answer is one
line of JSON on stdout. Jobs:
  {"work": "train", "batch": B.npy, "num_filters": N, "latent_filters": M, "lmbda": L, "warmup": W, "steps": S}
      seconds of each timed step of CompressAI's own recipe: loss lambda * 255^2 * MSE + bpp, Adam, gradients clipped
      at norm 1.0, the auxiliary quantile loss with its own Adam.
  {"work": "codec", "image": X.npy, "num_filters": N, "latent_filters": M, "seed": S, "repeats": R, "weights": W.npz}
      a seeded ScaleHyperprior after `update(force=True)`; writes its state dict to W.npz (the same weights for
      tfhyper), and times `compress` / `decompress` of the image.
  {"work": "coder", "latents": L.npz, "repeats": R}
      constriction's ANS coder with a quantized Gaussian per symbol (the scale of the symbol's table).
"""
import json
import sys
import time

import numpy as np

# Run as a script from experiments/, whose timing module imports neither tfhyper nor TensorFlow at its top.
from timing import median_seconds


def train(job):
    import torch
    from compressai.models import ScaleHyperprior

    torch.manual_seed(0)
    net = ScaleHyperprior(job["num_filters"], job["latent_filters"])
    net.train()
    main_parameters = [p for n, p in net.named_parameters() if not n.endswith(".quantiles")]
    aux_parameters = [p for n, p in net.named_parameters() if n.endswith(".quantiles")]
    optimizer = torch.optim.Adam(main_parameters, lr=1e-4)
    aux_optimizer = torch.optim.Adam(aux_parameters, lr=1e-3)
    x = torch.from_numpy(np.load(job["batch"])).permute(0, 3, 1, 2).contiguous()
    pixels = x.shape[0] * x.shape[2] * x.shape[3]

    def step():
        optimizer.zero_grad()
        aux_optimizer.zero_grad()
        out = net(x)
        bpp = sum(torch.log(p).sum() for p in out["likelihoods"].values()) / (-np.log(2) * pixels)
        loss = job["lmbda"] * 255**2 * torch.mean((out["x_hat"] - x) ** 2) + bpp
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        aux_loss = net.aux_loss()
        aux_loss.backward()
        aux_optimizer.step()

    times = []
    for index in range(job["warmup"] + job["steps"]):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"step_seconds": times[job["warmup"]:], "threads": torch.get_num_threads()}


def codec(job):
    import torch
    from compressai.models import ScaleHyperprior

    torch.manual_seed(job["seed"])
    net = ScaleHyperprior(job["num_filters"], job["latent_filters"]).eval()
    net.update(force=True)
    np.savez(job["weights"], **{k: v.detach().numpy() for k, v in net.state_dict().items()})
    x = torch.from_numpy(np.load(job["image"]).astype(np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()
    with torch.no_grad():
        coded = net.compress(x)
        compress_s = median_seconds(lambda: net.compress(x), job["repeats"])
        decompress_s = median_seconds(lambda: net.decompress(coded["strings"], coded["shape"]), job["repeats"])
        x_hat = net.decompress(coded["strings"], coded["shape"])["x_hat"]
    mse = float(torch.mean((torch.round(x_hat.clamp(0, 1) * 255) - torch.round(x * 255)) ** 2))
    return {"compress_seconds": compress_s, "decompress_seconds": decompress_s,
            "bytes": sum(len(s[0]) for s in coded["strings"]), "psnr": 10 * np.log10(255**2 / mse)}


def coder(job):
    import constriction

    latents = np.load(job["latents"])
    symbols = np.concatenate([latents["z"].ravel(), latents["y"].ravel()]).astype(np.int32)
    scales = np.concatenate([latents["z_scales"].ravel(), latents["y_scales"].ravel()]).astype(np.float64)
    means = np.zeros_like(scales)
    reach = int(np.abs(symbols).max()) + 1
    family = constriction.stream.model.QuantizedGaussian(-reach, reach)

    def encode():
        encoder = constriction.stream.stack.AnsCoder()
        encoder.encode_reverse(symbols, family, means, scales)
        return encoder.get_compressed()

    data = encode()

    def decode():
        return constriction.stream.stack.AnsCoder(data).decode(family, means, scales)

    exact = bool(np.array_equal(decode(), symbols))
    return {"encode_seconds": median_seconds(encode, job["repeats"]),
            "decode_seconds": median_seconds(decode, job["repeats"]),
            "bytes": int(data.nbytes), "exact": exact, "symbols": int(symbols.size)}


WORK = {"train": train, "codec": codec, "coder": coder}

if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        request = json.load(f)
    print(json.dumps(WORK[request["work"]](request)))
