"""Command line: python -m tfhyper compress|decompress|info|convert|zoo.

    python -m tfhyper compress [MODEL] INPUT.png OUTPUT.tfh [--model MODEL] [--quality Q] [--force]
    python -m tfhyper compress [MODEL] INPUT... --output_dir DIR        (images, or folders of images)
    python -m tfhyper decompress [MODEL] INPUT.tfh OUTPUT.png [--force]
    python -m tfhyper decompress [MODEL] INPUT... --output_dir DIR      (.tfh files, or folders of them)
    python -m tfhyper info FILE.tfh
    python -m tfhyper convert COMPRESSAI.pth.tar OUTPUT.keras [--force]
    python -m tfhyper zoo

MODEL is a saved `.keras` file or `zoo:NAME` (`tfhyper.zoo`), given first or with --model. Without one, compress
uses the default bundled model (--quality Q: the hyperprior MSE model of quality Q, see `zoo.choose`), and
decompress finds the model that wrote each file by the fingerprint in its header among the bundled and cached zoo
models. Errors are one line on stderr and a non-zero exit status; outputs are written atomically and never
overwrite an existing file without --force; inputs are never modified.
"""
import argparse
import contextlib
import os
import pathlib
import sys
import warnings

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")
MODEL_HELP = "a model saved with model.save() (.keras) or zoo:NAME (python -m tfhyper zoo lists them)"


def _add_paths(command, what, output):
    command.add_argument("paths", nargs="+", metavar="PATH",
                         help=f"[MODEL] INPUT {output}, or [MODEL] INPUT... with --output_dir; INPUT: {what}")
    command.add_argument("--model", help=MODEL_HELP)
    command.add_argument("--output_dir", help="write one output per input into this folder (created if needed)")
    command.add_argument("--force", action="store_true", help="overwrite outputs that exist")
    command.add_argument("--jit_compile", action="store_true", help="compile the transforms with XLA (pays off for "
                         "many images of one size on some machines; the files are the same kind either way)")


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m tfhyper",
        description="Compress images with a tfhyper model (Ballé et al. 2018) into .tfh files and back.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    compress = commands.add_parser("compress", help="image (PNG, JPEG, ... anything Pillow reads) -> .tfh")
    _add_paths(compress, "an image (grayscale is expanded, alpha dropped) or a folder of images", "OUTPUT.tfh")
    compress.add_argument("--quality", type=int, help="1..8: the bundled hyperprior MSE model of this quality, else "
                          "CompressAI's (downloaded once); with --model=FAMILY (a zoo name without its quality), that "
                          "family's model of this quality")
    decompress = commands.add_parser("decompress", help=".tfh -> PNG (the model is found by its fingerprint)")
    _add_paths(decompress, "a .tfh file or a folder of them", "OUTPUT.png")
    info = commands.add_parser("info", help="print the header of a .tfh file (no model needed)")
    info.add_argument("input", help="the .tfh file")
    commands.add_parser("zoo", help="list the named models (bundled, and CompressAI's, downloaded on first use)")
    commands.add_parser(
        "convert", help="CompressAI bmshj2018 weights (.pth.tar, or .npz) -> tfhyper model (.keras)", add_help=False
    )
    return parser


def _load_model(spec):
    from tfhyper import zoo

    path = zoo.resolve(spec)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such model file: {path}")
    from tfhyper.models import CompressionModel, IncompatibleModelError, load_model

    try:
        model = load_model(path)
    except IncompatibleModelError:
        raise
    except Exception as error:  # Keras raises many kinds for a file that is not a model
        raise ValueError(f"{path} is not a tfhyper model ({type(error).__name__})") from None
    if not isinstance(model, CompressionModel):
        raise ValueError(f"{path} is a Keras model but not a tfhyper model")
    return model


def _read_bytes(path):
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory, not a file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as f:
        return f.read()


def _check_output(path, force):
    # Fail before the (slow) model is loaded when the output can be refused already.
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory; give a file name")
    if os.path.exists(path) and not force:
        raise FileExistsError(f"{path} exists; use --force to overwrite it")


@contextlib.contextmanager
def _quiet_stderr():
    """TensorFlow's C++ runtime logs to file descriptor 2 while it starts (CUDA probing, oneDNN notices);
    a command line tool's stderr is for its own one-line errors, so that start-up is silenced."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _start_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _quiet_stderr():
        import tensorflow as tf

        tf.constant(0.0) + 1.0  # initializes the devices, which is when CUDA is probed


def _is_model(path):
    return path.startswith("zoo:") or path.endswith(".keras")


def _expand(paths, suffixes, what):
    """Inputs with folders replaced by the files in them (sorted) whose names end in `suffixes`."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(str(p) for p in pathlib.Path(path).iterdir() if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise FileNotFoundError(f"{path} holds no {what}")
            files.extend(found)
        else:
            files.append(path)
    return files


