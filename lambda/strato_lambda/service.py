"""What the handler does, without Lambda around it: hold the model, answer OIP and /predict.

The model is loaded once per container (at init when a model is configured). A load that fails
(the model is not uploaded yet, S3 is unreachable) is retried on later requests, which answer
503 meanwhile instead of crashing the container.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from strato import (
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    PayloadTooLarge,
    StratoError,
    serving,
)

from strato_lambda.loader import LoadedModel, load_model

if TYPE_CHECKING:
    from collections.abc import Mapping

    from strato_lambda.settings import Settings

# ModelUnavailable and PayloadTooLarge live in strato's error tree; named here for old imports.
__all__ = ["InferResult", "ModelService", "ModelUnavailable", "PayloadTooLarge"]

RETRY_SECONDS = 5.0  # between load attempts after a failure


@dataclass(frozen=True, slots=True)
class InferResult:
    """One answered inference: the encoded answer, the engine's precision, its run time."""

    answer: serving.Answer
    precision: str
    seconds: float

    @property
    def body(self) -> bytes:
        return self.answer.body

    @property
    def header_length(self) -> int | None:
        return self.answer.header_length

    @property
    def model_name(self) -> str:
        return self.answer.model_name

    @property
    def model_version(self) -> str:
        return self.answer.model_version


class ModelService:
    """One model per container, as Lambda runs one function version per container."""

    def __init__(self, settings: Settings, *, s3_client: Any = None) -> None:
        self.settings = settings
        self._s3_client = s3_client
        self._model: LoadedModel | None = None
        self._error: str | None = None
        self._failed_at = 0.0
        self._lock = threading.Lock()
        self._unreported_load: float | None = None

    # --- the model -----------------------------------------------------------------------
    def load(self) -> LoadedModel:
        """The model, loading it on first use; `ModelUnavailable` if it cannot be loaded."""
        model = self._model
        if model is not None:
            return model
        with self._lock:
            if self._model is not None:
                return self._model
            if self._error and time.monotonic() - self._failed_at < RETRY_SECONDS:
                raise ModelUnavailable(f"model not loaded: {self._error}", backend="lambda")
            try:
                self._model = load_model(self.settings, s3_client=self._s3_client)
            except StratoError as exc:
                self._error, self._failed_at = f"{type(exc).__name__}: {exc}", time.monotonic()
                raise ModelUnavailable(
                    f"model not loaded: {self._error}", backend="lambda"
                ) from exc
            self._error = None
            self._unreported_load = self._model.load_seconds
            return self._model

    def try_load(self) -> bool:
        try:
            self.load()
        except ModelUnavailable:
            return False
        return True

    @property
    def error(self) -> str | None:
        return self._error

    def take_load_seconds(self) -> float | None:
        """The model load time, once: the first invocation after a load reports it."""
        seconds, self._unreported_load = self._unreported_load, None
        return seconds

    def model_for(self, name: str, version: str | None = None) -> LoadedModel:
        model = self.load()
        if name != model.name or version not in (None, "", model.version):
            wanted = f"{name}:{version}" if version else name
            hint = "; pass the version apart (version=...)" if ":" in name else ""
            raise ModelNotFound(
                f"model {wanted!r} is not served here; this function serves {model.name!r} "
                f"version {model.version}{hint}"
            )
        return model

    def metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        return self.model_for(name, version).metadata

    # --- inference -----------------------------------------------------------------------
    def check_size(self, size: int, what: str = "request") -> None:
        if size > self.settings.max_payload:
            raise PayloadTooLarge(
                f"{what} is {size} bytes, over the {self.settings.max_payload}-byte payload limit"
            )

    def infer(
        self, name: str, version: str | None, body: bytes, header_length: int | None
    ) -> InferResult:
        """One OIP v2 inference: request body in, response body out (binary where asked)."""
        self.check_size(len(body))
        model = self.model_for(name, version)
        request = serving.decode(body, header_length=header_length)
        started = time.perf_counter()
        outputs = serving.run(model.engine, request)
        seconds = time.perf_counter() - started
        precision = model.engine.precision
        answer = serving.encode(
            request,
            outputs,
            model_name=model.name,
            model_version=model.version,
            parameters={"precision": precision},
        )
        self.check_size(len(answer.body), "response")
        return InferResult(answer, precision, seconds)

    def predict(self, body: bytes) -> dict[str, Any]:
        """`POST /predict`: `{"inputs": [[...], ...]}`, or named rows for any model
        `{"inputs": {"input_ids": [[...]], "attention_mask": [[...]]}}` (`"model"` optional)."""
        self.check_size(len(body))
        document = serving.loads(body)
        if not isinstance(document, dict) or "inputs" not in document:
            raise InvalidInput('the body must be a JSON object like {"inputs": [[...]]}')
        model = self.model_for(str(document.get("model") or self.load().name))
        engine = model.engine
        outputs = engine.infer(_named_rows(document["inputs"], engine.inputs, model.name))
        result: dict[str, Any] = {
            "model_name": model.name,
            "model_version": model.version,
            "precision": engine.precision,
            "outputs": {k: v.tolist() for k, v in outputs.items()},
        }
        result.update(_classify(outputs, model))
        return result


