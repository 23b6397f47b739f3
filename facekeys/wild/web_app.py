"""The web app of ``facekeys serve``: a page to try a photo, and a small JSON/PNG API.

Routes:
    ``GET /``: the page (upload a photo, see faces, keypoints and a filter).
    ``POST /v1/keypoints``: multipart field ``image`` -> JSON faces (see ``faces_json``).
    ``POST /v1/filter``: fields ``image`` and ``overlay`` -> the photo as PNG with the overlay on
    every face (header ``X-Faces``: how many).
    ``GET /samples/{name}``: a sample photo of the folder given at start, by its file name.

Every error is ``{"error": "one line"}`` with a 4xx status (500 only for a bug), never a traceback.
Photos are checked by content, capped in bytes (while the body arrives) and in pixels (from the
header, before decoding), and predicted one at a time: that bounds memory to one decoded photo,
and the network already uses every core.

Overlays are injected: a mapping from a name to a function ``(image, points) -> image`` where
``image`` is an 8-bit BGR ``HxWx3`` array and ``points`` the faces' keypoints ``(faces, P, 2)``
in the model's point order, pixel centres on integers; it returns the filtered image, same size.
"""

from __future__ import annotations

import html
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from facekeys.data.images import ImageProblem
from facekeys.wild.web_uploads import (
    BodyGuard,
    UploadLimits,
    one_line,
    problem_status,
    read_photo,
)

Overlay = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Keypoints and boxes in the JSON: the image's own pixels with the origin at its top-left corner,
# so the top-left pixel's centre is (0.5, 0.5), as a canvas, SVG or PIL draws them.
COORDINATES = (
    "pixels of the uploaded image; origin at its top-left corner, x right, y down, the top-left "
    "pixel's centre at (0.5, 0.5); the data set's label convention is x - 0.5 + "
    "model.label_pixel_offset"
)
PIXEL_CENTRE = 0.5


def create_app(
    predictor: Any,
    overlays: Mapping[str, Overlay],
    limits: UploadLimits,
    *,
    model_label: str = "",
    samples: Mapping[str, Path] | None = None,
) -> FastAPI:
    """The web app around one loaded model.

    Args:
        predictor: A ``KeypointPredictor`` (or anything with its ``predict_faces``,
            ``keypoint_names``, ``label_pixel_offset``, ``card`` and ``refine``).
        overlays: Filters by name (see the module docstring); may be empty.
        limits: Caps on each uploaded photo.
        model_label: How the model was named (its spec), shown on the page and in the JSON.
        samples: Sample photos by name, offered on the page (``?demo=NAME`` submits one).

    Returns:
        The FastAPI application; run it with uvicorn, or test it with ``TestClient``.
    """
    app = FastAPI(title="facekeys", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyGuard, photo_bytes=limits.max_bytes)
    _add_error_handlers(app)
    _add_api_routes(app, predictor, overlays, limits, model_json(predictor, model_label))
    _add_page_routes(app, render_page(model_label, overlays, samples or {}, limits), samples)
    return app


def _add_api_routes(
    app: FastAPI,
    predictor: Any,
    overlays: Mapping[str, Overlay],
    limits: UploadLimits,
    model: dict[str, Any],
) -> None:
    """``POST /v1/keypoints`` and ``POST /v1/filter``."""
    lock = threading.Lock()

    def faces_of(upload: UploadFile) -> tuple[np.ndarray, list, np.ndarray]:
        data = upload.file.read(limits.max_bytes + 1)  # never more than the cap in memory
        with lock:
            try:
                image = read_photo(data, limits)
            except ImageProblem as problem:
                raise HTTPException(problem_status(problem), problem.detail) from None
            boxes, points = predictor.predict_faces(image)
        return image, boxes, points

    @app.post("/v1/keypoints")
    def keypoints(image: Annotated[UploadFile, File()]) -> JSONResponse:
        photo, boxes, points = faces_of(image)
        return JSONResponse(faces_json(photo, boxes, points, predictor, model))

    @app.post("/v1/filter")
    def apply_filter(
        image: Annotated[UploadFile, File()], overlay: Annotated[str, Form()]
    ) -> Response:
        function = overlays.get(overlay)
        if function is None:
            names = ", ".join(sorted(overlays)) or "none on this server"
            raise HTTPException(400, f"unknown overlay {overlay[:40]!r}; choose one of: {names}")
        photo, boxes, points = faces_of(image)
        png = filtered_png(photo, points, function)
        return Response(png, media_type="image/png", headers={"X-Faces": str(len(boxes))})


