"""The audit: a profile's results checked against their records, here or from a bundle.

``python -m ckd_lib.study --profile P --verify`` trains nothing. For every run record of the
profile (``runs/`` and ``detection/``) it checks, printing one line per run that fails:

- the record can be read and believed (``ckd_lib.results.record_problems``: record version, the
  model file and its sha256, a history that gives its summary);
- its identity (``ckd_lib.identity``): the plugins that define its method and the teacher file it
  distilled from are the ones it cites, and its training and test sets have the fingerprints it
  recorded (the data is loaded here, which the engine does not do to skip a finished run);
- its model, evaluated again on its test set, gives the top-1 it recorded (detection: the box
  AP), within :func:`tolerance`;

then recomputes the report's summary (``ckd_lib.report.build.prepare(...).summary()``, every
table cell) and compares it with the published ``summary.csv``, column by column, whatever the
columns are. One summary line ends the output; the exit status is 1 on any mismatch.

``--export FILE.tar.gz`` writes a bundle: the records, their model files, the executed notebooks,
the report's pages, ``summary.csv``, the artifacts, generated data, the plugin files the records
cite, and ``manifest.json`` with every file's sha256. ``--verify --bundle FILE.tar.gz`` checks a
bundle made elsewhere: only regular files named in its manifest are extracted (no absolute
path, no ``..``, no link), every file must match the manifest, then the audit runs on the
extracted copy. A bundle's plugins are not executed: pass ``--plugin`` to check runs of plugin
methods with your own copy (its sha256 must be the one the records cite).
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import math
import os
import tarfile
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import pandas as pd

from ckd_lib import identity, results
from ckd_lib.errors import InputError, UserError
from ckd_lib.study.paths import resolve

BUNDLE_FORMAT = 1
MANIFEST = "manifest.json"
# Re-evaluated top-1 against the record's, in test images. On the device kind, precision and
# memory format the run was evaluated with, the same weights give the same predictions up to the
# order of float sums (thread count, kernel choice), which can flip a borderline image: 1 image.
SAME_SETUP_IMAGES = 1
# On another device kind or precision (a GPU run's bf16 evaluation checked in float32 on a CPU),
# borderline predictions flip: bf16 and float32 evaluations of the tiny study's 22 barely trained
# models on the CPU differed by up to 2 of 128 test images in top-1 (24 of 2,816 predictions
# changed). Allowed: 0.5 points, at least 3 images.
OTHER_SETUP_POINTS = 0.5
OTHER_SETUP_IMAGES = 3
# Box (and mask) AP: the detection evaluation runs in float32 everywhere; another device's
# kernels move scores slightly, which can reorder near-equal detections.
AP_POINTS = 0.1


def tolerance(test_size: int, same_setup: bool) -> float:
    """How far (percentage points) a re-evaluated top-1 may be from the recorded one."""
    if same_setup:
        return 100.0 * SAME_SETUP_IMAGES / test_size
    return max(OTHER_SETUP_POINTS, 100.0 * OTHER_SETUP_IMAGES / test_size)


@dataclasses.dataclass
class Findings:
    """What an audit found: one line per mismatch, notes that do not fail it, counts."""

    log: Callable[[str], None] = print
    mismatches: int = 0
    notes: int = 0
    records: int = 0
    evaluated: int = 0
    rows: int = 0

    def bad(self, line: str) -> None:
        self.mismatches += 1
        self.log(f"mismatch: {line}")

    def note(self, line: str) -> None:
        self.notes += 1
        self.log(f"note: {line}")


class Relocate:
    """A path a record names, where it is now: under the profile folder the record was written
    in (its ``out_dir``'s parent) means under the profile folder being audited (a bundle
    extracted elsewhere, a results folder moved)."""

    def __init__(self, record: dict, root: Path):
        out_dir = (record.get("config") or {}).get("out_dir")
        self.old = resolve(out_dir).parent if out_dir else None
        self.root = root

    def __call__(self, path: str | None) -> str | None:
        if not path or self.old is None:
            return path
        try:
            return str(self.root / resolve(path).relative_to(self.old))
        except ValueError:
            return path


def _config_of(record: dict, relocate: Relocate):
    """The record's config as its class, with its files where they are now."""
    from ckd_lib.study.slurm import unit_config

    config = unit_config(record.get("task", "classification"), record["config"])
    checkpoint = config.teacher_checkpoint
    if checkpoint not in (None, identity.UNTRAINED, identity.TORCHVISION):
        config = dataclasses.replace(config, teacher_checkpoint=relocate(checkpoint))
    return config


