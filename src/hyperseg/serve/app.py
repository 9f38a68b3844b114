"""The HTTP API and web page: FastAPI routes over an :class:`InferencePool` of Predictors."""
from __future__ import annotations

import contextlib
import io
import logging
import math
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException

from .. import __version__
from ..data.io import DataError, ImageTooLargeError, UnsupportedImageError, decode_image
from ..infer.predictor import DEFAULT_MAX_SIZE, Predictor
from ..errors import HypersegError, ResourceError
from ..runtime.cache import check_cache_settings, isolate_conversions
from ..runtime.options import RuntimeOptions, split_options
from .pool import InferencePool, PoolBusy, PoolNotReady
from .upload import UPLOAD_IDLE_TIMEOUT_S, UploadError, read_upload

__all__ = ["create_app", "OutputFormat"]

log = logging.getLogger("hyperseg.serve")
STATIC = Path(__file__).resolve().parent / "static"
SAMPLES = Path(__file__).resolve().parents[1] / "assets"
RETRY_AFTER_S = "1"


class OutputFormat(str, Enum):
    png = "png"  # the label map: a palette PNG whose pixel values are class ids
    json = "json"  # class names, pixel shares, size, latency
    overlay = "overlay"  # the image with the class colours blended in, as PNG


def _error(status: int, message: str, headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast; the label maps compress well anyway
    return buffer.getvalue()


def _segment(predictor: Predictor, data: bytes, name: str, fmt: OutputFormat, alpha: float,
             max_pixels: int) -> tuple[bytes, str, dict[str, Any]]:
    """Runs in a worker thread: decode, segment, encode. Returns (body, media type, summary)."""
    image = decode_image(data, name, max_pixels=max_pixels)
    start = time.perf_counter()
    labels = predictor(image)
    latency_ms = (time.perf_counter() - start) * 1000
    h, w = labels.shape
    summary = {"width": w, "height": h, "latency_ms": round(latency_ms, 2)}
    if fmt is OutputFormat.json:  # the pixel shares only where they are returned
        counts = np.bincount(labels.ravel(), minlength=len(predictor.class_names))
        summary["classes"] = [{"id": i, "name": n, "color": predictor.palette[i].tolist(),
                               "pixel_share": counts[i] / labels.size} for i, n in enumerate(predictor.class_names)]
        return b"", "application/json", summary
    if fmt is OutputFormat.png:
        return _png(predictor.label_image(labels)), "image/png", summary
    return _png(Image.fromarray(predictor.overlay(image, labels, alpha))), "image/png", summary


_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}},
                                           "required": ["file"]}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}


def create_app(model: Union[str, Path] = "camvid", *, workers: int = 1, max_queue: int = 16,
               max_upload_mb: float = 20.0, max_megapixels: float = 50.0, max_size: Optional[int] = DEFAULT_MAX_SIZE,
               upload_timeout_s: float = UPLOAD_IDLE_TIMEOUT_S, options: Optional[RuntimeOptions] = None,
               **predictor_options: Any) -> FastAPI:
    """The server for one model (any source :class:`~hyperseg.Predictor` takes, run as ``options``
    say, a :class:`~hyperseg.runtime.options.RuntimeOptions`, or as its fields given as keywords
    say: runtime, precision, device, calibration, shapes; other ``predictor_options``, such as meta,
    go to every Predictor as they are).

    ``workers`` predictors run requests in threads; up to ``max_queue`` more wait, and beyond that
    the server answers 503 with ``Retry-After``. Uploads over ``max_upload_mb`` or images over
    ``max_megapixels`` are refused (413) before they are decoded; an upload that sends nothing for
    ``upload_timeout_s`` seconds is cut off (408), freeing its place. A failure of the machine
    (a conversion process killed, a full or read-only model cache) is answered 503. The models load
    when the app starts, in the background (``/healthz`` says when they are ready), unless
    ``app.state.pool`` was loaded before.
    """
    if isinstance(upload_timeout_s, bool) or not isinstance(upload_timeout_s, (int, float)) \
            or not 0 < upload_timeout_s < math.inf:
        raise HypersegError(f"upload_timeout_s={upload_timeout_s!r}: expected a positive, finite number of seconds")
    options, predictor_options = split_options(options, predictor_options)  # checked once, for every worker
    # a bad cache setting is refused now, not by the first request that converts (the folder itself is
    # checked when a runtime that converts is loaded: --runtime torch never writes there)
    check_cache_settings(folder=False)
    pool = InferencePool(lambda: Predictor(model, max_size=max_size, options=options, **predictor_options),
                         workers=workers, max_queue=max_queue)
    limits = _Limits(max_upload_mb, max_megapixels, upload_timeout_s)
    app = FastAPI(title="hyperseg", version=__version__, lifespan=_lifespan(pool), docs_url=None, redoc_url=None,
                  description="HyperSeg semantic segmentation over HTTP. The schema is at /openapi.json; "
                              "the page at / uses the same API.")
    app.state.pool = pool
    app.state.model_source = str(model)
    _add_logging_and_errors(app)
    _add_info_routes(app, pool, limits)
    _add_segment_route(app, pool, limits)
    _add_page_and_samples(app)
    return app


