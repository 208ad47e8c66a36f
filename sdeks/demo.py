"""``make demo``: start the local stack, render one text-to-image task end to end, stop.

Prints the PNG path and the completion event the results topic carried, which
is exactly what a user of a deployed stack gets: images in S3 plus an event.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sdeks.client import ApiClient
from sdeks.events import EventSubscription
from sdeks.local.state import read_state, state_path

DEMO_TASK = {
    "task": {
        "metadata": {"runtime": "sdruntime", "tasktype": "text-to-image", "prefix": "demo", "context": {"demo": True}},
        "content": {"prompt": "a lighthouse on a cliff at dawn", "steps": 8, "width": 64, "height": 64, "seed": 42},
    }
}


def _sdeks(*args: str) -> int:
    return subprocess.call([sys.executable, "-m", "sdeks", *args])


def main() -> int:
    if _sdeks("local", "up", "--detach") != 0:
        return 1
    try:
        state = read_state(state_path())
        if state is None:
            print("demo: the local stack did not write .sdeks/local.json", file=sys.stderr)
            return 1
        events = EventSubscription.create(state.results_topic_arn, state.aws_endpoint_url, state.region)
        try:
            with ApiClient(state.api_url, state.api_key) as client:
                accepted = client.submit(DEMO_TASK)
                print(f"submitted task {accepted.id} → {accepted.output_location}")
                final = client.wait(accepted.id, timeout_s=300, on_change=lambda s: print(f"  {s.status}"))
                if final.status != "succeeded":
                    print(f"demo: task failed: {final.error}", file=sys.stderr)
                    return 1
                for path in client.download(final, Path("outputs") / "demo"):
                    print(f"image: {path.resolve()}")
            for event in events.follow(count=1, timeout_s=30):
                print("completion event:")
                print(json.dumps(event, indent=2))
        finally:
            events.delete()
    finally:
        _sdeks("local", "down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
