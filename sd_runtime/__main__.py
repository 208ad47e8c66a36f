"""``python -m sd_runtime --model PATH [--models-dir DIR] [--host H] [--port N]``.

Every flag has an environment variable (SD_MODEL, SD_MODELS_DIR, SD_HOST, SD_PORT,
SD_DEVICE, SD_COMPILE=1, SD_MODEL_RECHECK_S) so the container is configured without a command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m sd_runtime", description="A1111-compatible SD server on diffusers")
    parser.add_argument("--model", default=env.get("SD_MODEL"), help="diffusers dir, .safetensors file, or a name")
    parser.add_argument("--models-dir", default=env.get("SD_MODELS_DIR"), help="where names are looked up / listed")
    parser.add_argument("--host", default=env.get("SD_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env.get("SD_PORT", "8080")))
    parser.add_argument("--device", default=env.get("SD_DEVICE") or None, help="cuda, cuda:1, cpu (default: auto)")
    parser.add_argument("--compile", action="store_true", default=env.get("SD_COMPILE", "") == "1")
    parser.add_argument("--log-level", default=env.get("SD_LOG_LEVEL", "info"))
    parser.add_argument(
        "--model-recheck-s",
        type=float,
        default=env.get("SD_MODEL_RECHECK_S"),
        help="when --model is missing: serve without it (health says why) and look for it this often (default 15)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")

    import uvicorn
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # library chatter (progress bars, dtype notices) would drown the server log
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()

    from sd_runtime.app import LOOK_AGAIN_S, create_app, default_models_dir, resolve_initial
    from sd_runtime.engine import Engine
    from sd_runtime.errors import RuntimeApiError
    from sd_runtime.models import UnknownModelError

    models_dir = Path(args.models_dir).resolve() if args.models_dir else default_models_dir(args.model)
    if models_dir is not None and not models_dir.is_dir():
        print(f"sd_runtime: models dir {models_dir} does not exist", file=sys.stderr)
        return 2
    engine = Engine(models_dir, device=args.device, compile_unet=args.compile)
    missing = None
    try:
        initial = resolve_initial(engine, args.model)
    except UnknownModelError:
        # Serve anyway and say why (/healthz): exiting would crash-loop the pod on a GPU node.
        initial, missing = None, args.model
    except RuntimeApiError as exc:
        print(f"sd_runtime: {exc.message}", file=sys.stderr)
        return 2
    app = create_app(engine, initial, missing, recheck_s=max(0.5, args.model_recheck_s or LOOK_AGAIN_S))
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower(), access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
