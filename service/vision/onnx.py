"""ONNX Runtime sessions: execution providers as a preference list, and which one runs.

ONNX Runtime falls back to the CPU silently when the CUDA provider cannot start
(missing CUDA or cuDNN libraries, no device). The provider a session actually
uses is read back from the session, logged, and exposed in `/ready`; with
`require_gpu` a CPU fallback is a start-up error instead of a slow surprise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import onnxruntime as ort

from service.errors import ProviderError

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider"})


def select_providers(preference: Sequence[str], available: Sequence[str] | None = None) -> list[str]:
    """The preferred providers that this ONNX Runtime build has, in preference order."""
    have = set(ort.get_available_providers() if available is None else available)
    chosen = [p for p in preference if p in have]
    if not chosen:
        chosen = ["CPUExecutionProvider"]
    return chosen


def create_session(
    model: bytes,
    *,
    providers: Sequence[str] = DEFAULT_PROVIDERS,
    intra_op_threads: int = 0,
    require_gpu: bool = False,
    label: str = "model",
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if intra_op_threads > 0:
        options.intra_op_num_threads = intra_op_threads
    # Requests run concurrently: idle ONNX Runtime threads must not spin on the cores
    # that another request's inference (or the detector) needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    chosen = select_providers(providers)
    session = ort.InferenceSession(model, sess_options=options, providers=chosen)
    got = session.get_providers()
    # A GPU build lists CUDAExecutionProvider as available even when its libraries (CUDA,
    # cuDNN) or the driver fail to load; only the session says what it got.
    failed = [p for p in chosen if p not in got]
    log.info("%s runs on %s (asked for %s, got %s)", label, got[0], chosen, got)
    if failed:
        log.warning("%s: %s did not start; running on %s", label, failed, got[0])
    if require_gpu and got[0] not in GPU_PROVIDERS:
        reason = (
            f"{failed} failed to start (check the CUDA and cuDNN libraries and the driver: nvidia-smi)"
            if failed
            else "this ONNX Runtime build has no GPU provider (install the [gpu] extra: onnxruntime-gpu)"
        )
        raise ProviderError(
            f"{label}: a GPU provider was required, but the session got {got} (asked for {list(providers)}); {reason}"
        )
    return session


def provider_in_use(session: ort.InferenceSession) -> str:
    return str(session.get_providers()[0])
