"""The HTTP API and the web page: `create_app(predictor, settings)` gives the FastAPI application that
`spectro serve` runs under uvicorn (and tests drive through FastAPI's TestClient).

Endpoints: ``POST /v1/predict`` (one recording, as the raw body or multipart field ``file``),
``POST /v1/predict/batch`` (several files in one multipart request, one result each, in order),
``GET /v1/model``, ``GET /healthz`` (alive), ``GET /readyz`` (loaded and warmed up), OpenAPI docs at
``/docs``, and the page at ``/``. Every error is JSON, ``{"error": "..."}``, with its status.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import secrets
from importlib import resources

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import DataError
from ..inference import EnsemblePredictor, Predictor
from .batcher import QueueFull
from .describe import describe_model
from .guard import RequestGuard
from .model import ServedModel, UndecodableAudio, Upload

log = logging.getLogger(__name__)

RAW_TYPES = ("audio/", "application/octet-stream")  # a raw body: any audio type, or bytes of unnamed type
FILE_FIELDS = ("file", "files")
ERROR = {"content": {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}}}
UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    **{kind: {"schema": {"type": "string", "format": "binary"}} for kind in
       ("audio/wav", "audio/flac", "audio/ogg", "audio/mpeg", "application/octet-stream")},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}}}}}}}
BATCH_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """How the server guards and batches.

    token : every endpoint but /healthz, the page and the docs needs ``Authorization: Bearer TOKEN`` (None: open).
    max_bytes : the largest request body; more gets 413.
    cors : origins allowed to call the API from a browser (empty: no CORS headers at all).
    max_windows, max_wait, max_requests : the micro-batcher's (``spectro.serve.batcher.MicroBatcher``).
    max_files : files in one batch request.
    workers : threads that decode uploads and draw pictures (None: one per core).
    """

    token: str | None = None
    max_bytes: int = 20 * 2**20
    cors: tuple[str, ...] = ()
    max_windows: int = 32
    max_wait: float = 0.005
    max_requests: int = 64
    max_files: int = 32
    workers: int | None = None


def create_app(predictor: Predictor | EnsemblePredictor, settings: ServeSettings = ServeSettings()) -> FastAPI:
    """The application serving `predictor` (loaded once, by the caller). Its lifespan starts the batcher and
    warms the model up in the background: /healthz answers at once, /readyz once the first pass is done."""
    served = ServedModel(predictor, max_windows=settings.max_windows, max_wait=settings.max_wait,
                         max_requests=settings.max_requests, workers=settings.workers)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        served.start()
        warming = asyncio.create_task(_warm_up(served))
        try:
            yield
        finally:
            warming.cancel()
            served.stop()

    app = FastAPI(title="spectro", version=__version__, lifespan=lifespan, summary="Speech emotion recognition",
                  description="Emotion probabilities for recordings, per recording and per window. "
                              "Errors are JSON: `{\"error\": \"...\"}`.")
    app.state.served = served
    _add_error_handlers(app)
    if settings.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(RequestGuard, max_bytes=settings.max_bytes)
    _add_api(app, served, settings, [Depends(_bearer_check(settings.token))] if settings.token else [])
    _add_page(app)
    return app


async def _warm_up(served: ServedModel) -> None:
    try:
        await served.warm_up()
        log.info("model warmed up; ready")
    except Exception:
        log.exception("warming the model up failed; /readyz stays 503")


def _bearer_check(token: str):
    """A dependency refusing requests without ``Authorization: Bearer TOKEN``. The tokens are compared as
    SHA-256 digests with `secrets.compare_digest`, so the time taken says nothing of the token or its length."""
    scheme = HTTPBearer(auto_error=False, description="the token given to spectro serve (--token or SPECTRO_TOKEN)")
    expected = hashlib.sha256(token.encode()).digest()

    async def check(credentials: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:
        given = hashlib.sha256((credentials.credentials if credentials else "").encode()).digest()
        if not secrets.compare_digest(given, expected):
            raise HTTPException(401, "missing or wrong token: send the header Authorization: Bearer TOKEN",
                                headers={"WWW-Authenticate": "Bearer"})

    return check


def _add_error_handlers(app: FastAPI) -> None:
    async def http_error(_request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    async def invalid_request(_request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)


def _add_api(app: FastAPI, served: ServedModel, settings: ServeSettings, guarded: list) -> None:
    errors = {code: {"description": text, **ERROR} for code, text in (
        (401, "no token, or a wrong one"), (413, "the body is over --max-mb"), (415, "not audio, or undecodable"),
        (422, "audio that cannot be used: empty, silent, too short"), (503, "busy: retry after Retry-After seconds"))}

    @app.get("/healthz", tags=["health"], summary="Alive: the process answers")
    async def healthz() -> dict:
        return {"status": "alive"}

    @app.get("/readyz", tags=["health"], dependencies=guarded, responses={503: errors[503]},
             summary="Ready: the model is loaded and warmed up")
    async def readyz() -> JSONResponse:
        if not served.ready:
            return JSONResponse({"error": "warming up"}, status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"status": "ready", "classes": list(served.classes)})

    @app.get("/v1/model", tags=["model"], dependencies=guarded, summary="The served model: classes, features, "
             "training corpora, validation metrics, normalisation and adaptation")
    async def model() -> JSONResponse:
        return JSONResponse(describe_model(served.predictor))

    picture_query = Query(False, description="also the pictures the model saw (its first windows) as a PNG data URL")

    @app.post("/v1/predict", tags=["predict"], dependencies=guarded, openapi_extra=UPLOAD_BODY, responses=errors,
              summary="Emotion of one recording (raw body or multipart field `file`)")
    async def predict(request: Request, picture: bool = picture_query) -> JSONResponse:
        with _admitted(served, 1):
            uploads = await _read_uploads(request, most=1)
            return JSONResponse(await _answer(served, uploads[0], picture))

    @app.post("/v1/predict/batch", tags=["predict"], dependencies=guarded, openapi_extra=BATCH_BODY,
              responses=errors, summary=f"Emotion of each of up to {settings.max_files} files (multipart, in order)")
    async def predict_batch(request: Request, picture: bool = picture_query) -> JSONResponse:
        with _admitted(served, 1):  # one body in hand while it is read, then a place per file
            uploads = await _read_uploads(request, most=settings.max_files, multipart_only=True)
        with _admitted(served, len(uploads)):
            results = await asyncio.gather(*(_entry(served, upload, picture) for upload in uploads))
        return JSONResponse({"results": list(results)})


@contextlib.contextmanager
def _admitted(served: ServedModel, count: int):
    """Hold `count` of the batcher's places (``MicroBatcher.admit``); 503 with Retry-After when they are taken."""
    try:
        with served.batcher.admit(count):
            yield
    except QueueFull as full:  # only admit raises it
        raise HTTPException(503, str(full), headers={"Retry-After": str(full.retry_after)}) from None


