"""lsc: transforming and combining rewards for aligning language models (JAX/Flax)."""

from setuptools import find_packages, setup

CORE = [
    "jax>=0.10",
    "flax>=0.12",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    "ml-collections>=1.0",
    "absl-py>=2.0",
    "numpy>=1.26",
    "scipy>=1.11",  # root finding of the exact optima (lsc.eval.exact)
    "safetensors>=0.4",  # Hugging Face checkpoints, read with numpy (no torch)
    "sentencepiece>=0.2",  # T5 / Llama vocabularies
    "tokenizers>=0.20",  # tokenizer.json of imported checkpoints
    "jinja2>=3.1",  # chat templates of imported checkpoints (lsc.data.chat_template)
    "grain>=0.2.10",  # checkpointable input pipelines
    "pyarrow>=14",  # hh-rlhf from a local Hugging Face `datasets` parquet/arrow export
    "matplotlib>=3.8",  # the paper's figures
    "tqdm>=4.66",
    "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
    "ml-dtypes>=0.5",  # bf16 safetensors
    "cmeel-mimalloc>=3.4",  # the entry point's allocator without a system tcmalloc (lsc.allocator)
]

# PyTorch `transformers` reference code: parity tests and side-by-side benchmarks.
# torch is pinned to the CPU build that the development and CI machines provide.
HF = ["torch==2.13.0", "transformers>=4.45"]

TEST = ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "mpmath>=1.3"]

setup(
    name="lsc",
    version="0.1.0",
    description=(
        "Transforming and combining rewards (LSC, sigma_AND / sigma_OR) for aligning "
        "language models, in JAX/Flax."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # configs/ is a package too, so config files import their shared sections
    # (`from configs import common`) from any working directory.
    packages=find_packages(include=["lsc", "lsc.*", "configs", "configs.*"]),
    package_data={"lsc": ["**/*.md"]},
    install_requires=CORE,
    extras_require={
        "test": TEST,
        "hf": HF,
        # t5x-style input pipelines; pulls TensorFlow, never needed by the core.
        "seqio": ["seqio>=0.0.19"],
    },
)
