"""modules/infotext_utils.py: ``quote`` (values with , : or newlines are JSON-quoted)."""
import json


def quote(text):
    text = str(text)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def parse_generation_parameters(x: str):
    """Only the last line's ``Key: value`` pairs (enough for the tests)."""
    res = {}
    last = x.strip().split("\n")[-1]
    for part in last.split(", "):
        if ": " in part:
            k, v = part.split(": ", 1)
            res[k] = v.strip('"')
    return res