async def _answer(served: ServedModel, upload: Upload, picture: bool) -> dict:
    """The answer for one upload, or the HTTPException its audio deserves (415 undecodable, 422 unusable)."""
    try:
        record = await served.predict(upload, picture=picture)
    except UndecodableAudio as error:
        raise HTTPException(415, str(error)) from None
    except DataError as error:
        raise HTTPException(422, str(error)) from None
    return {"filename": upload.name, **record} if upload.name else record


async def _entry(served: ServedModel, upload: Upload, picture: bool) -> dict:
    """One file's entry of a batch answer: its answer, or its own error and status."""
    try:
        return await _answer(served, upload, picture)
    except HTTPException as error:
        return {"filename": upload.name, "error": error.detail, "status": error.status_code}


async def _read_uploads(request: Request, *, most: int, multipart_only: bool = False) -> list[Upload]:
    """The recordings a request carries: its raw body, or the files of its multipart fields `file` (or `files`),
    in order, at most `most` (more: 400). Multipart parts above 1 MB are spooled by Starlette to anonymous
    temporary files, closed (and so gone) when the form is."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        async with request.form(max_files=most, max_fields=most + 8) as form:
            parts = [value for key, value in form.multi_items() if key in FILE_FIELDS]
            if any(isinstance(part, str) for part in parts):
                raise HTTPException(422, "multipart field 'file' must hold a file, not text")
            uploads = [Upload(await part.read(), part.filename or None) for part in parts]
        if not uploads:
            raise HTTPException(422, "no multipart field 'file': send the recording as -F file=@clip.wav")
    elif kind.startswith(RAW_TYPES) and not multipart_only:
        uploads = [Upload(await request.body())]
    else:
        wanted = "multipart/form-data" if multipart_only else "an audio type (audio/wav, audio/flac, audio/ogg, " \
            "audio/mpeg), application/octet-stream or multipart/form-data"
        raise HTTPException(415, f"Content-Type {kind or '(none)'!r} is not accepted here; send {wanted}")
    if any(not upload.data for upload in uploads):
        raise HTTPException(422, "an empty recording (0 bytes): send the audio file's bytes")
    return uploads


def _add_page(app: FastAPI) -> None:
    """The page at / and its script and style, shipped in the package (no build step, nothing fetched)."""
    static = resources.files(__package__) / "static"
    page = (static / "index.html").read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