def _named_rows(raw: Any, specs: Mapping[str, Any], model: str) -> dict[str, np.ndarray[Any, Any]]:
    """`inputs` as the engine's named arrays: a dict by input name, or rows of the one input."""
    names = list(specs)
    if not isinstance(raw, dict):
        if len(names) != 1:
            raise InvalidInput(
                f"{model} takes {len(names)} inputs {names}; send them by name: "
                f'{{"inputs": {{"{names[0]}": [[...]], ...}}}}'
            )
        raw = {names[0]: raw}
    missing = [n for n in names if n not in raw]
    unknown = sorted(str(n) for n in raw if n not in specs)
    if missing or unknown:
        raise InvalidInput(
            f"{model} takes inputs {names}; 'inputs' holds {sorted(str(n) for n in raw)}"
            + (f" (missing {missing})" if missing else "")
            + (f" (not inputs: {unknown})" if unknown else "")
        )
    return {n: _rows(raw[n], specs[n].dtype, specs[n].shape, n) for n in names}


def _rows(
    raw: Any, dtype: np.dtype[Any], shape: tuple[int, ...], name: str = "inputs"
) -> np.ndarray[Any, Any]:
    """A batch shaped for the model from nested lists; flat rows are reshaped to the signature."""
    try:
        with np.errstate(over="raise", invalid="raise"):
            array = np.asarray(raw, dtype=dtype)
    except FloatingPointError:
        raise InvalidInput(f"'{name}' holds values out of range for {dtype}") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"'{name}' is not a rectangular array of numbers: {exc}") from None
    row = shape[1:]
    if array.ndim == len(shape) or -1 in row:
        return array  # already batch-shaped; the engine checks it against the signature
    per_row = int(np.prod(row))
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim == 0 or array[0].size != per_row:
        raise InvalidInput(
            f"each '{name}' row needs {per_row} values for shape {list(shape)}, "
            f"got an array of shape {list(array.shape)}"
        )
    return array.reshape((array.shape[0], *row))


def _classify(outputs: dict[str, np.ndarray[Any, Any]], model: LoadedModel) -> dict[str, Any]:
    """Labels and calibrated confidences when the first output scores the manifest's labels."""
    labels = model.engine.bundle.manifest.labels
    scores = next(iter(outputs.values()))
    if not labels or scores.ndim != 2 or scores.shape[1] != len(labels):
        return {}
    temperature = float(model.engine.bundle.manifest.calibration.get("temperature", 1.0) or 1.0)
    logits = scores.astype(np.float64) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    best = probabilities.argmax(axis=1)
    return {
        "labels": [labels[i] for i in best],
        "confidence": [round(float(p), 6) for p in probabilities[np.arange(len(best)), best]],
    }