@dataclass(frozen=True)
class _Limits:
    """What one upload may be: its size in MB, its image's in megapixels, and the seconds it may send nothing."""

    max_upload_mb: float
    max_megapixels: float
    upload_timeout_s: float

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1e6)


def _lifespan(pool: InferencePool):
    """Load the models in the background when the app starts (unless they were loaded before); close the
    pool when it stops."""
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        isolate_conversions(True)  # a new image size's conversion runs in a child, and its exporter's memory goes with it
        if not pool.ready.is_set() and pool.error is None:
            threading.Thread(target=_load_quietly, args=(pool,), name="hyperseg-load", daemon=True).start()
        try:
            yield
        finally:
            pool.close()  # after uvicorn has let the in-flight requests finish
            isolate_conversions(False)

    return lifespan


def _add_logging_and_errors(app: FastAPI) -> None:
    """One log line per request, and every error answered as JSON ``{"error", "status"}``."""
    @app.middleware("http")
    async def log_request(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        log.info("%s %s %d %.1f ms", request.method, request.url.path, response.status_code,
                 (time.perf_counter() - start) * 1000)
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _error(422, problems)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)  # the server's log, not the client
        return _error(500, "internal server error; the server log has the details")


def _add_info_routes(app: FastAPI, pool: InferencePool, limits: _Limits) -> None:
    """``/healthz`` (whether the model is loaded) and ``/v1/model`` (what it is)."""
    @app.get("/healthz", summary="Whether the model is loaded")
    async def healthz() -> JSONResponse:
        if pool.ready.is_set():
            return JSONResponse({"status": "ok", "model_loaded": True})
        status = "error" if pool.error is not None else "loading"
        body = {"status": status, "model_loaded": False, **({"error": str(pool.error)} if pool.error else {})}
        return JSONResponse(body, status_code=503, headers={"Retry-After": RETRY_AFTER_S})

    @app.get("/v1/model", summary="The model's metadata: classes, palette, input size, runtime, val mIoU")
    async def model_info() -> JSONResponse:
        if not pool.ready.is_set():
            return _error(503, "the model is not loaded yet", {"Retry-After": RETRY_AFTER_S})
        return JSONResponse(_model_info(pool, app.state.model_source, limits.max_upload_mb, limits.max_megapixels))


