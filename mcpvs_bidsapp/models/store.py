"""A store of installed nnU-Net v2 models, checked by sha256 before anything is unpickled.

An nnU-Net checkpoint is a pickle: ``torch.load`` runs code from it. So every file of an installed
model is hashed at install time and a model is re-hashed before its checkpoints are loaded; a
file whose checksum changed is refused by name. Reading the store never writes to it, so it may
live on a read-only mount (containers).

Layout of a store::

    <store>/<name>/mcpvs_model.json            manifest (checksums, folds, trainer, labels, ...)
    <store>/<name>/model/plans.json            the nnU-Net trained-model folder, as exported
    <store>/<name>/model/dataset.json
    <store>/<name>/model/fold_<k>/checkpoint_final.pth
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mcpvs_bidsapp.config import default_model_store
from mcpvs_bidsapp.errors import ChecksumMismatchError, ModelStoreError

MANIFEST_NAME = "mcpvs_model.json"
MODEL_SUBDIR = "model"
MANIFEST_VERSION = 1
#: nnU-Net's own inference default first; checkpoint_best only where no final one exists
CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth")
#: small files of a fold folder worth keeping beside the checkpoint (provenance, not needed to run)
FOLD_EXTRAS = ("debug.json", "progress.png", "validation/summary.json")
TOP_FILES = ("dataset.json", "plans.json", "dataset_fingerprint.json")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FOLD_RE = re.compile(r"^fold_(\d+|all)$")


@dataclass(frozen=True)
class ModelInfo:
    """One installed model, as described by its manifest."""

    name: str
    path: Path  #: the nnU-Net trained-model folder inside the store
    checksum: str  #: ``sha256:<hex>`` over every recorded file and its checksum
    configuration: str
    trainer: str
    plans: str
    folds: tuple  #: fold ids (int, or "all")
    checkpoints: dict  #: fold id (str) -> checkpoint file name
    labels: dict  #: label name -> value, from dataset.json
    channel_names: dict
    file_ending: str
    dataset_name: str
    installed_at: str
    source: str
    files: dict = field(repr=False)  #: relative path -> sha256 hex

    @property
    def root(self) -> Path:
        return self.path.parent

    def checkpoint_path(self, fold: int | str) -> Path:
        key = str(fold)
        if key not in self.checkpoints:
            raise ModelStoreError(
                f"model {self.name!r} has no fold {fold} "
                f"(installed folds: {_folds_str(self.folds)})"
            )
        return self.path / f"fold_{key}" / self.checkpoints[key]

    def summary(self) -> dict:
        """The model's record for a sidecar or ``mcpvs models list --json``."""
        out = asdict(self)
        out["path"] = str(self.path)
        out["folds"] = list(self.folds)
        out.pop("files")
        return out


# --------------------------------------------------------------------------- helpers


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fobj:
        while block := fobj.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _model_checksum(files: dict) -> str:
    text = "\n".join(f"{sha}  {rel}" for rel, sha in sorted(files.items()))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _folds_str(folds) -> str:
    return ", ".join(str(f) for f in folds) or "none"


def _fold_key(name: str):
    fold = _FOLD_RE.match(name).group(1)
    return int(fold) if fold != "all" else "all"


def resolve_store(store: str | os.PathLike | None = None) -> Path:
    """The store to use: the explicit one, else $MCPVS_MODEL_STORE, else the per-user default."""
    return Path(store).expanduser().absolute() if store else default_model_store().absolute()


def check_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise ModelStoreError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)"
        )
    return name


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelStoreError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(data, dict):
        raise ModelStoreError(f"{path}: a JSON object was expected")
    return data


# --------------------------------------------------------------------------- discovery


def _fold_checkpoints(folder: Path) -> dict:
    """fold id (str) -> checkpoint file name, for every fold_* folder holding a checkpoint."""
    found = {}
    for sub in sorted(folder.iterdir()):
        if sub.is_dir() and _FOLD_RE.match(sub.name):
            for chk in CHECKPOINT_NAMES:
                if (sub / chk).is_file():
                    found[str(_fold_key(sub.name))] = chk
                    break
    return found


