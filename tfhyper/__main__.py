"""Command line: python -m tfhyper compress|decompress|info.

    python -m tfhyper compress MODEL.keras INPUT.png OUTPUT.tfh [--force]
    python -m tfhyper decompress MODEL.keras INPUT.tfh OUTPUT.png [--force]
    python -m tfhyper info FILE.tfh
    python -m tfhyper convert COMPRESSAI.pth.tar OUTPUT.keras [--force]

Errors are one line on stderr and a non-zero exit status; outputs are written atomically and never
overwrite an existing file without --force; inputs are never modified.
"""
import argparse
import contextlib
import os
import sys
import warnings


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m tfhyper",
        description="Compress images with a trained tfhyper model (Ballé et al. 2018) into .tfh files and back.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    compress = commands.add_parser("compress", help="image (PNG, JPEG, ... anything Pillow reads) -> .tfh")
    compress.add_argument("model", help="a model saved with model.save() (.keras)")
    compress.add_argument("input", help="image to compress (grayscale is expanded, alpha dropped)")
    compress.add_argument("output", help="the .tfh file to write")
    compress.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    decompress = commands.add_parser("decompress", help=".tfh -> PNG")
    decompress.add_argument("model", help="the model that wrote the file (.keras)")
    decompress.add_argument("input", help="the .tfh file")
    decompress.add_argument("output", help="the PNG file to write")
    decompress.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    info = commands.add_parser("info", help="print the header of a .tfh file (no model needed)")
    info.add_argument("input", help="the .tfh file")
    commands.add_parser(
        "convert", help="CompressAI bmshj2018 weights (.pth.tar, or .npz) -> tfhyper model (.keras)", add_help=False
    )
    return parser


def _load_model(path):
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


def run(args):
    from tfhyper import bitstream, imageio

    if args.command == "info":
        data = _read_bytes(args.input)
        header, sections = bitstream.unpack(data)
        print(bitstream.describe(header, sections, len(data)))
        return
    _check_output(args.output, args.force)
    if args.command == "compress":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", imageio.ImageWarning)
            image = imageio.read_image(args.input)
        for warning in caught:
            print(f"warning: {warning.message}", file=sys.stderr)
        _start_tensorflow()
        model = _load_model(args.model)
        from tfhyper.codec import compress

        data = compress(model, image)
        imageio.atomic_write_bytes(args.output, data, force=args.force)
        bpp = 8 * len(data) / (image.shape[0] * image.shape[1])
        print(f"{args.input} ({image.shape[1]}x{image.shape[0]}) -> {args.output}: {len(data)} bytes, {bpp:.4f} bpp")
    else:
        data = _read_bytes(args.input)
        _start_tensorflow()
        model = _load_model(args.model)
        from tfhyper.codec import decompress

        image = decompress(model, data)
        imageio.write_png(args.output, image, force=args.force)
        print(f"{args.input} -> {args.output} ({image.shape[1]}x{image.shape[0]})")


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
