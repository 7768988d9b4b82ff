"""Fixtures: the bundled EfficientNet-Lite0, a pack built by the CLI from the bundled textile
shots, and the CLI itself (TIPEDGE_BIN, default target/debug/tipedge, built by `cargo test`)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "fixtures" / "efficientnet-lite0"
TEXTILE = ROOT / "examples" / "textile"


def cli() -> Path:
    return Path(os.environ.get("TIPEDGE_BIN", ROOT / "target" / "debug" / "tipedge"))


def run_cli(*args: str) -> list:
    """Runs the CLI with --json; its records, one per line."""
    out = subprocess.run(
        [str(cli()), *args, "--json"], check=True, capture_output=True, text=True, timeout=600
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def model() -> Path:
    return MODEL


def build_pack(path: Path, shots_per_class: int) -> Path:
    run_cli("cache", "build", "-m", str(MODEL), "--shots", str(TEXTILE / "shots"),
            "-k", str(shots_per_class), "--augment-epochs", "0", "--out", str(path))
    return path


@pytest.fixture(scope="session")
def pack(tmp_path_factory) -> Path:
    return build_pack(tmp_path_factory.mktemp("packs") / "textile.pack", 4)


@pytest.fixture(scope="session")
def pack2(tmp_path_factory) -> Path:
    """A second pack of the same model with fewer shots (other keys, same classes)."""
    return build_pack(tmp_path_factory.mktemp("packs") / "textile-k1.pack", 1)


@pytest.fixture(scope="session")
def query_images() -> list:
    return sorted((TEXTILE / "query").glob("*/*.jpg"))
