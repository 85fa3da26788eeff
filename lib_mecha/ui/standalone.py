"""``python -m lib_mecha ui --models-dir DIR``: the Mecha tab on localhost, without a WebUI.

Merging and saving work; hot-loading and previews need a WebUI and are hidden. The page has
the same ``tab_mecha`` element as in the WebUI, so style.css and javascript/mecha.js apply
unchanged (they are inlined here, since no WebUI serves them).
"""
from __future__ import annotations

import os
import threading
from typing import Optional, Sequence

from ..errors import MechaError
from .compat import js_kw
from .tab import attach_initial, build_tab, read_asset

TITLE = "Mecha"


def make_host(model_dirs: Sequence[str], lora_dirs: Sequence[str] = (), save_dir: Optional[str] = None,
              options: Optional[dict] = None):
    """A StandaloneHost whose checkpoint folders are ``model_dirs`` (LoRAs also looked up there
    when no LoRA folder is given)."""
    from ..host.standalone import StandaloneHost
    dirs = [d for d in model_dirs if d]
    for d in dirs:
        if not os.path.isdir(d):
            raise MechaError(f"models folder not found: {d}", "pass an existing folder to --models-dir")
    return StandaloneHost(checkpoint_dirs=dirs, lora_dirs=list(lora_dirs) or dirs, vae_dirs=dirs,
                          save_dir=save_dir, options=options)


def build_demo(host):
    """The standalone page: one ``tab_mecha`` tab holding the Mecha tab."""
    import gradio as gr
    css = read_asset("style.css")
    script = read_asset("javascript/mecha.js")
    with gr.Blocks(analytics_enabled=False, title=TITLE, css=css) as demo:
        with gr.Tabs(elem_id="mecha_tabs"):
            with gr.Tab("Mecha", elem_id="tab_mecha"):
                ctx = build_tab(host)
        attach_initial(demo, ctx)
        if script:
            # gradio has no portable way to add a <script>; run the file once when the page loads
            demo.load(None, inputs=None, outputs=None, **js_kw("() => {\n" + script + "\n}"))
    demo.mecha_context = ctx
    return demo


def launch(host, server_name: str = "127.0.0.1", port: int = 7861, quiet: bool = True):
    """Start serving in gradio's background thread; returns the demo (``demo.close()`` stops it)."""
    demo = build_demo(host)
    # The same call as A1111 and Forge make (webui-host §5.2): 64 workers in gradio 3, so that
    # Cancel runs while a merge streams its progress; in gradio 4 the first argument is the
    # status update rate, and concurrency is set per listener.
    demo.queue(64)
    demo.launch(server_name=server_name, server_port=port, prevent_thread_lock=True, share=False,
                inbrowser=False, show_error=True, quiet=quiet)
    return demo


def serve(model_dirs: Sequence[str], host: str = "127.0.0.1", port: int = 7861) -> int:
    """Serve the tab until interrupted (Ctrl+C). Returns the exit code."""
    if not model_dirs:
        raise MechaError("no models folder given", "pass --models-dir DIR (repeatable)")
    mecha_host = make_host(model_dirs)
    demo = launch(mecha_host, host, port, quiet=False)
    print(f"Mecha tab on http://{host}:{port}/ (Ctrl+C to stop)", flush=True)
    stop = threading.Event()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
    return 0
