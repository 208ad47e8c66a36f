"""Regenerate v<VERSION>/ from a kubernetes-validate wheel (Apache-2.0): the strict JSON schemas of the
built-in kinds the chart renders, with _definitions.json pruned to what those kinds reference.

usage: pip download --no-deps kubernetes-validate==1.37.0 -d /tmp/kv
       python tests/helm/k8s-schemas/vendor.py /tmp/kv/kubernetes_validate-1.37.0-py3-none-any.whl
"""

import json
import sys
import zipfile
from pathlib import Path

VERSION = "1.36"
KINDS = [
    "deployment-apps-v1",
    "service-v1",
    "serviceaccount-v1",
    "poddisruptionbudget-policy-v1",
    "persistentvolume-v1",
    "persistentvolumeclaim-v1",
    "networkpolicy-networking-v1",
]
PREFIXES = ("/api/_definitions.json#/$defs/", "#/$defs/")


def refs(node, found):
    if isinstance(node, dict):
        ref = node.get("$ref")
        for prefix in PREFIXES:
            if isinstance(ref, str) and ref.startswith(prefix):
                found.add(ref[len(prefix) :])
        for value in node.values():
            refs(value, found)
    elif isinstance(node, list):
        for value in node:
            refs(value, found)


def main(wheel: str) -> None:
    base = f"kubernetes_validate/kubernetes-json-schema/v{VERSION}.0-local-strict/"
    out = Path(__file__).parent / f"v{VERSION}"
    out.mkdir(exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        definitions = json.loads(zf.read(base + "_definitions.json"))
        wanted: set[str] = set()
        for kind in KINDS:
            schema = json.loads(zf.read(f"{base}{kind}.json"))
            refs(schema, wanted)
            (out / f"{kind}.json").write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    defs = definitions["$defs"]
    done: set[str] = set()
    while wanted - done:
        name = (wanted - done).pop()
        done.add(name)
        refs(defs[name], wanted)
    definitions["$defs"] = {name: defs[name] for name in sorted(done)}
    (out / "_definitions.json").write_text(json.dumps(definitions, indent=1, sort_keys=True) + "\n")
    print(f"{len(KINDS)} kinds, {len(done)} definitions -> {out}")


if __name__ == "__main__":
    main(sys.argv[1])