class Auditor:
    """Checks the records of one profile folder; see the module docstring."""

    def __init__(self, root: Path, findings: Findings, device: str = "auto"):
        import torch

        self.root = root
        self.found = findings
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                                   else ("cpu" if device == "auto" else device))
        self._data: dict = {}

    def run(self) -> None:
        for folder in (self.root / "runs", self.root / "detection"):
            unreadable: list[dict] = []
            records = results.load_records(folder, status=None, unreadable=unreadable) \
                if folder.is_dir() else []
            for entry in unreadable:
                self.found.records += 1
                self.found.bad(f"run {Path(entry['path']).parent.name}: {entry['why']}")
            for record in records:
                self.found.records += 1
                self.check(record)

    def check(self, record: dict) -> None:
        run_id, status = record["run_id"], record["status"]
        if status != "complete":
            self.found.note(f"run {run_id} is {status}: in no table")
            return
        problems = list(record["_problems"])
        relocate = Relocate(record, self.root)
        try:
            config = _config_of(record, relocate)
            problems += identity.of_config(config).stale_reasons(record)
        except UserError as error:
            self.found.bad(f"run {run_id}: its config cannot be read here ({error}); a plugin "
                           "method needs --plugin FILE")
            return
        if identity.teacher_file(config) is None and config.teacher_checkpoint not in (
                None, identity.UNTRAINED, identity.TORCHVISION):
            self.found.note(f"run {run_id}: teacher checkpoint {config.teacher_checkpoint} is "
                            "not here: its sha256 is not checked")
        entry = record.get("model") if isinstance(record.get("model"), dict) else {}
        name = str(entry.get("file") or results.MODEL_NAME)
        model = Path(record["_path"]).parent / Path(name).name  # never outside its folder
        if model.is_file():
            try:
                if record.get("task") == "detection":
                    problems += self.detection(record, config, model, relocate)
                else:
                    problems += self.classification(record, config, model)
            except UserError as error:
                problems.append(f"its model cannot be evaluated here ({error})")
        if problems:
            self.found.bad(f"run {run_id}: " + "; ".join(problems))

    # -- evaluation ---------------------------------------------------------------------------
    def _splits(self, config):
        from ckd_lib.engine.trainer import load_split

        key = (config.dataset, config.data_root, config.train_subset, config.test_subset,
               config.data_seed)
        if key not in self._data:
            self._data[key] = (load_split(config, train=True), load_split(config, train=False))
        return self._data[key]

    def classification(self, record: dict, config, model_path: Path) -> list[str]:
        import torch

        from ckd_lib.data import make_imagenet_loader, make_loader
        from ckd_lib.engine.evaluate import evaluate
        from ckd_lib.models import create_model

        problems = []
        train_set, test_set = self._splits(config)
        data = record.get("data") or {}
        for name, dataset in (("training", train_set), ("test", test_set)):
            recorded = data.get(f"{'train' if name == 'training' else 'test'}_fingerprint")
            if recorded != dataset.fingerprint():
                problems.append(f"its {name} set here is not the one it was trained with "
                                f"(fingerprint {identity.short(recorded)} -> "
                                f"{identity.short(dataset.fingerprint())})")
        speed = record.get("speed") or {}
        same = (speed.get("device", "cpu").split(":")[0] == self.device.type)
        amp = speed.get("amp", "none") if same else "none"
        channels_last = bool(speed.get("channels_last", False))
        model = create_model(config.student, num_classes=test_set.num_classes,
                             dataset=config.model_zoo)
        state = results.load_state(model_path, what="model file")
        try:
            model.load_state_dict(state.get("model") or {})
        except RuntimeError:
            return [*problems, f"its model file does not hold {config.student} weights (keys or "
                               "shapes differ)"]
        model = model.to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        batch = int(speed.get("eval_batch_size") or 256)
        if config.model_zoo == "imagenet":
            loader = make_imagenet_loader("torch", test_set, batch, train=False, seed=config.seed,
                                          num_workers=config.num_workers)
        else:
            loader = make_loader("gpu", test_set, batch, train=False, seed=config.seed,
                                 device=self.device, channels_last=channels_last)
        top1 = evaluate(model, loader, amp)["top1"]
        self.found.evaluated += 1
        recorded = (record.get("last") or {}).get("top1")
        allowed = tolerance(len(test_set.labels), same)
        if recorded is None or abs(top1 - recorded) > allowed + 1e-9:
            problems.append(f"its model gives top-1 {top1:.2f} on its test set here, its record "
                            f"says {recorded} (tolerance {allowed:.2f} points)")
        return problems

    def detection(self, record: dict, config, model_path: Path, relocate: Relocate) -> list:
        from ckd_lib.detection.coco import CocoDetection
        from ckd_lib.detection.engine import evaluate_detector
        from ckd_lib.detection.models import load_detector

        data = record.get("data") or {}
        root = relocate(data.get("root")) or config.data_root
        val = CocoDetection(root, config.val_split, train=False,
                            masks=config.kind == "mask_rcnn", limit=config.val_limit)
        problems = []
        if len(val) != data.get("val") or list(val.category_ids) != list(data.get("categories",
                                                                                    [])):
            problems.append(f"its validation set here ({len(val)} images, categories "
                            f"{list(val.category_ids)}) is not the one it recorded "
                            f"({data.get('val')} images, categories {data.get('categories')})")
        try:
            model = load_detector(model_path).to(self.device)
        except RuntimeError:
            return [*problems, "its model file does not hold the detector its spec names (keys "
                               "or shapes differ)"]
        metrics = evaluate_detector(model, val, self.device, None, config.eval_images_per_batch)
        self.found.evaluated += 1
        last = record.get("last") or {}
        for key, name in (("bbox", "AP"), ("segm", "mask_AP")):
            if key in metrics and last.get(name) is not None and \
                    abs(metrics[key]["AP"] - last[name]) > AP_POINTS + 1e-9:
                problems.append(f"its model gives {name} {metrics[key]['AP']:.2f} here, its "
                                f"record says {last[name]:.2f} (tolerance {AP_POINTS} points)")
        return problems


