"""Named models, ready to use: the paper's 32 from CompressAI's published weights, and the ones bundled with tfhyper.

    model = tfhyper.zoo.load("bmshj2018-hyperprior-mse-3")   # downloaded once, verified, converted, cached
    model = tfhyper.zoo.load("tfhyper-cpu-hyperprior-mse-4") # shipped inside the package, works offline
    python -m tfhyper zoo                                    # the catalogue
    python -m tfhyper compress --model=zoo:NAME ...          # `zoo:NAME` wherever a model path is accepted

CompressAI trained both of the paper's models, for MSE and for MS-SSIM, at its eight qualities (N, M and lambda
of `paper.QUALITIES`) far longer than a CPU allows, and publishes them (`model_urls` in its `compressai/zoo/
image.py`). The file names carry the first 8 hex digits of the file's SHA-256 (torch.hub's convention); only that
prefix is published, so a download is verified against those 32 bits, which catch a corrupted or substituted file
by accident but do not make a forgery hard. Their Kodak results (`tfhyper/reference/compressai/`) are what
`experiments.evaluate` should come close to with the converted models.

A download goes into a temporary file in the cache, hashed while it is written, and is renamed into place only when
complete and verified, so an interrupted or refused download leaves no file that looks finished. The checkpoint is
then read without PyTorch (`pytorch_checkpoint`), converted (`convert.from_compressai`, with the lambda and
distortion it was trained for) and saved beside it as NAME.keras, with NAME.json holding the model's fingerprint, so
that `find_by_fingerprint` names the model that wrote a `.tfh` file without loading every model.

The cache is $TFHYPER_CACHE if set, else $XDG_CACHE_HOME/tfhyper, else ~/.cache/tfhyper; models live in its
`models/` folder. A file downloaded by other means may be put there under CompressAI's file name.

Bundled models are `.keras` files in `tfhyper/zoo_models/`, listed in its `manifest.json` (name, kind, distortion,
quality, N, M, lambda, fingerprint, training settings, Kodak results); adding one is copying the file there and
adding its entry (see that folder's README.md).
"""
import contextlib
import csv
import dataclasses
import functools
import hashlib
import http.client
import importlib.resources
import json
import os
import pathlib
import tempfile
import urllib.error
import urllib.request

from tfhyper import paper

ZOO_PREFIX = "zoo:"
DOWNLOAD_TIMEOUT_S = 60  # per network operation: a guard against a server that hangs, not a limit on the download
_CHUNK_BYTES = 1 << 20
_PUBLISHED_HASH_DIGITS = 8

# CompressAI's published bmshj2018 weights: (kind, distortion) -> (file name stem, SHA-256 prefix per quality 1..8).
COMPRESSAI_ROOT_URL = "https://compressai.s3.amazonaws.com/models/v1"
COMPRESSAI_FILES = {
    ("factorized", "mse"): ("bmshj2018-factorized-prior", (
        "446d5c7f", "87279a02", "5c6f152b", "1ed4405a", "866ba797", "9b02ea3a", "6dfd6734", "5232faa3")),
    ("factorized", "ms-ssim"): ("bmshj2018-factorized-ms-ssim", (
        "9781d705", "4a584386", "5352f123", "4f91b847", "b3a88897", "ee028763", "8c265a29", "8811bd14")),
    ("hyperprior", "mse"): ("bmshj2018-hyperprior", (
        "7eb97409", "93677231", "6d87be32", "de1b779c", "f8b614e1", "1ab9c41e", "3804dcbd", "a583f0cf")),
    ("hyperprior", "ms-ssim"): ("bmshj2018-hyperprior-ms-ssim", (
        "5cf249be", "1ff60d1f", "92dd7878", "4377354e", "c34afc8d", "3a6d8229", "8747d3bc", "cc15b5f3")),
}  # fmt: skip


class ZooError(ValueError):
    """An unknown model name, or a cached file that is not what it should be."""


class DownloadError(OSError):
    """A model file could not be downloaded, or what arrived is not the published file."""


