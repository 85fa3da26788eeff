"""modules/txt2img.py: the Generate button's txt2img (A1111 ``txt2img``, Forge ``txt2img_function``,
run under ``call_queue.wrap_gradio_gpu_call``, which holds ``queue_lock``): the request's processing
object is closed when the request ends, normally or not (``with closing(p)``), after the selected
script (``scripts_txt2img.run``) or, with none selected, ``process_images``."""
from contextlib import closing

from modules import call_queue, processing, scripts


def txt2img(script_args, **fields):
    """Generate as the Generate button does; ``script_args`` is the runner's flat argument list."""
    p = processing.StableDiffusionProcessingTxt2Img(**fields)
    p.scripts = scripts.scripts_txt2img
    p.script_args = list(script_args)
    with call_queue.queue_lock:
        with closing(p):
            processed = scripts.scripts_txt2img.run(p, *p.script_args)
            if processed is None:
                processed = processing.process_images(p)
    return processed
