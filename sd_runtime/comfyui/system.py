"""``GET /system_stats``: ComfyUI's host and device description (clients use it as a health check)."""

from __future__ import annotations

import os
import sys
from typing import Any


def system_stats(engine: Any) -> dict[str, Any]:
    import torch

    try:
        ram_total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        ram_free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        ram_total = ram_free = 0
    device = str(engine.device)
    dev: dict[str, Any] = {"name": device, "type": device.split(":")[0], "index": None}
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        free, total = torch.cuda.mem_get_info(index)
        dev.update(
            name=f"{device} {torch.cuda.get_device_name(index)}",
            index=index,
            vram_total=total,
            vram_free=free,
            torch_vram_total=torch.cuda.memory_reserved(index),
            torch_vram_free=torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index),
        )
    else:
        dev.update(vram_total=ram_total, vram_free=ram_free, torch_vram_total=0, torch_vram_free=0)
    return {
        "system": {
            "os": os.name,
            "ram_total": ram_total,
            "ram_free": ram_free,
            "comfyui_version": "sdeks",
            "python_version": sys.version,
            "pytorch_version": torch.__version__,
            "embedded_python": False,
            "argv": sys.argv,
        },
        "devices": [dev],
    }
