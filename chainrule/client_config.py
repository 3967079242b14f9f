"""Where the client finds the server and its key: arguments, else CHAINRULE_URL / CHAINRULE_API_KEY,
else the file `chainrule login` writes (CHAINRULE_CONFIG, default ~/.config/chainrule/config.json),
else http://127.0.0.1:8000 and no key. Readable and writable only by its owner: it holds a key."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV, KEY_ENV, CONFIG_ENV = "CHAINRULE_URL", "CHAINRULE_API_KEY", "CHAINRULE_CONFIG"


def config_path() -> Path:
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "chainrule" / "config.json"


def read_config() -> dict[str, Any]:
    try:
        data = json.loads(config_path().read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the client config {config_path()}: {exc}; run `chainrule login` "
                         "again or delete it") from None
    return data if isinstance(data, dict) else {}


def write_config(url: str, key: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "key": key}, f)
    tmp.replace(path)
    return path


def resolve(url: str | None, key: str | None) -> tuple[str, str | None]:
    """(url, key) by the precedence above; the url without a trailing slash."""
    config = {} if (url or os.environ.get(URL_ENV)) and (key or os.environ.get(KEY_ENV)) else read_config()
    url = url or os.environ.get(URL_ENV) or config.get("url") or DEFAULT_URL
    key = key or os.environ.get(KEY_ENV) or config.get("key")
    return url.rstrip("/"), key
