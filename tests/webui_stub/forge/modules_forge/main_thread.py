"""modules_forge/main_thread.py: run_and_wait_result runs ``func`` on Forge's main thread and returns
its result; an exception is printed and DROPPED (the caller gets None) — forge main_thread.py Task.work.
The stand-in runs it on the calling thread."""
import traceback

calls = []


def run_and_wait_result(func, *args, **kwargs):
    calls.append(getattr(func, "__name__", "?"))
    try:
        return func(*args, **kwargs)
    except Exception:
        traceback.print_exc()
        return None
