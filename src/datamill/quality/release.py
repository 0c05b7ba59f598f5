"""``datamill release``: a Hub dataset folder, built only from a run that passes its gates.

The folder is assembled under a hidden temporary name beside ``REL`` and renamed into place only
when every export, report and the card are written, so ``REL`` is either a complete release or
absent: a blocked release (a failing gate, a golden regression past tolerance, a record that does
not match its profile's schema) leaves nothing that could be uploaded by mistake. ::

    REL/
      README.md                               dataset card: YAML metadata (configs, dataset_info), then prose
      metadata.json                           generator, recipe, seed, models, records, created, sha256 of files
      recipe.yaml                             the recipe as run
      data/PROFILE/train-00000-of-00001.parquet   one config per export profile
      reports/verify.json, report.html        quality dashboard (golden.json with a golden regression)

``push`` uploads the folder with ``huggingface_hub``; the token is passed in memory only and is
redacted from any error the Hub sends back.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from datamill.errors import HubError, UsageError
from datamill.quality.export import (
    METADATA,
    ExportedFile,
    Profile,
    export_file,
    load_profiles,
    metadata_doc,
    model_identities,
)
from datamill.recipe.model import FULL_PROFILE, ReleaseSpec
from datamill.store import RunDir, atomic

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
STAGING = ".tmp-"  # .REL.tmp-PID-RANDOM: a release being built
OLD = ".old-"  # .REL.old-PID-RANDOM: the release it replaces, for the moment of the swap
DATA_FILE = "train-00000-of-00001.parquet"


@dataclass
class ReleasePlan:
    """What a release will hold, settled before any gate runs (bad names fail first, exit 2)."""

    spec: ReleaseSpec
    profiles: list[Profile]


def plan_release(recipe: dict[str, Any], base_dir: Path) -> ReleasePlan:
    """The configs of a release: the ``release.profiles`` of the recipe, or every export profile
    it declares with ``internal_full`` last."""
    spec = ReleaseSpec.model_validate(recipe.get("release") or {})
    profiles = load_profiles(recipe, base_dir)
    names = spec.profiles or [*(n for n in profiles if n != FULL_PROFILE), FULL_PROFILE]
    return ReleasePlan(spec, [profiles[n] for n in names])


def is_release(folder: Path) -> bool:
    """A folder a datamill release wrote (and a later release may replace)."""
    try:
        doc = orjson.loads((folder / METADATA).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    return (
        isinstance(doc, dict)
        and (doc.get("generator") or {}).get("name") == "datamill"
        and (folder / "README.md").is_file()
    )


def check_target(out: Path) -> None:
    """Refuse a ``REL`` that is a file, or a folder holding anything but an earlier release."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} is a file; give a folder for the release")
    if out.is_dir() and any(out.iterdir()) and not is_release(out):
        raise UsageError(f"--out: {out} holds files that are not a datamill release; give a new or empty folder")
    if not out.parent.is_dir():
        raise UsageError(f"--out: {out.parent}: no such directory")


def check_repo_id(repo_id: str) -> None:
    if not REPO_ID.match(repo_id):
        raise UsageError(f"--push: expected ORG/NAME (a Hub dataset repo), got {repo_id!r}")


def _clean_stale(out: Path) -> None:
    """Remove staging folders of releases into ``out`` whose process is gone (a kill mid-build)."""
    for p in [*out.parent.glob(f".{out.name}{STAGING}*"), *out.parent.glob(f".{out.name}{OLD}*")]:
        pid = p.name.rsplit(STAGING if STAGING in p.name else OLD, 1)[1].split("-", 1)[0]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:
            pass  # another user's live process


@dataclass
class Built:
    """A published release folder."""

    out: Path
    files: list[ExportedFile] = field(default_factory=list)
    listing: list[str] = field(default_factory=list)


