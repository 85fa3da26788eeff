"""modules/options.py: OptionInfo and Options. ``opts.<key>`` raises AttributeError for a key that
was never registered (Forge modules/options.py:131-142), which is why extensions read
``opts.data.get(key, default)``; ``opts.set`` runs onchange callbacks, ``opts.data[k] = v`` does not."""


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None,
                 section=None, refresh=None, category_id=None, **kwargs):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.comment_after = ""
        self.do_not_save = False

    def info(self, info):
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def link(self, label, url):
        return self

    def needs_reload_ui(self):
        return self


def options_section(section_identifier, options_dict):
    for v in options_dict.values():
        v.section = section_identifier
    return options_dict


class Options:
    def __init__(self, templates):
        object.__setattr__(self, "data_labels", dict(templates))
        object.__setattr__(self, "data", {k: v.default for k, v in templates.items()})
        object.__setattr__(self, "saved", [])

    def __getattr__(self, item):
        if item in self.data:
            return self.data[item]
        if item in self.data_labels:
            return self.data_labels[item].default
        raise AttributeError(f"'Options' object has no attribute '{item}'")

    def __setattr__(self, key, value):
        if key in self.data_labels:
            self.data[key] = value
            return
        object.__setattr__(self, key, value)

    def set(self, key, value, run_callbacks=True):
        old = self.data.get(key)
        if old == value:
            return False
        self.data[key] = value
        info = self.data_labels.get(key)
        if run_callbacks and info is not None and info.onchange is not None:
            info.onchange()
        return True

    def add_option(self, key, info):
        self.data_labels[key] = info
        if key not in self.data:
            self.data[key] = info.default

    def save(self, filename=None):
        self.saved.append(dict(self.data))