@dataclasses.dataclass(frozen=True)
class ZooModel:
    """One named model. CompressAI's have `url` and `sha256` (the published prefix); bundled ones have `file`."""

    name: str
    kind: str  # "hyperprior" (ScaleHyperprior) or "factorized" (FactorizedPrior)
    distortion: str  # "mse" or "ms-ssim"
    quality: int | None
    num_filters: int
    latent_filters: int
    lmbda: float
    url: str | None = None
    sha256: str | None = None
    file: str | None = None
    fingerprint: str | None = None  # hex, as `CompressionModel.fingerprint()`; bundled models only
    kodak: dict | None = None  # {"bpp", "psnr_db", "ms_ssim"}: mean over the 24 Kodak images
    training: dict | None = None

    @property
    def bundled(self):
        return self.file is not None

    @property
    def family(self):
        """The name without its quality: what `choose` combines with --quality."""
        return self.name.rsplit("-", 1)[0]


# -- the catalogue -------------------------------------------------------------------------------------------------


def _compressai_kodak(kind, distortion):
    """quality -> {"bpp", "psnr_db", "ms_ssim"}: CompressAI's published Kodak results (tfhyper/reference)."""
    path = importlib.resources.files("tfhyper.reference") / "compressai" / f"bmshj2018-{kind}-{distortion}.csv"
    rows = csv.DictReader(path.read_text(encoding="ascii").splitlines())
    return {int(row["quality"]): {k: float(row[k]) for k in ("bpp", "psnr_db", "ms_ssim")} for row in rows}


def compressai_models():
    """The paper's 32 models as CompressAI publishes them, named bmshj2018-KIND-DISTORTION-QUALITY."""
    entries = []
    for (kind, distortion), (stem, hashes) in COMPRESSAI_FILES.items():
        kodak = _compressai_kodak(kind, distortion)
        for quality, prefix in enumerate(hashes, start=1):
            q = paper.QUALITIES[quality]
            entries.append(ZooModel(
                name=f"bmshj2018-{kind}-{distortion}-{quality}", kind=kind, distortion=distortion, quality=quality,
                num_filters=q.num_filters, latent_filters=q.latent_filters, lmbda=q.lmbda(distortion),
                url=f"{COMPRESSAI_ROOT_URL}/{stem}-{quality}-{prefix}.pth.tar", sha256=prefix, kodak=kodak[quality],
            ))  # fmt: skip
    return entries


def bundled_dir():
    return pathlib.Path(__file__).resolve().parent / "zoo_models"


@functools.cache
def _manifest():
    return json.loads((bundled_dir() / "manifest.json").read_text(encoding="utf-8"))


def bundled_models():
    """The models shipped in tfhyper/zoo_models, as its manifest.json lists them."""
    fields = {field.name for field in dataclasses.fields(ZooModel)}
    renamed = {"N": "num_filters", "M": "latent_filters", "lambda": "lmbda"}
    entries = []
    for item in _manifest()["models"]:
        item = {renamed.get(key, key): value for key, value in item.items()}
        unknown = set(item) - fields
        if unknown:
            raise ZooError(f"zoo_models/manifest.json: {item.get('name')} has unknown fields {sorted(unknown)}")
        entries.append(ZooModel(**item))
    return entries


def catalogue():
    """name -> ZooModel: the bundled models, then CompressAI's."""
    return {entry.name: entry for entry in bundled_models() + compressai_models()}


def default_name():
    """The bundled model `python -m tfhyper compress` uses when no model is given."""
    return _manifest()["default"]


def get(name):
    """The catalogue entry `name` (a ZooModel is returned as is); ZooError naming the choices otherwise."""
    if isinstance(name, ZooModel):
        return name
    entries = catalogue()
    if name not in entries:
        families = sorted({entry.family for entry in entries.values()})
        raise ZooError(f"no zoo model named {name!r}; `python -m tfhyper zoo` lists them "
                       f"({', '.join(f + '-Q' for f in families)})")
    return entries[name]


def choose(model=None, quality=None):
    """What the command line's --model and --quality name: a model path or `zoo:NAME`.

    Neither: the default bundled model. --quality alone: the bundled hyperprior MSE model of that quality if there
    is one, else CompressAI's (bmshj2018-hyperprior-mse-Q). Both: --model is a zoo family (a name without its
    quality, e.g. bmshj2018-factorized-ms-ssim) completed by the quality.
    """
    if quality is None:
        return model if model is not None else ZOO_PREFIX + default_name()
    if quality not in paper.QUALITIES:
        raise ZooError(f"--quality must be one of {sorted(paper.QUALITIES)}, got {quality}")
    if model is None:
        bundled = [e for e in bundled_models() if (e.kind, e.distortion, e.quality) == ("hyperprior", "mse", quality)]
        return ZOO_PREFIX + (bundled[0].name if bundled else f"bmshj2018-hyperprior-mse-{quality}")
    family = model[len(ZOO_PREFIX):] if is_zoo_name(model) else model
    name = f"{family}-{quality}"
    if name not in catalogue():
        raise ZooError(f"--quality needs --model to be a zoo family such as bmshj2018-hyperprior-mse; "
                       f"there is no zoo model {name}")
    return ZOO_PREFIX + name