def _public_verify(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """The verify report as shipped: local paths (the run dir, the tokenizer file) left out."""
    doc = orjson.loads(orjson.dumps(doc))
    doc.pop("report_path", None)
    doc["header"]["source"] = name
    tok = doc["summary"].get("tokenizer")
    if isinstance(tok, str):
        p = Path(tok)
        doc["summary"]["tokenizer"] = f"{p.parent.parent.name}/{p.name}" if p.parent.name == "model" else p.name
    return doc


def build(
    run_dir: str | Path,
    out: str | Path,
    *,
    manifest: dict[str, Any],
    plan: ReleasePlan,
    verify: dict[str, Any],
    golden: dict[str, Any] | None,
    telemetry: dict[str, Any] | None,
    repo_id: str | None,
) -> Built:
    """Write the release folder of ``run_dir`` to ``out``: all of it, or nothing."""
    from datamill.quality import card
    from datamill.quality.report import build_data, render

    out = Path(out)
    check_target(out)
    _clean_stale(out)
    name = manifest["recipe_name"]
    rd = RunDir(run_dir)
    stage = out.with_name(f".{out.name}{STAGING}{os.getpid()}-{os.urandom(4).hex()}")
    stage.mkdir()
    try:
        files: list[ExportedFile] = []
        for profile in plan.profiles:
            folder = stage / "data" / profile.name
            folder.mkdir(parents=True)
            files.append(export_file(run_dir, profile, "parquet", folder / DATA_FILE))
        records = files[0].records if files else 0
        models = model_identities(run_dir, manifest["recipe"])
        reports = stage / "reports"
        reports.mkdir()
        atomic.write_bytes(
            reports / "verify.json", orjson.dumps(_public_verify(verify, name), option=orjson.OPT_INDENT_2)
        )
        data = build_data(rd.path)
        data["header"] = _public_verify(verify, name)["header"]
        atomic.write_bytes(reports / "report.html", render(data).encode())
        if golden is not None:
            atomic.write_bytes(reports / "golden.json", orjson.dumps(golden, option=orjson.OPT_INDENT_2))
        atomic.write_bytes(stage / "recipe.yaml", str(manifest.get("recipe_text") or "").encode())
        meta = metadata_doc(manifest, files, stage, models)
        atomic.write_bytes(stage / METADATA, orjson.dumps(meta, option=orjson.OPT_INDENT_2))
        dedup = None
        dedup_path = rd.reports_dir / "dedup.json"
        if dedup_path.is_file():
            doc = orjson.loads(dedup_path.read_bytes())
            dedup = doc if doc.get("recipe_hash") in (None, manifest["recipe_hash"]) else None
        listing = sorted(["README.md", *(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())])
        configs = [
            {"name": f.profile, "path": f.path.relative_to(stage).as_posix(), "features": f.features,
             "num_bytes": f.arrow_bytes, "bytes": f.bytes, "records": f.records, "sha256": f.sha256,
             "schema_hash": f.schema_hash}
            for f in files
        ]  # fmt: skip
        text = card.render(manifest=manifest, release=plan.spec, configs=configs, records=records, verify=verify,
                           golden=golden, models=models, telemetry=telemetry, dedup=dedup, repo_id=repo_id,
                           files=listing)  # fmt: skip
        atomic.write_bytes(stage / "README.md", text.encode())
        _publish(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    for f in files:
        f.path = out / f.path.relative_to(stage)
    return Built(out, files, listing)


def _publish(stage: Path, out: Path) -> None:
    """Put ``stage`` at ``out`` in one rename; an earlier release there is moved aside first."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}{OLD}{os.getpid()}-{os.urandom(4).hex()}")
        os.rename(out, old)
    try:
        os.rename(stage, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    atomic.fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def push(folder: Path, repo_id: str, token: str, *, private: bool = False) -> str:
    """Upload ``folder`` to the Hub dataset repo ``repo_id`` (created if missing); the commit URL.

    ``HF_ENDPOINT`` chooses the Hub (huggingface_hub reads it). The token goes in memory to
    huggingface_hub only; an error that quotes it back has it replaced by ``***``.
    """
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise UsageError("--push needs huggingface_hub: pip install 'datamill[hf]'") from None
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private or None)
        info = api.upload_folder(
            folder_path=folder,
            repo_id=repo_id,
            repo_type="dataset",
            commit_message=f"datamill release of {folder.name}",
        )
    except Exception as exc:  # any library, HTTP or OS error: one line, with the token out of it
        msg = " ".join(str(exc).split())  # one line: the Hub's own message follows the status line
        msg = msg.replace(token, "***") if token else msg
        raise HubError(f"--push {repo_id}: {type(exc).__name__}: {msg[:600]}") from None
    return str(getattr(info, "commit_url", "") or info)
