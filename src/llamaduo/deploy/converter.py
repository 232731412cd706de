"""Finding (or fetching) llama.cpp's `convert_hf_to_gguf.py`, which the llama-cpp-python wheel does not ship.

`python -m llamaduo.deploy.converter` downloads the llama-cpp-python source release matching the installed version
with pip and keeps only the converter (script, `conversion/` package and `gguf-py/`) under `<venv>/share/llamaduo/llama.cpp`.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from llamaduo.errors import LlamaduoError

SCRIPT = "convert_hf_to_gguf.py"
KEEP = (SCRIPT, "conversion", "gguf-py")


def managed_dir() -> Path:
    return Path(sys.prefix) / "share" / "llamaduo" / "llama.cpp"


def llama_cpp_version() -> str | None:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


def install_hint() -> str:
    version = llama_cpp_version()
    pin = f"=={version}" if version else ""
    return (
        f"Run `python -m llamaduo.deploy.converter` (downloads the llama-cpp-python{pin} source with pip and keeps the converter), "
        "or set deploy.export.converter / $LLAMA_CPP_DIR to a llama.cpp checkout"
    )


def find_converter(configured: str | None = None) -> Path:
    """The converter script: the configured path, $LLAMA_CPP_DIR, our managed copy, then PATH."""
    if configured:  # an explicit setting is the only candidate: silently using another copy would hide a typo
        path = Path(os.path.expanduser(configured))
        if path.is_file():
            return path
        raise LlamaduoError(f"deploy.export.converter {configured} does not exist", install_hint())
    candidates: list[Path] = []
    if os.environ.get("LLAMA_CPP_DIR"):
        candidates.append(Path(os.environ["LLAMA_CPP_DIR"]) / SCRIPT)
    candidates.append(managed_dir() / SCRIPT)
    on_path = shutil.which(SCRIPT)
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise LlamaduoError("llama.cpp's converter convert_hf_to_gguf.py was not found", install_hint())


def fetch_converter(version: str | None = None, dest: Path | None = None) -> Path:
    """Download the llama-cpp-python sdist with pip and extract the converter; returns the script path."""
    version = version or llama_cpp_version()
    if not version:
        raise LlamaduoError("llama-cpp-python is not installed, so its converter version is unknown", "Install it with `pip install 'llamaduo[llamacpp]'` first.")
    dest = dest or managed_dir()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", f"llama-cpp-python=={version}", "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("*.tar.gz"))
        if done.returncode or not archives:
            last = (done.stderr.strip().splitlines() or ["no sdist downloaded"])[-1]
            raise LlamaduoError(f"pip could not download the llama-cpp-python {version} source: {last}", "Check the package index, or point $LLAMA_CPP_DIR at a llama.cpp checkout.")
        staging = Path(tmp) / "out"
        with tarfile.open(archives[0]) as tar:
            prefix = f"{tar.getnames()[0].split('/')[0]}/vendor/llama.cpp/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.name[len(prefix):].split("/")[0] in KEEP]
            for member in members:
                member.name = member.name[len(prefix):]
            tar.extractall(staging, members=members, filter="data")
        if not (staging / SCRIPT).is_file():
            raise LlamaduoError(f"the llama-cpp-python {version} source has no {SCRIPT}", "Point $LLAMA_CPP_DIR at a llama.cpp checkout instead.")
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, dest)
    return dest / SCRIPT


def main() -> None:
    try:
        path = fetch_converter()
    except LlamaduoError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"llama.cpp converter ready: {path}")


if __name__ == "__main__":
    main()
