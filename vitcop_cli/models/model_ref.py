"""What a ``--model`` argument names, and its declared ``config.json``, before anything heavy loads.

Contract:

- :func:`is_path_like`: the argument is meant as a local folder when it exists, starts with
  ``.``, ``/`` or ``~``, or has a ``/`` and its parent folder exists (``models/nope`` next to a
  ``models/`` folder). Anything else is a Hugging Face hub id.
- :func:`declared_config` ``(model, *, offline) -> (config dict, offline)`` reads only the
  checkpoint's ``config.json``: from the folder, or for a hub id from the local Hugging Face
  cache / a download of that one file (``huggingface_hub``). It never imports transformers and
  never runs code from the checkpoint. It fails fast with one line (:class:`InputError`):
  ``no such model folder ...`` for a path-like argument that does not exist; a folder without a
  readable JSON ``config.json``; a malformed hub id; and, offline, a hub id that is not cached.
  Offline means ``offline=True``, ``HF_HUB_OFFLINE=1``, or no network: the hub's host is probed
  (DNS + TCP connect, at most :data:`PROBE_TIMEOUT_S`) before any download, so a machine without
  network fails in about a second instead of after huggingface_hub's retries. When the probe fails
  but the config is cached, the cache is used and the returned ``offline`` is True, so every later
  ``from_pretrained`` stays in the cache too.
- :func:`check_model_type` ``(model, config) -> model_type``: :class:`InputError` unless the
  declared ``model_type`` has an adapter (:data:`vitcop_cli.catalog.MODEL_TYPES`).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

from ..catalog import MODEL_TYPES, unsupported_type_message
from ..errors import InputError

__all__ = ["CONFIG_MAX_BYTES", "PROBE_TIMEOUT_S", "check_model_type", "declared_config", "is_path_like"]

PROBE_TIMEOUT_S = 1.5
CONFIG_MAX_BYTES = 4 * 2**20  # a config.json is a few KB; refuse to parse anything absurd


def is_path_like(model: str) -> bool:
    """True when ``model`` names (or was meant to name) a local folder rather than a hub id."""
    if model.startswith((".", "/", "~", os.sep)):
        return True
    path = Path(model).expanduser()
    if path.exists():
        return True
    return "/" in model and path.parent != Path(".") and path.parent.is_dir()


def env_offline() -> bool:
    """``HF_HUB_OFFLINE`` set to a true value."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def declared_config(model: str, *, offline: bool = False) -> tuple[dict, bool]:
    """(parsed config.json, offline to use from here on); see the module docstring."""
    if not isinstance(model, str) or not model.strip():
        raise InputError("--model is empty; give a Hugging Face id or a local folder")
    offline = offline or env_offline()
    if is_path_like(model):
        return _local_config(model), offline
    return _hub_config(model, offline)


def check_model_type(model: str, config: dict) -> str:
    """The declared model_type when vitcop supports it, else an InputError naming the supported ones."""
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in MODEL_TYPES:
        raise InputError(unsupported_type_message(model, model_type))
    return model_type


# ---- local folders -------------------------------------------------------------------------
def _local_config(model: str) -> dict:
    folder = Path(model).expanduser()
    if not folder.exists():
        raise InputError(f"no such model folder {model}")
    if not folder.is_dir():
        raise InputError(f"{model} is a file; --model takes a checkpoint folder or a Hugging Face id")
    return _read_config(folder / "config.json", model)


def _read_config(path: Path, model: str) -> dict:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{model}: not a loadable checkpoint folder (no config.json)") from None
    except OSError as exc:
        raise InputError(f"{model}: cannot read config.json: {exc.strerror or exc}") from None
    if size > CONFIG_MAX_BYTES:
        raise InputError(f"{model}: config.json is {size} bytes, too large for a model config")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{model}: config.json is not UTF-8 text") from None
    except ValueError as exc:
        raise InputError(f"{model}: config.json is not valid JSON ({str(exc)[:80]})") from None
    except OSError as exc:
        raise InputError(f"{model}: cannot read config.json: {exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{model}: config.json is not a JSON object")
    return data


# ---- hub ids -------------------------------------------------------------------------------
def _hub_config(model: str, offline: bool) -> tuple[dict, bool]:
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        raise InputError(
            f"{model!r} is neither a local folder nor a valid Hugging Face model id (like Qwen/Qwen2-VL-2B-Instruct)"
        ) from None
    cached = try_to_load_from_cache(model, "config.json")
    cached = cached if isinstance(cached, str) else None
    if not offline and not network_reachable():
        if cached is None:
            raise InputError(
                f"model {model!r} is not in the local Hugging Face cache and {_hub_host()} cannot be reached "
                "(no network?); connect once to download it, or pass a local folder"
            )
        offline = True
    if offline:
        if cached is None:
            raise InputError(
                f"model {model!r} is not in the local Hugging Face cache and offline mode (--offline or "
                f"HF_HUB_OFFLINE=1) forbids downloading; run `hf download {model}` once online, or pass a local folder"
            )
        return _read_config(Path(cached), model), True
    return _read_config(Path(_download_config(model)), model), False


def _download_config(model: str) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return hf_hub_download(model, "config.json")
    except GatedRepoError:
        raise InputError(f"model {model!r} is gated: accept its terms on the Hub and log in (hf auth login)") from None
    except RepositoryNotFoundError:
        raise InputError(f"model {model!r} not found on the Hugging Face Hub (check the id, or log in if private)") from None
    except LocalEntryNotFoundError:
        raise InputError(f"model {model!r}: could not reach the Hugging Face Hub and it is not cached") from None
    except EntryNotFoundError:
        raise InputError(f"model {model!r} has no config.json; it is not a transformers checkpoint") from None
    except (HfHubHTTPError, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise InputError(f"could not fetch the config of {model!r}: {first}") from None


def _hub_host() -> str:
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    return urlsplit(constants.ENDPOINT).hostname or "huggingface.co"


def network_reachable(timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the hub's host resolves and accepts a TCP connection within ``timeout_s``.

    With a proxy configured in the environment the answer is True (only the proxy could tell)."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    parts = urlsplit(constants.ENDPOINT)
    host, port = parts.hostname or "huggingface.co", parts.port or (443 if parts.scheme == "https" else 80)
    ok = {"value": False}

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                ok["value"] = True
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo itself has no timeout
    thread.start()
    thread.join(timeout_s)
    return ok["value"]