def is_trained_model_folder(folder: Path) -> bool:
    return (
        (folder / "plans.json").is_file()
        and (folder / "dataset.json").is_file()
        and bool(_fold_checkpoints(folder))
    )


def find_trained_model_folders(root: Path) -> list[Path]:
    """Every nnU-Net trained-model folder at or below ``root`` (an export zip may hold several)."""
    if is_trained_model_folder(root):
        return [root]
    return sorted(
        Path(dirpath)
        for dirpath, _, filenames in os.walk(root)
        if "plans.json" in filenames and is_trained_model_folder(Path(dirpath))
    )


def describe_model_folder(
    folder: Path, *, configuration: str | None = None, trainer: str | None = None
) -> dict:
    """Check that ``folder`` is an nnU-Net v2 trained-model folder and say what it holds.

    Trainer, plans and configuration come from nnU-Net's folder name
    ``<trainer>__<plans>__<configuration>`` (read without unpickling anything); ``configuration``
    and ``trainer`` fill in for folders that were renamed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelStoreError(f"{folder}: not a folder")
    for required in ("dataset.json", "plans.json"):
        if not (folder / required).is_file():
            raise ModelStoreError(
                f"{folder}: not an nnU-Net v2 trained-model folder ({required} is missing)"
            )
    checkpoints = _fold_checkpoints(folder)
    if not checkpoints:
        raise ModelStoreError(
            f"{folder}: no fold_*/checkpoint_final.pth or checkpoint_best.pth "
            "(not an nnU-Net v2 trained-model folder, or training did not finish)"
        )
    dataset = _load_json(folder / "dataset.json")
    plans = _load_json(folder / "plans.json")
    parts = folder.name.split("__")
    name_trainer, name_plans, name_config = parts if len(parts) == 3 else (None, None, None)
    configuration = configuration or name_config
    trainer = trainer or name_trainer
    if configuration is None or trainer is None:
        raise ModelStoreError(
            f"{folder}: folder name is not <trainer>__<plans>__<configuration>; "
            "give --configuration and --trainer"
        )
    configs = plans.get("configurations", {})
    if configuration not in configs:
        raise ModelStoreError(
            f"{folder}/plans.json has no configuration {configuration!r} "
            f"(it has: {', '.join(configs) or 'none'})"
        )
    if "labels" not in dataset or "channel_names" not in dataset and "modality" not in dataset:
        raise ModelStoreError(f"{folder}/dataset.json lacks 'labels' or 'channel_names'")
    return {
        "configuration": configuration,
        "trainer": trainer,
        "plans": plans.get("plans_name", name_plans or "nnUNetPlans"),
        "dataset_name": plans.get("dataset_name", dataset.get("name", "")),
        "checkpoints": checkpoints,
        "folds": sorted(
            (_fold_key(f"fold_{k}") for k in checkpoints), key=lambda f: (isinstance(f, str), f)
        ),
        "labels": dataset["labels"],
        "channel_names": dataset.get("channel_names", dataset.get("modality", {})),
        "file_ending": dataset.get("file_ending", ".nii.gz"),
    }


def _safe_extract(zip_path: Path, dest: Path) -> None:
    """Extract a zip, refusing members that would land outside ``dest`` (zip-slip)."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            dest_resolved = dest.resolve()
            for member in zf.infolist():
                target = (dest / member.filename).resolve()
                if dest_resolved not in target.parents and target != dest_resolved:
                    raise ModelStoreError(f"{zip_path}: unsafe path in archive: {member.filename}")
            zf.extractall(dest)
    except zipfile.BadZipFile:
        raise ModelStoreError(f"{zip_path}: not a zip file") from None


# --------------------------------------------------------------------------- store operations


