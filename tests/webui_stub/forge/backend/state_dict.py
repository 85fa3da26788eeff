"""backend/state_dict.py: ``try_filter_state_dict`` MOVES the matching keys out of the source dict
(forge state_dict.py:27-44); ``load_state_dict`` is ``nn.Module.load_state_dict(strict=False)``."""

log = []


def load_state_dict(model, sd, ignore_errors=(), log_name=None, ignore_start=None):
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [x for x in missing if x not in ignore_errors]
    unexpected = [x for x in unexpected if x not in ignore_errors]
    if isinstance(ignore_start, str):
        missing = [x for x in missing if not x.startswith(ignore_start)]
        unexpected = [x for x in unexpected if not x.startswith(ignore_start)]
    log.append((log_name, missing, unexpected))


def state_dict_has(sd, prefix):
    return any(x.startswith(prefix) for x in sd.keys())


def filter_state_dict_with_prefix(sd, prefix, new_prefix=""):
    new_sd = {}
    for k, v in list(sd.items()):
        if k.startswith(prefix):
            new_sd[new_prefix + k[len(prefix):]] = v
            del sd[k]
    return new_sd


def try_filter_state_dict(sd, prefix_list, new_prefix=""):
    for prefix in prefix_list:
        if state_dict_has(sd, prefix):
            return filter_state_dict_with_prefix(sd, prefix, new_prefix)
    return {}
