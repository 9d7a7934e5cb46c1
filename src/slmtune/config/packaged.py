"""The recipes and study configs shipped with slmtune, and how a config path is found."""

from __future__ import annotations

from pathlib import Path

PACKAGED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
"""The recipes and study configs shipped with slmtune; `configs/<name>` names one from any folder."""


def find_config(path: str | Path, beside: str | Path | None = None) -> Path:
    """The config file `path` names: as given (from the working folder) when it exists; else, for a path written
    inside the config file `beside`, relative to that file's folder or a folder above it; else, for
    `configs/...`, the copy shipped with slmtune. Unresolved paths come back as given."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    folder = Path(beside).resolve().parent if beside else None
    candidates = [f / given for f in (folder, *folder.parents)] if folder else []
    if given.parts and given.parts[0] == "configs":
        candidates.append(PACKAGED_CONFIGS.joinpath(*given.parts[1:]))
    return next((c for c in candidates if c.is_file()), given)


