"""create_session: the error for a required GPU says what the session got, not what the
build lists, since a GPU build lists CUDAExecutionProvider even when CUDA fails to load."""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from service.errors import ProviderError
from service.vision.onnx import create_session, provider_in_use


def identity_model() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_cpu_session_runs_on_the_cpu() -> None:
    session = create_session(identity_model(), providers=["CPUExecutionProvider"])
    assert provider_in_use(session) == "CPUExecutionProvider"


def test_required_gpu_on_a_build_without_one() -> None:
    assert "CUDAExecutionProvider" not in ort.get_available_providers()  # the CPU wheel the tests run on
    with pytest.raises(ProviderError) as error:
        create_session(identity_model(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"], require_gpu=True)
    message = str(error.value)
    assert "got ['CPUExecutionProvider']" in message and "[gpu] extra" in message


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider':UserWarning")
def test_required_gpu_that_fails_to_load_is_not_reported_as_available(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """As on a GPU image whose CUDA libraries or driver do not load: the build lists CUDA, the
    session falls back to the CPU."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(ProviderError) as error:
        create_session(identity_model(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"], require_gpu=True)
    message = str(error.value)
    assert "the session got ['CPUExecutionProvider']" in message
    assert "['CUDAExecutionProvider'] failed to start" in message
    assert "available" not in message
    # Without require_gpu the fallback is allowed, and logged as a warning.
    session = create_session(identity_model(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert provider_in_use(session) == "CPUExecutionProvider"
    assert any("did not start" in r.message for r in caplog.records if r.levelname == "WARNING")