def install_model(
    source: str | os.PathLike,
    name: str | None = None,
    store: str | os.PathLike | None = None,
    *,
    configuration: str | None = None,
    trainer: str | None = None,
    force: bool = False,
) -> ModelInfo:
    """Install a model from an nnU-Net export zip or a trained-model (or results) folder.

    Copies plans, dataset.json and one checkpoint per fold (``checkpoint_final.pth``, else
    ``checkpoint_best.pth``) into ``<store>/<name>/model`` and records the sha256 of every
    copied file. The new entry appears atomically (renamed into place when complete).
    """
    source = Path(source).expanduser().absolute()
    store_dir = resolve_store(store)
    if not source.exists():
        raise ModelStoreError(f"{source}: no such file or folder")
    with tempfile.TemporaryDirectory(prefix="mcpvs-install-") as tmp:
        root = source
        if source.is_file():
            if not zipfile.is_zipfile(source):
                raise ModelStoreError(
                    f"{source}: not a zip file (give an nnUNetv2_export_model_to_zip archive "
                    "or a trained-model folder)"
                )
            root = Path(tmp) / "unzipped"
            root.mkdir()
            _safe_extract(source, root)
        candidates = find_trained_model_folders(root)
        if configuration:
            candidates = [c for c in candidates if c.name.endswith(f"__{configuration}")] or [
                c for c in candidates if "__" not in c.name
            ]
        if trainer:
            candidates = [c for c in candidates if c.name.startswith(f"{trainer}__")] or [
                c for c in candidates if "__" not in c.name
            ]
        if not candidates:
            raise ModelStoreError(
                f"{source}: no nnU-Net v2 trained-model folder found (expected dataset.json, "
                "plans.json and fold_*/checkpoint_final.pth)"
            )
        if len(candidates) > 1:
            names = ", ".join(str(c.relative_to(root)) for c in candidates)
            raise ModelStoreError(
                f"{source}: holds several trained models ({names}); choose with "
                "--configuration / --trainer"
            )
        folder = candidates[0]
        info = describe_model_folder(folder, configuration=configuration, trainer=trainer)
        name = check_name(name or info["dataset_name"].lower() or "model")
        final = store_dir / name
        if final.exists() and not force:
            raise ModelStoreError(
                f"a model named {name!r} is already installed in {store_dir} "
                "(remove it first or use --force)"
            )
        try:
            store_dir.mkdir(parents=True, exist_ok=True)
            staging = store_dir / f".installing-{name}-{uuid.uuid4().hex[:8]}"
            _copy_model(folder, staging / MODEL_SUBDIR, info["checkpoints"])
        except OSError as err:
            raise ModelStoreError(f"cannot write to model store {store_dir}: {err}") from None
        try:
            model_dir = staging / MODEL_SUBDIR
            files = {
                p.relative_to(model_dir).as_posix(): sha256_file(p)
                for p in sorted(model_dir.rglob("*"))
                if p.is_file()
            }
            manifest = {
                "manifest_version": MANIFEST_VERSION,
                "name": name,
                "checksum": _model_checksum(files),
                **{k: v for k, v in info.items() if k != "folds"},
                "folds": info["folds"],
                "installed_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "source": str(source),
                "source_sha256": sha256_file(source) if source.is_file() else None,
                "files": files,
            }
            (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    _VERIFIED.pop(str(final), None)
    return _info_from_manifest(final)


def _copy_model(folder: Path, dest: Path, checkpoints: dict) -> None:
    dest.mkdir(parents=True)
    for fname in TOP_FILES:
        if (folder / fname).is_file():
            shutil.copy2(folder / fname, dest / fname)
    for fold, chk in checkpoints.items():
        src, dst = folder / f"fold_{fold}", dest / f"fold_{fold}"
        dst.mkdir()
        shutil.copy2(src / chk, dst / chk)
        for extra in FOLD_EXTRAS:
            if (src / extra).is_file():
                (dst / extra).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / extra, dst / extra)


