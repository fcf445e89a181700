"""tfhyper: Ballé et al. 2018, "Variational image compression with a scale hyperprior", in TensorFlow 2 / Keras 3."""
from setuptools import find_packages, setup

setup(
    name="tfhyper",
    version="0.1.0",
    description=(
        "Reference reimplementation of Ballé et al. 2018 (scale hyperprior) "
        "in TensorFlow 2 / Keras 3, with a pure-numpy arithmetic coder."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tfhyper", "tfhyper.*"]),
    # The paper's and CompressAI's published Kodak results (tfhyper/reference/README.md gives their sources), and
    # the models bundled with tfhyper.zoo (tfhyper/zoo_models/README.md).
    package_data={
        "tfhyper.reference": ["README.md", "kodak/*.csv", "compressai/*.csv"],
        "tfhyper": ["zoo_models/README.md", "zoo_models/manifest.json", "zoo_models/*.keras"],
    },
    install_requires=[
        "tensorflow>=2.20",
        "keras>=3.10",
        "tensorflow-probability>=0.25",
        # tensorflow-probability imports tf_keras; it must sit beside Keras 3.
        "tf-keras>=2.20",
        "tensorflow-datasets>=4.9",
        "numpy>=1.26",
        "absl-py>=2.0",
        "pillow>=11.0",
        "matplotlib>=3.8",
        "tqdm>=4.66",
        "pillow-heif>=1.8",  # HEVC intra (the codec inside BPG) for the baselines
        "tensorboard>=2.18",  # TensorFlow no longer pulls it in; training logs need it
    ],
    extras_require={
        # nbclient, nbformat and ipykernel run notebooks/ top to bottom in the tests.
        "test": ["pytest>=8", "hypothesis>=6.100", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"],
        "notebook": ["jupyterlab>=4"],
    },
    entry_points={"console_scripts": ["tfhyper=tfhyper.__main__:main"]},
)
