"""The .mecha text format (sd-mecha 0.1.0): tokenizer, reader and writer.

The public entry points are in :mod:`lib_mecha.recipe_text`; the format itself is described in
``docs/mecha-format.md``.
"""
