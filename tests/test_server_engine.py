"""The onnxruntime engine: bundle folders and bare .onnx files, device choice, clear errors."""

import json
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest

from stedq.engine import Engine, EngineError
from tests.conftest import REPO_ROOT
from tests.server_support import copy_bundle, model_bundle, random_images, read_version, reference_scores

SHIPPED = REPO_ROOT / "stedq" / "models" / "quality"
NO_CUDA = "CUDAExecutionProvider" not in onnxruntime.get_available_providers()


def test_a_bundle_folder_and_its_bare_onnx_file_serve_the_same_model():
    bundle = model_bundle()
    images = random_images(3, seed=2)
    from_folder = Engine(bundle, device="cpu", variant="fp32", intra_op_threads=1)
    info = from_folder.info
    assert (info.version, info.variant, info.device, info.providers) == \
        (read_version(bundle), "fp32", "cpu", ["CPUExecutionProvider"])
    assert (info.input_height, info.input_width) == (224, 224) and info.note == ""
    scores = from_folder.run(images[:, None])
    assert scores.shape == (3,) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, reference_scores(bundle, images), atol=1e-6)

    from_file = Engine(info.path, device="cpu", intra_op_threads=1)  # describes itself via metadata_props
    assert (from_file.info.name, from_file.info.version, from_file.info.mean) == (info.name, info.version, info.mean)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_device_auto_falls_back_to_the_cpu_and_says_so():
    engine = Engine(model_bundle(), device="auto", intra_op_threads=1)
    assert engine.info.device == "cpu" and "no CUDAExecutionProvider" in engine.info.note
    with pytest.raises(EngineError, match="--device cuda: this onnxruntime .* has no CUDAExecutionProvider"):
        Engine(model_bundle(), device="cuda")


def test_variant_auto_serves_int8_on_the_cpu_only_where_the_export_measured_it_faster(tmp_path):
    import shutil

    from stedq.bundle import Manifest, read_manifest
    from stedq.engine import INT8_AUTO_MIN_SPEEDUP, auto_variant

    bundle = tmp_path / "bundle"
    shutil.copytree(SHIPPED, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    speed = manifest["metrics"]["cpu_images_per_s_batch32"]
    expected = "int8" if speed["int8"] >= INT8_AUTO_MIN_SPEEDUP * speed["fp32"] else "fp32"
    assert Engine(bundle, device="cpu", intra_op_threads=1).info.variant == expected
    speed["int8"] = 2.2 * speed["fp32"]      # as a fully quantized INT8 measures (docs/export.md)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    engine = Engine(bundle, device="cpu", intra_op_threads=1)
    assert engine.info.variant == "int8" and engine.info.path.name == "model.int8.onnx"
    assert Engine(bundle, device="cpu", variant="fp32", intra_op_threads=1).info.variant == "fp32"
    speed["int8"] = 1.2 * speed["fp32"]      # gated but hardly faster: FP32 serves
    assert auto_variant(Manifest.model_validate(manifest), on_cuda=False) == "fp32"
    del manifest["metrics"]["cpu_images_per_s_batch32"]   # not measured: FP32
    assert auto_variant(Manifest.model_validate(manifest), on_cuda=False) == "fp32"
    # On a GPU: FP16 where the bundle has it; the shipped 2.0.0 has none (its rule factors), so FP32.
    shipped_on_gpu = auto_variant(read_manifest(bundle), on_cuda=True)
    assert shipped_on_gpu == ("fp16" if "fp16" in manifest["variants"] else "fp32")
    manifest["variants"]["fp16"] = "model.onnx"
    assert auto_variant(Manifest.model_validate(manifest), on_cuda=True) == "fp16"


def test_bad_models_are_clear_errors(tmp_path):
    with pytest.raises(EngineError, match="no manifest"):
        Engine(tmp_path, device="cpu")
    bundle = copy_bundle(model_bundle(), tmp_path / "bundle")  # fp32 only
    with pytest.raises(EngineError, match=r"no 'int8' variant \(has: fp32\)"):
        Engine(bundle, device="cpu", variant="int8")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["variants"] = {"fp32": "gone.onnx"}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="lists gone.onnx for variant 'fp32', but the file is missing"):
        Engine(bundle, device="cpu")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(EngineError, match="broken.onnx: onnxruntime cannot load it"):
        Engine(broken, device="cpu")
    with pytest.raises(EngineError, match="expected a bundle folder or a .onnx file"):
        Engine(tmp_path / "bundle" / "manifest.json", device="cpu")


def test_the_server_never_imports_torch():
    code = "import sys, stedq.server.app, stedq.server.measure; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"
