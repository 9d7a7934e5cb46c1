"""The run folder: its files written atomically (folder), its figures (figures), its predictions."""

from slmtune.runs.folder import (  # noqa: F401
    RESULT,
    MetricsLog,
    atomic_write,
    environment,
    has_checkpoint,
    is_complete,
    is_finished,
    make_run_dir,
    paused_at,
    read_json,
    read_result,
    require_run_dir,
    write_json,
)