# -- the tables ------------------------------------------------------------------------------------
def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    x, y = _number(a), _number(b)
    if x is None or y is None:
        return False
    if math.isnan(x) and math.isnan(y):
        return True
    return abs(x - y) <= 1e-9 * max(1.0, abs(x))


def compare_summaries(published: pd.DataFrame, recomputed: pd.DataFrame) -> list[str]:
    """One line per difference between two summary frames (text cells, as in the CSV)."""
    lines = [f"summary.csv column {c!r} is not in the summary the records give"
             for c in published.columns if c not in recomputed.columns]
    lines += [f"summary.csv lacks column {c!r} that the records give"
              for c in recomputed.columns if c not in published.columns]
    columns = [c for c in recomputed.columns if c in published.columns]
    # rows are told apart by their text columns (table, pair, method, ...), whatever they are
    keys = [c for c in columns
            if all(_number(v) is None for v in [*published[c], *recomputed[c]] if v != "")]

    def keyed(frame):
        return {tuple(row[c] for c in keys): row for _, row in frame.iterrows()}

    def name(key) -> str:  # a row in words: its first text columns
        return " / ".join(str(v) for v in key[:6] if v != "")

    old, new = keyed(published), keyed(recomputed)
    if len(old) != len(published) or len(new) != len(recomputed) or not keys:  # by position
        old = {(i,): row for i, (_, row) in enumerate(published.iterrows())}
        new = {(i,): row for i, (_, row) in enumerate(recomputed.iterrows())}
    for key in [k for k in old if k not in new]:
        lines.append(f"summary.csv row {name(key)} is not what the records give")
    for key in [k for k in new if k not in old]:
        lines.append(f"summary.csv lacks row {name(key)} that the records give")
    for key in [k for k in old if k in new]:
        differ = [f"{c} {old[key][c]!r} vs {new[key][c]!r}" for c in columns
                  if not _same(old[key][c], new[key][c])]
        if differ:
            lines.append(f"summary.csv row {name(key)}: published vs records: "
                         + ", ".join(differ))
    return lines


