"""The rule every way of saving a merge applies before it writes: never over one of its inputs.

The command line, the Python API, the tab and the REST routes all end in :func:`lib_mecha.merge`,
which applies it; the tab and the REST routes also apply it before they start a job (and before
the tab asks whether to replace a file), so the refusal comes at once.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence

from ..errors import OutputIsInput
from ..io.reader import INDEX_SUFFIX
from ..io.sharded import find_index, shard_files
from ..recipe import as_node, model, models_of
from .sources import resolve_model_path


def input_files(recipe, model_dirs: Sequence[str] = (), fallback_model: Optional[str] = None) -> List[Path]:
    """Every file a merge of ``recipe`` reads, found as the engine finds them (a sharded model
    gives its index and shards).

    Raises:
        ModelNotFound, SafetensorsError: as the merge itself would.
    """
    nodes = list(models_of(as_node(recipe)))
    if fallback_model:
        nodes.append(model(fallback_model))
    files: List[Path] = []
    for node in nodes:
        path = resolve_model_path(node.path, model_dirs)
        if path.is_dir():
            files += shard_files(find_index(path))
        elif path.name.lower().endswith(INDEX_SUFFIX):
            files += shard_files(path)
        else:
            files.append(path)
    return files


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: another spelling, a symbolic link or a hard link to it."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def refuse_input_as_output(recipe, output, model_dirs: Sequence[str] = (),
                           fallback_model: Optional[str] = None) -> None:
    """Raise :class:`~lib_mecha.errors.OutputIsInput` when ``output`` is one of the files the
    merge of ``recipe`` reads, however it is spelled or linked; overwriting is never allowed
    for those. Checks only; writes nothing."""
    output = Path(output)
    for path in input_files(recipe, model_dirs, fallback_model):
        if same_file(output, path):
            raise OutputIsInput(output, path)
