"""modules/call_queue.py: ``queue_lock`` is held by UI Generate (wrap_gradio_gpu_call) and the API's
txt2img; ``wrap_gradio_gpu_call`` appends an HTML string to the outputs."""
from modules import fifo_lock, shared

queue_lock = fifo_lock.FIFOLock()


def wrap_gradio_gpu_call(func, extra_outputs=None):
    def f(*args, **kwargs):
        with queue_lock:
            shared.state.begin(job="gpu call")
            try:
                res = func(*args, **kwargs)
            finally:
                shared.state.end()
        res = list(res) if isinstance(res, (list, tuple)) else [res]
        res[-1] = (res[-1] or "") + "<div class='performance'></div>"
        return tuple(res)
    return f
