"""REST routes under ``/mecha/v1/`` (added in ``on_app_started``).

Imported only from ``on_app_started`` (FastAPI is the host's). Bodies and answers are plain JSON
dicts, so the routes work with pydantic 1 (A1111) and 2 (Forge).
When the host runs with ``--api-auth``, every route asks for the same HTTP basic credentials as the
host's own API (modules/api/api.py ``Api.auth``, which is not reachable from extensions, so the
check is repeated here). No route accepts a path outside the model folders.
"""
from __future__ import annotations

import base64
import functools
import io
from secrets import compare_digest
from typing import Any, Dict, List

from fastapi import Body, Depends, HTTPException
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from ..errors import Busy, HostError, MechaError, ModelNotFound, OutputExists, PathEscape, RecipeError
from .base import PreviewParams
from .jobs import HOT_LOAD, MergeJobs

PREFIX = "/mecha/v1"
_STATUS = ((Busy, 409), (OutputExists, 409), (PathEscape, 403), (ModelNotFound, 404), (RecipeError, 400),
           (HostError, 422), (MechaError, 422))


def parse_credentials(api_auth: str) -> Dict[str, str]:
    """``"u1:p1,u2:p2"`` → {user: password}, as the host parses ``--api-auth``."""
    out = {}
    for pair in (api_auth or "").split(","):
        if ":" in pair:
            user, password = pair.split(":", 1)
            out[user] = password
    return out


def auth_dependencies(api_auth: str) -> List[Any]:
    """FastAPI dependencies that demand the host's API credentials, or none without ``--api-auth``."""
    credentials = parse_credentials(api_auth)
    if not credentials:
        return []
    def check(given: HTTPBasicCredentials = Depends(HTTPBasic())):
        expected = credentials.get(given.username)
        if expected is not None and compare_digest(given.password, expected):
            return True
        raise HTTPException(status_code=401, detail="Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})
    return [Depends(check)]


def _error(exc: MechaError):
    code = next(c for cls, c in _STATUS if isinstance(exc, cls))
    return JSONResponse(status_code=code, content={"error": exc.format_message(), "type": type(exc).__name__})


def _png_b64(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def add_routes(app, host, jobs: MergeJobs, api_auth: str = "") -> None:
    """Register the routes on ``app`` (a FastAPI app), protected like the host's API."""
    deps = auth_dependencies(api_auth)

    def route(path, methods):
        def wrap(fn):
            @functools.wraps(fn)
            def guarded(*args, **kwargs):
                try:
                    return fn(*args, **kwargs)
                except MechaError as exc:
                    return _error(exc)
            app.add_api_route(PREFIX + path, guarded, methods=methods, dependencies=deps)
            return fn
        return wrap

    @route("/status", ["GET"])
    def mecha_status():
        current = host.current_model()
        return {"host": host.name, "job": jobs.status(),
                "model": None if current is None else {"label": current.label, "arch": current.arch,
                                                       "is_merge": current.is_merge,
                                                       "pending_selection": host.pending_selection()}}

    @route("/models", ["GET"])
    def mecha_models():
        def refs(items):
            return [{"label": r.label, "name": r.name, "path": r.path} for r in items]
        return {"checkpoints": refs(host.list_checkpoints()), "loras": refs(host.list_loras()),
                "vaes": refs(host.list_vaes())}

    @route("/merge", ["POST"])
    def mecha_merge(body: Dict[str, Any] = Body(...)):
        recipe = body.get("recipe")
        if not isinstance(recipe, str) or not recipe.strip():
            raise RecipeError("the body needs 'recipe': the text of a .mecha file")
        return jobs.start(recipe, target=str(body.get("target", HOT_LOAD)), name=body.get("name"),
                          folder=body.get("folder"), overwrite=bool(body.get("overwrite", False)),
                          wait=bool(body.get("wait", True)))

    @route("/extract", ["POST"])
    def mecha_extract(body: Dict[str, Any] = Body(...)):
        return jobs.start_extract(body)

    @route("/cancel", ["POST"])
    def mecha_cancel():
        return {"cancelled": jobs.cancel()}

    @route("/restore", ["POST"])
    def mecha_restore():
        report = host.restore(wait=float(600))
        return {"restored": True, **(report.as_dict() if report is not None else {}), "job": jobs.status()}

    @route("/preview", ["POST"])
    def mecha_preview(body: Dict[str, Any] = Body(...)):
        allowed = PreviewParams.__dataclass_fields__
        params = PreviewParams(**{k: v for k, v in body.items() if k in allowed and k != "save"})
        images = host.generate(params, wait=float(body.get("wait", 0)))
        return {"images": [_png_b64(img) for img, _ in images], "infotexts": [t for _, t in images]}

    @route("/recipes/{recipe_id}", ["GET"])
    def mecha_recipe(recipe_id: str):
        text = host.recipes.lookup(recipe_id)
        if text is None:
            raise ModelNotFound(f"recipe {recipe_id}", hint="ids are kept for recipes hot-loaded or previewed here")
        return {"id": recipe_id, "recipe": text}