# -- the cache -----------------------------------------------------------------------------------------------------


def cache_dir():
    """$TFHYPER_CACHE, else $XDG_CACHE_HOME/tfhyper, else ~/.cache/tfhyper."""
    if os.environ.get("TFHYPER_CACHE"):
        return pathlib.Path(os.environ["TFHYPER_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "tfhyper"


def models_dir():
    return cache_dir() / "models"


def checkpoint_path(entry):
    """Where a downloaded checkpoint is kept: under the file name it is published with."""
    return models_dir() / entry.url.rsplit("/", 1)[-1]


def converted_path(entry):
    return models_dir() / f"{entry.name}.keras"


def status(entry):
    """"bundled", "cached" (converted), "downloaded" (not yet converted) or "" (neither)."""
    if entry.bundled:
        return "bundled"
    if converted_path(entry).is_file():
        return "cached"
    return "downloaded" if checkpoint_path(entry).is_file() else ""


# -- downloading ---------------------------------------------------------------------------------------------------


def _sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _matches(digest, expected):
    """`expected` is a full hex SHA-256 or the prefix of one that is published (at least 8 digits)."""
    expected = expected.lower()
    return len(expected) >= _PUBLISHED_HASH_DIGITS and digest.startswith(expected)


def _reason(error):
    reason = getattr(error, "reason", None) if isinstance(error, urllib.error.URLError) else None
    text = str(reason if reason is not None and not isinstance(error, urllib.error.HTTPError) else error)
    return " ".join(text.split()) or type(error).__name__


def _stream_to(url, out, progress, timeout):
    """Copies the body at `url` into the open file `out`; returns (hex SHA-256, bytes received, declared length)."""
    from tqdm import tqdm

    digest, received = hashlib.sha256(), 0
    with urllib.request.urlopen(url, timeout=timeout) as response:
        declared = response.headers.get("Content-Length")
        declared = int(declared) if declared and declared.isdigit() else None
        name = url.rsplit("/", 1)[-1]
        with tqdm(total=declared, unit="B", unit_scale=True, desc=name, disable=None if progress else True) as bar:
            while chunk := response.read(_CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    return digest.hexdigest(), received, declared


def download(url, destination, sha256, progress=True, timeout=DOWNLOAD_TIMEOUT_S):
    """Downloads `url` to `destination` if its SHA-256 starts with `sha256`; DownloadError with one line otherwise.

    The bytes go to a hidden `.part` file beside `destination`, hashed as they arrive, and are renamed into place
    only when the body is complete and verified; on any failure (or interruption) the temporary file is removed.
    """
    destination = pathlib.Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    manual = f"download it by other means and put it at {destination}"
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                digest, received, declared = _stream_to(url, out, progress, timeout)
            except (OSError, http.client.HTTPException) as error:
                raise DownloadError(f"cannot download {url} ({_reason(error)}); {manual}") from None
        if declared is not None and received != declared:
            raise DownloadError(f"the download of {url} stopped after {received} of {declared} bytes; try again, "
                                f"or {manual}")
        if not _matches(digest, sha256):
            raise DownloadError(f"the file downloaded from {url} has SHA-256 {digest}, not the published "
                                f"{sha256}...; it was not kept ({manual} after checking it)")
        os.replace(temporary, destination)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return destination


def fetch(entry, progress=True):
    """The verified local checkpoint of a CompressAI entry, downloading it once.

    A file already in the cache (downloaded earlier, or put there by hand) is verified before anything reads it;
    one that does not match is refused, not deleted.
    """
    path = checkpoint_path(entry)
    if not path.is_file():
        return download(entry.url, path, entry.sha256, progress=progress)
    digest = _sha256_file(path)
    if not _matches(digest, entry.sha256):
        raise ZooError(f"{path} has SHA-256 {digest}, not the published {entry.sha256}...: remove it to download "
                       f"it again, or replace it with the file from {entry.url}")
    return path


# -- models --------------------------------------------------------------------------------------------------------


def _write_json(path, document):
    from tfhyper.imageio import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(document, indent=2).encode("utf-8"), force=True)


def _convert(entry, checkpoint):
    """Converts a verified checkpoint into NAME.keras in the cache, and records its fingerprint in NAME.json."""
    from tfhyper import convert

    model = convert.from_compressai(convert.read_state_dict(checkpoint), lmbda=entry.lmbda, distortion=entry.distortion)
    path = converted_path(entry)
    convert.save_atomically(model, path)
    _write_json(path.with_suffix(".json"), {"name": entry.name, "fingerprint": model.fingerprint().hex(),
                                             "checkpoint": checkpoint.name, "url": entry.url})
    return model


def model_path(name, progress=True):
    """The local `.keras` file of a zoo model: bundled, or converted into the cache (downloading it first)."""
    entry = get(name)
    if entry.bundled:
        return bundled_dir() / entry.file
    path = converted_path(entry)
    if not path.is_file():
        _convert(entry, fetch(entry, progress=progress))
    return path


def load(name, progress=True):
    """The zoo model `name` as a ready keras.Model: coding tables built, lambda and distortion set for `fit()`.

    A converted model cached by an incompatible tfhyper version is converted again from its checkpoint.
    """
    from tfhyper.models import IncompatibleModelError, load_model

    entry = get(name)
    path = model_path(entry, progress=progress)
    try:
        return load_model(path)
    except IncompatibleModelError:
        if entry.bundled:
            raise
        return _convert(entry, fetch(entry, progress=progress))


def is_zoo_name(spec):
    return isinstance(spec, str) and spec.startswith(ZOO_PREFIX)


def resolve(spec, progress=True):
    """A model argument as a local `.keras` path: `zoo:NAME` becomes the zoo model's file (downloaded and
    converted if needed); anything else is a path and is returned as one."""
    if is_zoo_name(spec):
        return model_path(spec[len(ZOO_PREFIX):], progress=progress)
    return pathlib.Path(spec)


def model_name(spec):
    """How results name a model given as `zoo:NAME` (NAME) or as a path (None: the caller's rule)."""
    return spec[len(ZOO_PREFIX):] if is_zoo_name(spec) else None


# -- which model wrote a file --------------------------------------------------------------------------------------


def _known_fingerprints():
    """(hex fingerprint, .keras path) of the bundled models and the converted models in the cache."""
    for entry in bundled_models():
        path = bundled_dir() / entry.file
        if entry.fingerprint is None:
            from tfhyper.models import load_model

            yield load_model(path).fingerprint().hex(), path
        else:
            yield entry.fingerprint, path
    directory = models_dir()
    for record in sorted(directory.glob("*.json")) if directory.is_dir() else ():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            document = json.loads(record.read_text(encoding="utf-8"))
            path = record.with_suffix(".keras")
            if path.is_file():
                yield str(document["fingerprint"]), path


def find_by_fingerprint(fingerprint):
    """The `.keras` path of the bundled or cached zoo model with this fingerprint (bytes), or None."""
    wanted = bytes(fingerprint).hex()
    return next((path for hex_digest, path in _known_fingerprints() if hex_digest == wanted), None)


# -- the listing ---------------------------------------------------------------------------------------------------


def _megabytes(entry):
    """Size of the model's weights as float32 (CompressAI's state dict), in MB."""
    from tfhyper.convert import parameter_count

    return 4 * parameter_count(entry.kind, entry.num_filters, entry.latent_filters) / 1e6


def listing():
    """The catalogue as a text table: name, N, M, lambda, weights in MB, where it is, Kodak bpp, PSNR, MS-SSIM."""
    lines = [f"{'name':<32} {'N':>4} {'M':>4} {'lambda':>8} {'MB':>6}  {'status':<10} "
             f"{'bpp':>6} {'PSNR':>6} {'MS-SSIM':>7}"]
    for entry in catalogue().values():
        kodak = entry.kodak or {}
        numbers = [f"{kodak[key]:>{width}.{digits}f}" if key in kodak else f"{'':>{width}}"
                   for key, width, digits in (("bpp", 6, 3), ("psnr_db", 6, 2), ("ms_ssim", 7, 4))]
        lines.append(f"{entry.name:<32} {entry.num_filters:>4} {entry.latent_filters:>4} {entry.lmbda:>8.4g} "
                     f"{_megabytes(entry):>6.1f}  {status(entry) or '-':<10} {' '.join(numbers)}")
    lines.append(f"Kodak: mean over its 24 images (CompressAI's published results for bmshj2018-*); cache: "
                 f"{models_dir()}")
    return "\n".join(lines)
