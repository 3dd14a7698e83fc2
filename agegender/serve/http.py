"""`agegender-serve`: the project's models over HTTP, and a page to try them on a photo.

    agegender-serve                                  # http://127.0.0.1:8000: the page
    curl -F image=@me.jpg localhost:8000/analyze     # the records agegender-predict gives
    curl --data-binary @me.jpg 'localhost:8000/analyze?model=ensemble&rotate=true'

The models load once, before the first request. Safe by default: it listens on 127.0.0.1
only; an upload is held in memory (never written to disk) and refused over `upload_mb`;
at most `in_flight` images are analysed at once and `waiting` more wait for their turn, any
more get 503 at once, so memory stays bounded however many clients come; a request gets its
answer within `seconds` or a 504. Clients name a model (A, B, ensemble), never a file.
Every error is JSON, {"error": "one line of why"}, never a traceback.
"""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata, resources
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.exceptions import HTTPException

from agegender.serve.api import Analyzer
from agegender.serve.faces import NO_FACE, NOT_AN_IMAGE, Face, detector, read
from agegender.serve.health import health_of
from agegender.serve.limits import MODELS, Limits
from agegender.serve.predict import rounded, row

ModelName = Literal[MODELS]  # type: ignore[valid-type]  # the same names, for the OpenAPI page


class Refused(Exception):
    """A request answered with an error: its HTTP status and one line of why."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


# --- the upload ------------------------------------------------------------------------------


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request's body, refused (413) as soon as it passes the upload limit."""
    limit = limits.upload_bytes
    too_big = Refused(413, f"upload over the {limits.upload_mb:g} MB limit; send a smaller image")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def form_parts(body: bytes, content_type: str) -> dict[str, tuple[bytes, bool]]:
    """A multipart form's parts in memory: {name: (bytes, is a file)}."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise Refused(400, "a multipart upload without a boundary; send it as curl -F does")
    parts: dict[str, tuple[bytes, bool]] = {}
    headers: dict[bytes, bytes] = {}
    field, value, data = bytearray(), bytearray(), bytearray()

    def header_end() -> None:
        headers[bytes(field).lower()] = bytes(value)
        field.clear(), value.clear()

    def part_end() -> None:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        parts[name] = (bytes(data), b"filename" in disposition)
        headers.clear(), data.clear()

    callbacks = {
        "on_header_field": lambda b, start, end: field.extend(b[start:end]),
        "on_header_value": lambda b, start, end: value.extend(b[start:end]),
        "on_header_end": header_end,
        "on_part_data": lambda b, start, end: data.extend(b[start:end]),
        "on_part_end": part_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except MultipartParseError as error:
        raise Refused(400, f"not a valid multipart form ({error})") from None
    return parts


def upload(body: bytes, content_type: str) -> tuple[bytes, dict[str, str]]:
    """The image's bytes and the options a form gave (model, crops, rotate): a multipart
    form's `image` field (or its one file), or the whole body when it is not a form."""
    if not content_type.lower().startswith("multipart/form-data"):
        image, options = body, {}
    else:
        parts = form_parts(body, content_type)
        files = [name for name, (_, is_file) in parts.items() if is_file]
        name = "image" if "image" in parts else (files[0] if len(files) == 1 else None)
        if name is None:
            raise Refused(400, "no image in the form; send it as the field image (-F image=@x)")
        image = parts.pop(name)[0]
        unknown = sorted(set(parts) - {"model", "crops", "rotate"})
        if unknown:
            raise Refused(
                400, f"unknown form field {unknown[0]!r}; give image, model, crops, rotate"
            )
        options = {k: v.decode("utf-8", "replace") for k, (v, _) in parts.items()}
    if not image:
        raise Refused(400, "an empty upload; send the bytes of an image")
    return image, options