def _info_from_manifest(entry: Path) -> ModelInfo:
    manifest_path = entry / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ModelStoreError(f"{entry}: not an installed model ({MANIFEST_NAME} is missing)")
    man = _load_json(manifest_path)
    try:
        return ModelInfo(
            name=man["name"],
            path=entry / MODEL_SUBDIR,
            checksum=man["checksum"],
            configuration=man["configuration"],
            trainer=man["trainer"],
            plans=man["plans"],
            folds=tuple(man["folds"]),
            checkpoints=dict(man["checkpoints"]),
            labels=dict(man["labels"]),
            channel_names=dict(man["channel_names"]),
            file_ending=man["file_ending"],
            dataset_name=man["dataset_name"],
            installed_at=man["installed_at"],
            source=man["source"],
            files=dict(man["files"]),
        )
    except KeyError as err:
        raise ModelStoreError(f"{manifest_path}: manifest lacks {err}") from None


def list_models(store: str | os.PathLike | None = None) -> list[ModelInfo]:
    """Installed models (by name), read from their manifests; nothing is hashed or written."""
    store_dir = resolve_store(store)
    if not store_dir.is_dir():
        return []
    return [
        _info_from_manifest(entry)
        for entry in sorted(store_dir.iterdir())
        if entry.is_dir() and (entry / MANIFEST_NAME).is_file()
    ]


def find_model(name: str, store: str | os.PathLike | None = None) -> ModelInfo:
    """The manifest of model ``name``, not yet verified."""
    store_dir = resolve_store(store)
    entry = store_dir / check_name(name)
    if not (entry / MANIFEST_NAME).is_file():
        installed = ", ".join(m.name for m in list_models(store_dir)) or "none"
        raise ModelStoreError(
            f"no model named {name!r} in {store_dir} (installed: {installed}); "
            f"install one with: mcpvs models install PATH --name {name}"
        )
    return _info_from_manifest(entry)


#: per-process record of verified entries: entry path -> (checksum, stat signature)
_VERIFIED: dict[str, tuple[str, tuple]] = {}


def _stat_signature(info: ModelInfo) -> tuple:
    sig = []
    for rel in sorted(info.files):
        try:
            st = (info.path / rel).stat()
        except OSError:
            return ()
        sig.append((rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    return tuple(sig)


def verify_model(name: str, store: str | os.PathLike | None = None) -> ModelInfo:
    """Re-hash every recorded file of model ``name``; raise on the first that differs."""
    info = find_model(name, store)
    for rel, expected in sorted(info.files.items()):
        path = info.path / rel
        if not path.is_file():
            raise ChecksumMismatchError(f"model {info.name!r}: {path} is missing")
        if sha256_file(path) != expected:
            raise ChecksumMismatchError(
                f"model {info.name!r}: checksum mismatch for {path} (changed since install); "
                "refusing to load it. Reinstall the model from a trusted source."
            )
    for fold in info.folds:  # every checkpoint we may unpickle must be covered
        rel = f"fold_{fold}/{info.checkpoints[str(fold)]}"
        if rel not in info.files:
            raise ChecksumMismatchError(f"model {info.name!r}: {rel} has no recorded checksum")
    if _model_checksum(info.files) != info.checksum:
        raise ChecksumMismatchError(
            f"model {info.name!r}: {info.root / MANIFEST_NAME} was edited (checksum mismatch)"
        )
    _VERIFIED[str(info.root)] = (info.checksum, _stat_signature(info))
    return info


def get_model(name: str, store: str | os.PathLike | None = None) -> ModelInfo:
    """A verified model, ready to load. Verification is hashed once per process and file state."""
    info = find_model(name, store)
    cached = _VERIFIED.get(str(info.root))
    if cached and cached[0] == info.checksum and cached[1] and cached[1] == _stat_signature(info):
        return info
    return verify_model(name, store)


def remove_model(name: str, store: str | os.PathLike | None = None) -> Path:
    info = find_model(name, store)
    try:
        shutil.rmtree(info.root)
    except OSError as err:
        raise ModelStoreError(f"cannot remove {info.root}: {err}") from None
    _VERIFIED.pop(str(info.root), None)
    return info.root
