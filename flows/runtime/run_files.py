"""The files of an embedded run: which it owns, and what it writes at its end.

Topic files are written by the flow as it runs; at the end the run adds the
contact-point map (from the latest analytics snapshot of every scope), the models'
records and the summary. A folder holding an earlier run's files is not written
into by accident: the run refuses it unless told to replace them, or resumes in it.
"""

import json
import shutil
from pathlib import Path

from flows.runtime.map_files import map_from_snapshots, write_map_files
from flows.runtime.runner import RunSummary
from operators.contact_map import ContactMap
from operators.models import ModelSet, model_records
from schemas.topics import AUDIT_TOPICS, all_topics

#: Files a run writes besides its topic files.
#: The run's key vault (`state.key_vault`): a folder of RocksDB parts.
KEY_VAULT = "keys"
#: The run's context view (`state.context_view`): a RocksDB folder.
CONTEXT_VIEW = "context_view"
RUN_FILES = (
    "contact_map_edges.csv",
    "contact_map.json",
    "report.html",
    "shadow_report.json",
    "models.json",
    "summary.json",
)


class OutFolderTaken(Exception):
    """The output folder holds an earlier run's files."""


def topic_file(out: Path, topic: str) -> Path:
    """Where an embedded run writes a topic (audit topics are gzip)."""
    return out / (f"{topic}.jsonl.gz" if topic in AUDIT_TOPICS else f"{topic}.jsonl")


def owned_files(out: Path, channels: tuple[str, ...]) -> list[Path]:
    """The files of a run in `out` that are there now."""
    candidates = [topic_file(out, topic) for topic in all_topics(channels)]
    candidates += [out / name for name in RUN_FILES]
    candidates += [out / KEY_VAULT, out / CONTEXT_VIEW]
    return [path for path in candidates if path.exists()]


def prepare_out(out: Path, channels: tuple[str, ...], *, overwrite: bool, resuming: bool) -> None:
    """Make `out` ready for a run: a resumed run continues its files; otherwise an earlier
    run's files are removed with `overwrite`, and refused without."""
    if resuming:
        return
    earlier = owned_files(out, channels)
    if earlier and not overwrite:
        names = ", ".join(path.name for path in earlier[:3])
        more = f" and {len(earlier) - 3} more" if len(earlier) > 3 else ""
        raise OutFolderTaken(
            f"{out} holds an earlier run's files ({names}{more}): pass --overwrite to replace "
            "them, or choose another --out"
        )
    for path in earlier:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def written_topics(out: Path, channels: tuple[str, ...]) -> dict[str, Path]:
    """The topic files the run wrote, by topic."""
    return {
        topic: topic_file(out, topic)
        for topic in sorted(all_topics(channels))
        if topic_file(out, topic).exists()
    }


def contact_map(out: Path) -> ContactMap | None:
    """The run's contact-point map, from its analytics snapshots (None: no analytics)."""
    analytics = topic_file(out, "analytics")
    if not analytics.exists():
        return None
    with analytics.open("rb") as snapshots:
        return map_from_snapshots(snapshots)


def write_end_files(out: Path, models: ModelSet, cmap: ContactMap | None) -> dict[str, Path]:
    """The map files and the models' records; their paths by name."""
    written: dict[str, Path] = {}
    if cmap is not None:
        written.update(write_map_files(cmap, out))
    models_path = out / "models.json"
    models_path.write_text(json.dumps(model_records(models), indent=2) + "\n")
    written["models"] = models_path
    return written


def write_summary(out: Path, summary: RunSummary) -> Path:
    """The summary, which lists every file the run wrote, itself included."""
    path = out / "summary.json"
    summary.outputs["summary"] = str(path)
    path.write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    return path