def _add_page_routes(app: FastAPI, page: str, samples: Mapping[str, Path] | None) -> None:
    """``GET /`` (the page) and ``GET /samples/{name}``."""
    samples = dict(samples or {})

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/samples/{name}")
    def sample(name: str) -> FileResponse:
        path = samples.get(name)  # a name from the folder listing, never a path to open
        if path is None:
            raise HTTPException(404, f"no sample named {name[:60]!r}")
        return FileResponse(path, headers={"Cache-Control": "no-store"})


def _add_error_handlers(app: FastAPI) -> None:
    """Every 4xx as ``{"error": "one line"}``: FastAPI's own detail lists are multi-part."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": one_line(str(exc.detail))}, exc.status_code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
        if first.get("type") == "missing":
            message = f"missing form field {field!r} (send multipart/form-data)"
        else:
            message = f"form field {field!r}: {first.get('msg', 'invalid')}"
        return JSONResponse({"error": one_line(message)}, 422)


def model_json(predictor: Any, label: str) -> dict[str, Any]:
    """What the JSON says about the model: its name, point layout and label convention."""
    card = predictor.card
    return {
        "name": label,
        "format": card.get("format"),
        "keypoints": len(predictor.keypoint_names),
        "refinement": predictor.refine is not None,
        "label_pixel_offset": predictor.label_pixel_offset,
    }


def faces_json(
    image: np.ndarray, boxes: list, points: np.ndarray, predictor: Any, model: dict[str, Any]
) -> dict[str, Any]:
    """The ``/v1/keypoints`` answer.

    Returns:
        ``{"image": {"width", "height"}, "model": {...}, "coordinates": COORDINATES,
        "faces": [{"box": {"x", "y", "width", "height"}, "keypoints": [{"name", "x", "y"}]}]}``,
        faces largest first, values rounded to 0.01 px.
    """
    names = predictor.keypoint_names
    faces = []
    for (x, y, w, h), face in zip(boxes, np.asarray(points) + PIXEL_CENTRE, strict=True):
        faces.append(
            {
                "box": {"x": _r(x), "y": _r(y), "width": _r(w), "height": _r(h)},
                "keypoints": [
                    {"name": n, "x": _r(px), "y": _r(py)}
                    for n, (px, py) in zip(names, face, strict=True)
                ],
            }
        )
    height, width = image.shape[:2]
    return {
        "image": {"width": width, "height": height},
        "model": model,
        "coordinates": COORDINATES,
        "faces": faces,
    }


def _r(value: float) -> float:
    return round(float(value), 2)


def filtered_png(image: np.ndarray, points: np.ndarray, overlay: Overlay) -> bytes:
    """The photo as 8-bit BGR with ``overlay`` applied to its faces, encoded as PNG.

    Raises:
        RuntimeError: The overlay returned something other than an image of the same size.
    """
    import cv2

    from facekeys.data.images import to_model_color

    bgr = cv2.cvtColor(to_model_color(image, "rgb"), cv2.COLOR_RGB2BGR)
    out = overlay(bgr, np.asarray(points, np.float32))
    if not isinstance(out, np.ndarray) or out.shape != bgr.shape or out.dtype != np.uint8:
        raise RuntimeError("the overlay returned no uint8 image of the photo's size")
    # Level 3: a photo-sized PNG in tens of milliseconds, a little larger than level 9.
    ok, encoded = cv2.imencode(".png", out, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError("OpenCV could not encode the PNG")
    return encoded.tobytes()


def render_page(
    model_label: str,
    overlays: Mapping[str, Overlay],
    samples: Mapping[str, Path],
    limits: UploadLimits,
) -> str:
    """The page, with the model's name, the overlays, the samples and the caps filled in."""
    template = resources.files("facekeys.wild").joinpath("web_page.html").read_text("utf-8")
    options = "".join(
        f'<option value="{html.escape(n)}">{html.escape(n)}</option>' for n in sorted(overlays)
    )
    links = " ".join(
        f'<a href="?demo={urllib.parse.quote(n)}">{html.escape(n)}</a>' for n in samples
    )
    values = {
        "model": html.escape(model_label or "loaded model"),
        "overlay_options": options,
        "sample_links": f"Or try a sample: {links}" if links else "",
        "max_mb": f"{limits.max_bytes / 1e6:g}",
        "max_megapixels": f"{limits.max_pixels / 1e6:g}",
    }
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", value)
    return template