def _add_segment_route(app: FastAPI, pool: InferencePool, limits: _Limits) -> None:
    """``POST /v1/segment``: an upload in, a label map, overlay or summary out; each failure its status."""
    uploads = [0]  # requests between their first byte and their answer (the event loop is one thread)

    @app.post("/v1/segment", summary="Segment one image", openapi_extra={"requestBody": _UPLOAD_BODY},
              responses={200: {"content": {"image/png": {}, "application/json": {}},
                               "description": "label map PNG, overlay PNG or JSON summary"},
                         400: {"description": "not a readable image"}, 413: {"description": "over a size limit"},
                         415: {"description": "not an image type"}, 503: {"description": "busy or loading"}})
    async def segment(request: Request,
                      format: OutputFormat = Query(OutputFormat.png, description="png | json | overlay"),
                      alpha: float = Query(0.5, ge=0.0, le=1.0, description="overlay opacity")) -> Response:
        if uploads[0] >= pool.workers + pool.max_queue:  # each upload holds its body in memory until it is done
            return _error(503, f"the server is busy: {uploads[0]} uploads in progress; retry shortly",
                          {"Retry-After": RETRY_AFTER_S})
        uploads[0] += 1
        try:
            data, name = await read_upload(request, limits.max_bytes, limits.upload_timeout_s)
            body, media, summary = await pool.run(_segment, data, name, format, alpha, limits.max_pixels)
        except UploadError as exc:
            # the rest of an unread body would arrive as the next request: this connection is done
            unread = {"Connection": "close"} if exc.status in (408, 413) else None
            return _error(exc.status, str(exc), unread)
        except PoolBusy as exc:
            return _error(503, f"the server is busy: {exc}; retry shortly", {"Retry-After": RETRY_AFTER_S})
        except PoolNotReady as exc:
            return _error(503, f"the model is not loaded: {exc}", {"Retry-After": RETRY_AFTER_S})
        except ImageTooLargeError as exc:
            return _error(413, str(exc))
        except UnsupportedImageError as exc:
            return _error(415, str(exc))
        except DataError as exc:
            return _error(400, str(exc))
        except ResourceError as exc:  # the server's machine failed, not the request
            log.error("POST /v1/segment: %s", exc)
            return _error(503, str(exc))
        except HypersegError as exc:  # an image the model cannot take (smaller than it accepts)
            return _error(422, str(exc))
        finally:
            uploads[0] -= 1
        headers = {"X-Latency-Ms": f"{summary['latency_ms']:.2f}", "X-Image-Size": f"{summary['width']}x{summary['height']}"}
        if format is OutputFormat.json:
            info = pool.predictor.runtime
            return JSONResponse({"model": app.state.model_source, "runtime": info.name, "precision": info.precision,
                                 **summary}, headers=headers)
        return Response(body, media_type=media, headers=headers)


def _add_page_and_samples(app: FastAPI) -> None:
    """The web page at ``/``, its files under ``/static``, and the bundled sample images."""
    @app.get("/v1/samples", summary="Names of the sample images bundled with the package")
    async def samples() -> JSONResponse:
        return JSONResponse([p.name for p in _sample_files()])

    @app.get("/v1/samples/{name}", summary="One bundled sample image", response_class=FileResponse)
    async def sample(name: str) -> Response:
        for path in _sample_files():
            if path.name == name:
                return FileResponse(path, media_type="image/png")
        return _error(404, f"no sample named {name!r}; see /v1/samples")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def _load_quietly(pool: InferencePool) -> None:
    try:
        pool.load()
    except Exception as exc:  # kept in pool.error: /healthz and every request report it
        log.error("the model could not be loaded: %s", exc)


def _sample_files() -> list[Path]:
    return sorted(SAMPLES.glob("camvid_sample_*.png"))


def _percent(fraction: Any) -> Optional[float]:
    return None if fraction is None else round(float(fraction) * 100, 2)


def _model_info(pool: InferencePool, source: str, max_upload_mb: float, max_megapixels: float) -> dict[str, Any]:
    runtime = pool.predictor.runtime
    meta = runtime.meta
    return {
        "name": meta.get("weights") or meta.get("name") or source,
        "source": source,
        "architecture": meta.get("architecture"),
        "classes": list(pool.predictor.class_names),
        "palette": pool.predictor.palette.tolist(),
        "input_size": meta.get("input_size"),
        "mean": runtime.mean, "std": runtime.std,
        "runtime": runtime.name, "precision": runtime.precision,
        # why this precision, when --precision auto chose it (null when it was given)
        "precision_reason": getattr(runtime.precision_choice, "reason", None),
        "val_miou": _percent(meta.get("val_miou")),  # percent, as the CLI prints it
        "val_split": meta.get("val_split"),
        "val_in_training": meta.get("val_in_training"),
        # the recipe trained without one street and scored on it: what to expect on a new street
        "unseen_miou": _percent(meta.get("unseen_miou")),
        "unseen_split": meta.get("unseen_split"),
        "workers": pool.workers, "max_queue": pool.max_queue,
        "max_upload_mb": max_upload_mb, "max_megapixels": max_megapixels,
    }