def flag(name: str, value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    words = {"true": True, "1": True, "yes": True, "on": True}
    words |= {"false": False, "0": False, "no": False, "off": False, "": False}
    if value.strip().lower() not in words:
        raise Refused(422, f"{name}={value!r}: give true or false")
    return words[value.strip().lower()]


# --- the analysis -----------------------------------------------------------------------------


def answer(analyzer: Analyzer, model: str, image: bytes, crops: bool, rotate: bool) -> dict:
    """What /analyze returns for one upload: the records agegender-predict writes for a
    file (without its path), and the image's size, which the boxes are given in."""
    faces = read(io.BytesIO(image), analyzer.sizes, not crops, rotate, analyzer.min_face_score)
    error = faces[0].error
    if error == NOT_AN_IMAGE:
        raise Refused(415, "the upload is not an image; send a JPEG, PNG, WebP, BMP, GIF or TIFF")
    if error is not None and error != NO_FACE:  # too large, broken: an image it cannot use
        raise Refused(422, f"the upload cannot be used: {error}")
    width, height = faces[0].image_size or (0, 0)
    found = [] if error == NO_FACE else faces
    records = analyzer.records(faces)  # [] for no face
    return {
        "model": model,
        "image": {"width": width, "height": height},
        "faces": [without_path(face, rec) for face, rec in zip(found, records, strict=True)],
    }


def without_path(face: Face, record: dict) -> dict:
    out = rounded(row(face, record))
    del out["path"]
    return out


class Turns:
    """At most `in_flight` analyses at once in their own threads, `waiting` more queued;
    a turn is freed when its analysis ends, even one whose client was answered 504."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.pool = ThreadPoolExecutor(limits.in_flight, thread_name_prefix="analyze")
        self.slots = asyncio.Semaphore(limits.in_flight)
        self.inside = 0  # requests admitted: reading, waiting or analysing

    def admit(self) -> None:
        if self.inside >= self.limits.in_flight + self.limits.waiting:
            busy = f"busy: {self.inside} requests in progress; retry in a few seconds"
            raise Refused(503, busy, {"Retry-After": "2"})
        self.inside += 1

    def leave(self) -> None:
        self.inside -= 1

    async def run(self, work, deadline: float):
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(self.slots.acquire(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            limit = f"{self.limits.seconds:g} s"
            raise Refused(503, f"busy: no turn within {limit}; retry later") from None
        future = loop.run_in_executor(self.pool, work)
        future.add_done_callback(lambda _: self.slots.release())
        try:
            return await asyncio.wait_for(asyncio.shield(future), deadline - loop.time())
        except TimeoutError:
            limit = f"{self.limits.seconds:g} s"
            raise Refused(504, f"the analysis took over {limit}; send a smaller image") from None


def load_analyzers() -> dict[str, Analyzer]:
    """A, B and their ensemble, each model file loaded once (they share them), and each run
    once on a blank face: the first prediction traces the model, a wait no request should
    have. The face detector loads too."""
    analyzers = {name: Analyzer(name) for name in MODELS}
    for analyzer in analyzers.values():
        blank = {side: np.zeros((side, side, 3), np.uint8) for side in analyzer.sizes}
        analyzer.records([Face("", blank, [0, 0, 1, 1])])
    detector()
    return analyzers


# --- the app ----------------------------------------------------------------------------------

UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "image": {"type": "string", "format": "binary"},
                    "model": {"type": "string", "enum": list(MODELS)},
                    "crops": {"type": "boolean"},
                    "rotate": {"type": "boolean"},
                },
                "required": ["image"],
            }
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
EXAMPLE = {  # scikit-image's astronaut photo, by the committed model B (docs/serve.md)
    "model": "B",
    "image": {"width": 512, "height": 512},
    "faces": [
        {
            "face": 0,
            "box": [173, 72, 103, 103],
            "age": 33.5,
            "age_low": 27.5,
            "age_high": 39.4,
            "gender": "female",
            "gender_prob": 0.9836,
            "face_score": 0.9028,
            "pyramid_only": False,
        }
    ],
}
ERROR = {"content": {"application/json": {"example": {"error": "one line of why"}}}}


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(
    analyzers: dict[str, Analyzer], default: str = "B", limits: Limits | None = None
) -> FastAPI:
    """The ASGI app over loaded models ({"A": Analyzer("A"), ...})."""
    limits = limits or Limits()
    app = FastAPIOffline(
        title="agegender",
        summary="Age and gender of the faces in a photo, by the models `dvc repro` trained",
        version=metadata.version("agegender"),
        redoc_url=None,
    )
    turns = Turns(limits)
    facts = health_of(analyzers, default, limits)  # of the files as loaded, hashed once
    page = resources.files("agegender.serve").joinpath("page.html").read_text("utf-8")

    @app.exception_handler(Refused)
    async def refused(request: Request, error: Refused) -> JSONResponse:
        return error_response(error.status, error.message, error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return error_response(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail), error.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> JSONResponse:
        """Never a traceback to the client: uvicorn logs it for the server's operator."""
        return error_response(500, "internal error; the server's log has the details")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict:
        """The models loaded, the commit they came from, the versions and the limits."""
        return facts

    @app.post(
        "/analyze",
        openapi_extra={"requestBody": UPLOAD_BODY},
        responses={
            200: {"content": {"application/json": {"example": EXAMPLE}}},
            **{code: ERROR for code in (400, 413, 415, 422, 503, 504)},
        },
    )
    async def analyze(
        request: Request,
        model: Annotated[ModelName | None, Query(description="default: the server's")] = None,
        crops: Annotated[bool, Query(description="the image already is a face crop")] = False,
        rotate: Annotated[bool, Query(description="look for faces turned 90, 180, 270")] = False,
    ) -> dict:
        """Age and gender of each face in an uploaded image: a form's `image` field, or
        the raw bytes. Options in the query or the form's fields."""
        turns.admit()
        try:
            deadline = asyncio.get_running_loop().time() + limits.seconds
            try:
                body = await asyncio.wait_for(read_body(request, limits), limits.seconds)
            except TimeoutError:
                raise Refused(408, f"the upload took over {limits.seconds:g} s") from None
            image, form = upload(body, request.headers.get("content-type", ""))
            name = form.get("model", model or default)
            if name not in analyzers:
                raise Refused(422, f"model={name!r}: this server has {', '.join(analyzers)}")
            crop = flag("crops", form.get("crops", crops))
            turn = flag("rotate", form.get("rotate", rotate))
            return await turns.run(
                lambda: answer(analyzers[name], name, image, crop, turn), deadline
            )
        finally:
            turns.leave()

    return app
