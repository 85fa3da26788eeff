"""modules/api/api.py: the two routes a scripted X/Y/Z plot uses (A1111 1.10 / Forge 2, same code):

* ``GET /sdapi/v1/script-info``: every script's ``api_info`` (name, and each argument's label,
  value and choices; ``get_script_info``);
* ``POST /sdapi/v1/txt2img`` with ``script_name`` (a selectable script's title, any case,
  ``script_name_to_index``) and ``script_args`` (that script's arguments, placed into the runner's
  defaults at ``args_from``, position 0 set to its index + 1; ``init_script_args``); the request
  runs under ``queue_lock`` with ``closing(p)`` (``text2imgapi``); the answer's ``info`` is
  ``processed.js()``;
* an exception becomes a JSON answer with status 500: ``error`` (its type), ``detail``, ``body``,
  ``errors`` (its text) (``api_middleware.handle_exception``).
"""
import base64
import io
from contextlib import closing
from typing import Any, Dict

from fastapi import Body, Request
from fastapi.responses import JSONResponse

from modules import call_queue, processing, scripts


def _b64(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class Api:
    def __init__(self, app):
        @app.middleware("http")
        async def exception_handling(request: Request, call_next):
            try:
                return await call_next(request)
            except Exception as e:
                err = {"error": type(e).__name__, "detail": "", "body": "", "errors": str(e)}
                return JSONResponse(status_code=500, content=err)

        app.add_api_route("/sdapi/v1/script-info", self.get_script_info, methods=["GET"])
        app.add_api_route("/sdapi/v1/txt2img", self.text2imgapi, methods=["POST"])

    def get_script_info(self):
        return [s.api_info for s in scripts.scripts_txt2img.scripts if s.api_info is not None]

    def text2imgapi(self, body: Dict[str, Any] = Body(...)):
        runner = scripts.scripts_txt2img
        body = dict(body)
        name = body.pop("script_name", None)
        given = body.pop("script_args", [])
        args = runner.default_args()
        script = None
        if name:
            titles = [s.title().lower() for s in runner.selectable_scripts]
            index = titles.index(name.lower())
            script = runner.selectable_scripts[index]
            args[script.args_from:script.args_to] = given
            args[0] = index + 1
        with call_queue.queue_lock:
            with closing(processing.StableDiffusionProcessingTxt2Img(**body)) as p:
                p.scripts = runner
                p.script_args = args
                processed = runner.run(p, *args) if script is not None else processing.process_images(p)
        return {"images": [_b64(img) for img in processed.images], "parameters": {}, "info": processed.js()}
