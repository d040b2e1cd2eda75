"""Load KServe manifests with the `kserve` SDK's model classes, strictly; prints one JSON line per file.

Run by tests/test_deploy_kserve.py in a separate process: the kserve package registers the protobuf
package `inference` (its v2 gRPC protos), as stedq.kserve does, and one process cannot hold both.

The SDK's own deserializer drops unknown keys and cannot resolve Kubernetes types (V1Container, ...),
so this walks each document against the classes' `openapi_types` and `attribute_map` (kserve.models
first, then kubernetes.client): an unknown or misspelled field, a wrong type or a missing required
field is an error naming its path.

usage: python tests/kserve_manifest_probe.py FILE.yaml ...
"""

from __future__ import annotations

import json
import re
import sys

import kserve.models
import kubernetes.client
import yaml

KINDS = {("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
         ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
         ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime"}
NATIVE = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "object": (object,)}


class ManifestError(ValueError):
    pass


def model_class(name: str):
    found = getattr(kserve.models, name, None) or getattr(kubernetes.client, name, None)
    if found is None:
        raise ManifestError(f"no SDK class {name}")
    return found


def load(data, kind: str, path: str):
    kind = re.sub(r"^Dict\[(.*)\]$", r"dict(\1)", re.sub(r"^List\[(.*)\]$", r"list[\1]", kind))
    if kind.startswith("list["):
        if not isinstance(data, list):
            raise ManifestError(f"{path}: expected a list, got {type(data).__name__}")
        inner = kind[5:-1]
        return [load(item, inner, f"{path}[{i}]") for i, item in enumerate(data)]
    if kind.startswith("dict("):
        if not isinstance(data, dict):
            raise ManifestError(f"{path}: expected a mapping, got {type(data).__name__}")
        inner = re.match(r"dict\(([^,]*), (.*)\)", kind).group(2)
        return {key: load(value, inner, f"{path}.{key}") for key, value in data.items()}
    if kind in NATIVE:
        if kind == "str" and isinstance(data, (int, float)) and not isinstance(data, bool):
            return str(data)     # Kubernetes reads quantities such as `cpu: 2` as strings
        if not isinstance(data, NATIVE[kind]) or (kind == "int" and isinstance(data, bool)):
            raise ManifestError(f"{path}: expected {kind}, got {type(data).__name__} {data!r}")
        return data
    klass = model_class(kind)
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a {kind} mapping, got {type(data).__name__}")
    by_json = {json_name: attr for attr, json_name in klass.attribute_map.items()}
    values = {}
    for key, value in data.items():
        if key not in by_json:
            raise ManifestError(f"{path}: unknown field '{key}' ({kind} has: {', '.join(sorted(by_json))})")
        attr = by_json[key]
        values[attr] = load(value, klass.openapi_types[attr], f"{path}.{key}")
    try:
        return klass(**values)
    except ValueError as exc:   # the SDK's own checks: required fields, allowed values
        raise ManifestError(f"{path}: {exc}") from None


def check(path: str) -> dict:
    try:
        documents = [d for d in yaml.safe_load_all(open(path)) if d is not None]
        out = []
        for doc in documents:
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key not in KINDS:
                raise ManifestError(f"apiVersion/kind {key} is not a KServe resource the SDK models")
            obj = load(doc, KINDS[key], doc["kind"])
            out.append(obj.to_dict())
        return {"file": path, "ok": True, "documents": out}
    except (ManifestError, yaml.YAMLError) as exc:
        return {"file": path, "ok": False, "error": str(exc)}


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(json.dumps(check(name), default=str))