def _csv_frame(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


def check_tables(profile: str, results_dir: Path, found: Findings) -> None:
    """The published summary.csv against the summary recomputed from the records."""
    from ckd_lib.report.build import _papermill_parameters, prepare
    from ckd_lib.report.provenance import REPORT_NOTEBOOK

    root = results_dir / profile
    published = root / "summary.csv"
    if not published.is_file():
        found.bad(f"{published} is missing: the report was not published (its notebook "
                  f"{REPORT_NOTEBOOK} has not run)")
        return
    executed = root / "executed" / f"{REPORT_NOTEBOOK}.ipynb"
    paper = _papermill_parameters(executed).get("paper_numbers_csv") if executed.is_file() \
        else None
    if paper and not Path(paper).is_file():  # made elsewhere: the copy beside the results
        paper = None
    recomputed = prepare(profile, results_dir, paper).summary()
    old = _csv_frame(published.read_text())
    new = _csv_frame(recomputed.to_csv(index=False))
    found.rows = len(new)
    for line in compare_summaries(old, new):
        found.bad(line)


def commits_note(root: Path, found: Findings) -> None:
    """ckd_lib's own commit only warns (the report says which cells each commit made)."""
    commits = set()
    for folder in (root / "runs", root / "detection"):
        if folder.is_dir():
            commits |= {(r["provenance"].get("commit") or "unknown")[:10]
                        + (" (dirty)" if r["provenance"].get("dirty") else "")
                        for r in results.load_records(folder)}
    if len(commits) > 1:
        found.note(f"the records come from {len(commits)} commits of ckd_lib "
                   f"({', '.join(sorted(commits))}): not a mismatch (ckd_lib's own code is not "
                   "part of a run's identity); the report's provenance lists the cells of each")


def verify(profile: str, results_dir: str | Path = "results", log=print,
           device: str = "auto", what: str | None = None) -> int:
    """Audit ``results_dir/profile``; 0 when nothing mismatches, else 1."""
    results_dir = resolve(results_dir)
    root = results_dir / profile
    if not root.is_dir():
        raise InputError(f"no results of profile {profile} in {results_dir} (no folder {root}); "
                         "run the study first, or give --results-dir")
    found = Findings(log)
    Auditor(root, found, device).run()
    check_tables(profile, results_dir, found)
    commits_note(root, found)
    verdict = "OK" if not found.mismatches else "FAILED"
    log(f"verify {what or root}: {verdict}: {found.records} record(s), {found.evaluated} "
        f"model(s) evaluated again, {found.rows} summary row(s); {found.mismatches} "
        f"mismatch(es), {found.notes} note(s)")
    return 1 if found.mismatches else 0


# -- bundles -------------------------------------------------------------------------------------
def bundle_files(profile: str, results_dir: Path) -> dict[str, Path]:
    """Bundle member name -> file: what a published result consists of (see the module
    docstring); checkpoints, locks and cluster logs are not part of it."""
    root = results_dir / profile
    files: dict[str, Path] = {}

    def add(path: Path) -> None:
        if path.is_file() and not path.name.startswith("."):
            files[path.relative_to(results_dir).as_posix()] = path

    for folder in (root / "runs", root / "detection"):
        for record_file in sorted(folder.glob(f"*/{results.RECORD_NAME}")):
            add(record_file)
            try:
                model = results.read_record(record_file).get("model")
            except InputError:
                model = None
            name = model.get("file") if isinstance(model, dict) else None
            # only a file of the run's own folder (a record cannot pull other files in)
            add(record_file.parent / (name if name and Path(str(name)).name == name
                                      else results.MODEL_NAME))
    for sub in ("executed", "artifacts", "data"):
        for path in sorted((root / sub).rglob("*")) if (root / sub).is_dir() else []:
            if not any(part.startswith(".") for part in path.relative_to(root).parts):
                add(path)
    for name in ("report.html", "report.json", "summary.csv"):
        add(root / name)
    add(results_dir / "paper_numbers.csv")
    for folder in (root / "runs", root / "detection"):
        for record in results.load_records(folder, status=None) if folder.is_dir() else []:
            for plugin in (record.get("provenance") or {}).get("plugins") or []:
                path = Path(plugin.get("path") or "")
                if path.suffix == ".py" and path.is_file() and \
                        results.file_sha256(path) == plugin.get("sha256"):
                    files[f"plugins/{plugin['sha256'][:12]}-{path.name}"] = path
    return files


def export(profile: str, results_dir: str | Path, out_file: str | Path, log=print) -> int:
    """Write the bundle of ``results_dir/profile`` to ``out_file`` (a .tar.gz), atomically."""
    results_dir = resolve(results_dir)
    if not (results_dir / profile).is_dir():
        raise InputError(f"no results of profile {profile} in {results_dir}; nothing to export")
    out_file = Path(out_file)
    if not out_file.name.endswith((".tar.gz", ".tgz")):
        raise InputError(f"--export {out_file}: the bundle is a .tar.gz file; give a name "
                         "ending in .tar.gz")
    files = bundle_files(profile, results_dir)
    manifest = {"format": BUNDLE_FORMAT, "profile": profile,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "made_by": results.git_state(),
                "files": {name: {"sha256": results.file_sha256(path),
                                 "bytes": path.stat().st_size}
                          for name, path in sorted(files.items())}}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = (json.dumps(manifest, indent=1) + "\n").encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime, info.mode = len(data), int(datetime.now().timestamp()), 0o644
        tar.addfile(info, io.BytesIO(data))
        for name, path in sorted(files.items()):
            tar.add(path, arcname=name, recursive=False)
    results.atomic_write_bytes(out_file, buffer.getvalue())
    log(f"bundle {out_file}: {len(files)} file(s) of profile {profile}, "
        f"{out_file.stat().st_size:,} bytes; check it anywhere with: python -m ckd_lib.study "
        f"--verify --bundle {out_file}")
    return 0


def _safe_name(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and \
        "\\" not in name


def extract_bundle(bundle: Path, into: Path) -> dict:
    """Check ``bundle`` against its manifest while extracting it into ``into``; the manifest.
    Refused (InputError) before anything is extracted: a member that is not a regular file or
    folder, an absolute name or one with ``..``, a file the manifest does not list, a listed
    file that is missing; after: a file whose sha256 or size is not the manifest's."""
    try:
        tar = tarfile.open(bundle, mode="r:gz")
    except (OSError, tarfile.TarError, EOFError) as error:
        raise InputError(f"bundle {bundle} cannot be read ({error}); a bundle is the .tar.gz "
                         "that --export writes") from None
    with tar:
        try:
            members = tar.getmembers()
            head = next((m for m in members if m.name == MANIFEST), None)
            manifest = json.loads(tar.extractfile(head).read()) if head and head.isfile() \
                else None
        except (OSError, tarfile.TarError, EOFError, json.JSONDecodeError, ValueError) as error:
            raise InputError(f"bundle {bundle} is damaged ({error})") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or \
                manifest.get("format") != BUNDLE_FORMAT or not manifest.get("profile"):
            raise InputError(f"bundle {bundle} has no {MANIFEST} of format {BUNDLE_FORMAT} "
                             "(files, profile): not a bundle of this project")
        listed = manifest["files"]
        for member in members:
            if not _safe_name(member.name):
                raise InputError(f"bundle {bundle}: member {member.name!r} would be written "
                                 "outside the folder it is extracted to: refused")
            if not (member.isfile() or member.isdir()):
                raise InputError(f"bundle {bundle}: member {member.name!r} is a link or a "
                                 "special file: refused")
            if member.isfile() and member.name != MANIFEST and member.name not in listed:
                raise InputError(f"bundle {bundle}: {member.name!r} is not in its manifest: "
                                 "refused")
        names = {m.name for m in members if m.isfile()}
        missing = sorted(set(listed) - names)
        if missing:
            raise InputError(f"bundle {bundle} lacks {len(missing)} file(s) its manifest lists "
                             f"(first: {missing[0]}): refused")
        if any(not _safe_name(name) for name in listed):
            raise InputError(f"bundle {bundle}: its manifest names a path outside the bundle")
        files = [m for m in members if m.isfile() and m.name != MANIFEST]
        try:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, members=files, filter="data")
            else:  # Python < 3.10.12: the members were checked above
                tar.extractall(into, members=files)
        except (OSError, tarfile.TarError, EOFError) as error:
            if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise results.disk_full(into / bundle.name, None) from None
            raise InputError(f"bundle {bundle} is damaged ({error})") from None
    bad = [name for name, entry in listed.items()
           if (into / name).stat().st_size != entry.get("bytes")
           or results.file_sha256(into / name) != entry.get("sha256")]
    if bad:
        raise InputError(f"bundle {bundle}: {len(bad)} file(s) differ from its manifest (first: "
                         f"{bad[0]}): refused")
    return manifest


def verify_bundle(bundle: str | Path, log=print, device: str = "auto") -> int:
    """Extract ``bundle`` into a temporary folder (:func:`extract_bundle`) and audit it."""
    bundle = Path(bundle)
    if not bundle.is_file():
        raise InputError(f"--bundle {bundle}: no such file")
    with tempfile.TemporaryDirectory(prefix="ckd_bundle_") as tmp:
        manifest = extract_bundle(bundle, Path(tmp))
        log(f"bundle {bundle}: {len(manifest['files'])} file(s) match its manifest (profile "
            f"{manifest['profile']}, made at commit "
            f"{(manifest.get('made_by') or {}).get('commit')}, {manifest.get('created')})")
        os.environ.setdefault("MPLBACKEND", "Agg")
        return verify(manifest["profile"], Path(tmp), log, device, what=f"bundle {bundle}")


def command(args) -> int:
    """``--verify``, ``--export FILE`` and ``--verify --bundle FILE`` of the study runner."""
    from ckd_lib.methods import load_plugins
    from ckd_lib.study.params import ParameterError
    from ckd_lib.study.profiles import load_profile

    if args.bundle is not None:
        if not args.verify or args.export:
            raise ParameterError("--bundle FILE goes with --verify alone: python -m "
                                 "ckd_lib.study --verify --bundle FILE.tar.gz")
        load_plugins(args.plugin)  # the bundle's own plugin files are never executed
        return verify_bundle(args.bundle)
    profile = load_profile(args.profile)
    load_plugins(profile.plugins + args.plugin)
    code = verify(profile.name, args.results_dir) if args.verify else 0
    if args.export and code == 0:
        code = export(profile.name, args.results_dir, args.export)
    elif args.export:
        print(f"not exported: {args.export} would hold results that do not verify")
    return code