def _jobs(args, suffixes, what, output_suffix):
    """(model argument or None, [(input, output)]) from the positional paths and --output_dir."""
    paths, model = list(args.paths), args.model
    if len(paths) > 1 and _is_model(paths[0]):
        if model is not None:
            raise ValueError("the model is given twice (as the first path and with --model)")
        model = paths.pop(0)
    if args.output_dir is None:
        if len(paths) != 2:
            raise ValueError(f"give INPUT and OUTPUT, or several inputs with --output_dir ({len(paths)} paths given)")
        if os.path.isdir(paths[0]):
            raise IsADirectoryError(f"{paths[0]} is a directory; give --output_dir to {args.command} the {what} in it")
        return model, [tuple(paths)]
    inputs = _expand(paths, suffixes, what)
    outputs = [os.path.join(args.output_dir, pathlib.Path(p).stem + output_suffix) for p in inputs]
    for output in set(outputs):
        if outputs.count(output) > 1:
            raise ValueError(f"two inputs would both be written to {output}")
    return model, list(zip(inputs, outputs))


def _prepare(jobs, args):
    """Refuses, before any work, missing inputs and outputs that exist."""
    for source, output in jobs:
        if not os.path.exists(source):
            raise FileNotFoundError(f"no such file: {source}")
        _check_output(output, args.force)
    if args.output_dir is not None:
        os.makedirs(args.output_dir, exist_ok=True)


def _each(jobs, verb):
    """The jobs, with a progress bar on a terminal when there are several."""
    from tqdm import tqdm

    return tqdm(jobs, desc=verb, unit="file", disable=None if len(jobs) > 1 else True)


def _compress(args):
    from tqdm import tqdm

    from tfhyper import imageio, zoo

    model_spec, jobs = _jobs(args, IMAGE_SUFFIXES, "images", ".tfh")
    _prepare(jobs, args)
    _start_tensorflow()
    model = _load_model(zoo.choose(model_spec, args.quality))
    from tfhyper.codec import compress

    for source, output in _each(jobs, "compress"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", imageio.ImageWarning)
            image = imageio.read_image(source)
        for warning in caught:
            tqdm.write(f"warning: {warning.message}", file=sys.stderr)
        data = compress(model, image, args.jit_compile)
        imageio.atomic_write_bytes(output, data, force=args.force)
        bpp = 8 * len(data) / (image.shape[0] * image.shape[1])
        tqdm.write(f"{source} ({image.shape[1]}x{image.shape[0]}) -> {output}: {len(data)} bytes, {bpp:.4f} bpp")


def _writer_of(data, source, model_spec, loaded):
    """The model that decodes `data`: the one given, else the zoo model whose fingerprint the header carries."""
    from tfhyper import bitstream, zoo

    if model_spec is None:
        header, _ = bitstream.unpack(data)
        path = zoo.find_by_fingerprint(header.fingerprint)
        if path is None:
            raise ValueError(f"{source} was written by a model (fingerprint {header.fingerprint.hex()}) that is "
                             f"neither bundled nor in the zoo cache ({zoo.models_dir()}); give it with --model")
        model_spec = str(path)
    if model_spec not in loaded:
        loaded[model_spec] = _load_model(model_spec)
    return loaded[model_spec]


def _decompress(args):
    from tqdm import tqdm

    from tfhyper import imageio

    model_spec, jobs = _jobs(args, (".tfh",), ".tfh files", ".png")
    _prepare(jobs, args)
    _start_tensorflow()
    import tfhyper.models  # noqa: F401  (the model classes register the kinds a header may name)
    from tfhyper.codec import decompress

    loaded = {}
    for source, output in _each(jobs, "decompress"):
        data = _read_bytes(source)
        image = decompress(_writer_of(data, source, model_spec, loaded), data, args.jit_compile)
        imageio.write_png(output, image, force=args.force)
        tqdm.write(f"{source} -> {output} ({image.shape[1]}x{image.shape[0]})")


def run(args):
    from tfhyper import bitstream, zoo

    if args.command == "info":
        data = _read_bytes(args.input)
        _start_tensorflow()
        import tfhyper.models  # noqa: F401  (the model classes register the kinds a header may name)

        header, sections = bitstream.unpack(data)
        print(bitstream.describe(header, sections, len(data)))
    elif args.command == "zoo":
        _start_tensorflow()  # model sizes come from the converter, which imports Keras
        print(zoo.listing())
    elif args.command == "compress":
        _compress(args)
    else:
        _decompress(args)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["convert"]:
        from tfhyper import convert

        return convert.main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as error:  # includes BitstreamError, ImageError, FileExistsError
        print(f"error: {error}", file=sys.stderr)
        return 1
    except MemoryError:
        print("error: out of memory (the image is too large for this machine)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
