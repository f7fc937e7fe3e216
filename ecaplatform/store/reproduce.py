"""How to reproduce one claim, as text a reader can copy: the verification rule in one sentence, the commands that
verify the released checkpoint (data preparation, the verify job) and those that train from scratch, each with an
estimated runtime and how it was estimated. One function, `reproduce`, for the leaderboard (and `eca claims`).

The commands name the job files in jobs/ (and its task folders: jobs/coco/) that would produce a qualifying result:
a job whose model is the claim's, whose data module is the claim's data set, `command: validate` to verify and fit to
train. Torch-free: the jobs' YAML is read as data (their `extends:` chain merged), never parsed by the LightningCLI.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from ecaplatform.paper import PAPER, detection_result, paper_result
from ecaplatform.store.board import dataset_name, decimals, metric_name
from ecaplatform.store.pipelines import REFERENCE_PIPELINE
from ecaplatform.store.schema import Claim
from ecaplatform.store.verification import run_dataset

JOBS_DIR = Path(__file__).resolve().parents[2] / "jobs"  # the repository's (the package is installed editable)
PAPER_GPUS = 4  # the paper's throughputs (paper.py train_fps / infer_fps) are on 4x RTX 2080Ti
TRAIN_IMAGES = {"imagenet": 1_281_167}  # images per training epoch (ILSVRC2012 train)
# How each data set gets into the layout its data module reads: the command (`eca data NAME`), where its archives
# come from, and which archives each of val only / both splits needs; {root} is the job's data root.
DATA_PREP = {
    "imagenet": ("imagenet", "the ILSVRC2012 archives from image-net.org", {
        "val": "ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz",
        "both": "ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz"}),
    "coco2017": ("coco", "the COCO 2017 archives from cocodataset.org", {
        "val": "val2017.zip, annotations_trainval2017.zip",
        "both": "train2017.zip, val2017.zip, annotations_trainval2017.zip"}),
}  # fmt: skip


@dataclass(frozen=True)
class JobFile:
    path: str  # as a command names it: jobs/verify_eca_resnet50.yaml
    command: str  # validate | fit | test
    model: str | None
    dataset: str | None
    claim: str | None
    gpus: int
    time: str | None  # the SLURM time limit it asks for
    epochs: int | None
    data_root: str | None
    checkpoint: str | None
    backbone_checkpoint: str | None = None  # a detector's ImageNet backbone weights, which training starts from


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value  # fmt: skip
    return merged


def _document(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The job file with its `extends:` chain merged under it (a missing or circular parent: that part skipped)."""
    if path in seen or not path.is_file():
        return {}
    document = yaml.safe_load(path.read_text()) or {}
    if not isinstance(document, dict):
        return {}
    parent = document.pop("extends", None)
    return _merge(_document(path.parent / parent, (*seen, path)), document) if isinstance(parent, str) else document


@functools.cache
def job_files(jobs_dir: Path = JOBS_DIR) -> tuple[JobFile, ...]:
    """Every job in `jobs_dir` and its task folders (jobs/coco/; the recipes they extend are not jobs), sorted."""
    jobs = []
    for path in sorted(p for p in jobs_dir.rglob("*.yaml") if "recipes" not in p.relative_to(jobs_dir).parts):
        try:
            config = _document(path)
        except (OSError, yaml.YAMLError):
            continue  # a broken job file is `eca submit`'s to report
        job, model = config.get("job") or {}, config.get("model") or {}
        resources = job.get("resources") or {}
        data = (config.get("data") or {}).get("init_args") or {}
        jobs.append(JobFile(
            path=f"{jobs_dir.name}/{path.relative_to(jobs_dir).as_posix()}", command=str(job.get("command") or "fit"),
            model=model.get("model_name"), dataset=run_dataset(None, config), claim=job.get("claim"),
            gpus=int(resources.get("nodes") or 1) * int(resources.get("gpus_per_node") or 0),
            time=resources.get("time"), epochs=(config.get("trainer") or {}).get("max_epochs"),
            data_root=data.get("root"), checkpoint=model.get("checkpoint"),
            backbone_checkpoint=model.get("backbone_checkpoint"),
        ))  # fmt: skip
    return tuple(jobs)


def _job_for(claim: Claim, command: str, jobs: tuple[JobFile, ...]) -> JobFile | None:
    """The job that runs `command` for the claim's model on its data set (its data module's name starts the data
    set's: CocoDataModule, coco2017); one naming the claim first."""
    fits = [j for j in jobs if j.command == command and j.model == claim.model and j.dataset
            and claim.dataset.startswith(j.dataset)]  # fmt: skip
    return min(fits, key=lambda j: j.claim != claim.id, default=None)


def _about(seconds: float) -> str:
    if seconds < 90 * 60:
        return f"about {max(round(seconds / 60), 1)} min"
    return f"about {round(seconds / 3600)} h" if seconds < 72 * 3600 else f"about {seconds / 86400:.0f} days"


def _estimate(images: int, fps: int | None, gpus: int, what: str, limit: str | None) -> str:
    """Runtime at the paper's throughput, scaled to the job's GPUs; says how it was derived."""
    allowed = f" The job asks SLURM for {limit}." if limit else ""
    if not fps or not gpus or not images:
        why = f"the paper gives no {what} throughput for this model" if not fps else "no image count to scale"
        return f"Expected runtime: no estimate ({why}).{allowed}"
    seconds = images / (fps * gpus / PAPER_GPUS)
    return (f"Expected runtime: {_about(seconds)} on the job's {gpus} GPU{'s' if gpus > 1 else ''}, an estimate: "
            f"{images:,} images at the paper's {what} throughput ({fps:,} images/s on {PAPER_GPUS}x RTX 2080Ti) "
            f"scaled to {gpus} GPU{'s' if gpus > 1 else ''}; newer GPUs are faster, slow JPEG decoding or storage "
            f"slower.{allowed}")  # fmt: skip


@dataclass(frozen=True)
class Reproduction:
    """How to reproduce one claim; `verify_commands`/`train_commands` are shell text, None where no job exists."""

    claim_id: str
    rule: str
    verify_commands: str | None
    verify_note: str
    train_commands: str | None
    train_note: str

    def record(self) -> dict[str, Any]:
        return asdict(self)


def rule_sentence(claim: Claim) -> str:
    """The verification rule for this claim, in one sentence."""
    floor, digits = claim.claimed - claim.tolerance, decimals(claim.metric)
    if claim.dataset.startswith("coco"):  # AP: the paper prints one decimal
        return (f"Verified by a run that succeeded and scored {metric_name(claim.metric)} with COCOeval (pycocotools' "
                f"semantics) over all {claim.expected_samples:,} images of {dataset_name(claim.dataset)} "
                f"{claim.split} (val2017), each scored once, of at least {floor:.{digits}f} (the paper's "
                f"{claim.claimed:.{digits}f} less the {claim.tolerance:.{digits}f} tolerance); anything else is shown, "
                "never verifies.")  # fmt: skip
    return (f"Verified by a run that succeeded and evaluated all {claim.expected_samples:,} images of "
            f"{dataset_name(claim.dataset)} {claim.split}, each counted once, with the reference {REFERENCE_PIPELINE} "
            f"(PIL) pipeline, scoring {metric_name(claim.metric)} of at least {floor:.2f} (the paper's "
            f"{claim.claimed:.2f} less the {claim.tolerance:.2f} tolerance); anything else is shown, never verifies.")


def _prep(claim: Claim, job: JobFile, split: str) -> str | None:
    if claim.dataset not in DATA_PREP:
        return None
    command, source, archives = DATA_PREP[claim.dataset]
    return (f"# {source} in /downloads ({archives[split]}); see `eca data {command} --help`\n"
            f"eca data {command} --archives /downloads --out {job.data_root or f'/data/{claim.dataset}'}"
            f"{' --split val' if split == 'val' else ''}")  # fmt: skip


def released_file(model: str) -> str | None:
    """The file name of the authors' released weights of `model`: an ImageNet .pth.tar or a COCO detector's .pth."""
    paper, detector = paper_result(model), detection_result(model)
    if paper is not None:
        return paper.released_checkpoint
    return f"{detector.released_checkpoint}.pth" if detector and detector.released_checkpoint else None


def reproduce(claim: Claim, jobs_dir: Path = JOBS_DIR) -> Reproduction:
    """How to reproduce `claim`: verify the released checkpoint, or train from scratch, with the jobs in jobs_dir."""
    jobs, paper = job_files(jobs_dir), paper_result(claim.model)
    verify, train = _job_for(claim, "validate", jobs), _job_for(claim, "fit", jobs)
    released = released_file(claim.model)

    verify_commands, verify_note = None, f"The authors released no checkpoint of {claim.model}: training verifies it."
    if verify is not None and released:
        where = verify.checkpoint or f"checkpoints/{released}"
        lines = [_prep(claim, verify, "val"),
                 f"# download the released weights, {released} (linked from the README of {PAPER.code_url}), to "
                 f"{where}\nmkdir -p {Path(where).parent}",
                 f"# evaluate and record the run (SLURM; add --launcher local to run it on this machine)\n"
                 f"eca submit {verify.path}"]  # fmt: skip
        verify_commands = "\n".join(line for line in lines if line)
        verify_note = _estimate(claim.expected_samples, paper and paper.infer_fps, verify.gpus, "inference",
                                verify.time)  # fmt: skip
    elif released:
        verify_note = f"No job in {jobs_dir.name}/ validates {claim.model} on {claim.dataset} yet."

    train_commands, train_note = None, f"No job in {jobs_dir.name}/ trains {claim.model} on {claim.dataset} yet."
    if train is not None:
        backbone = train.backbone_checkpoint and (
            f"# the backbone's ImageNet weights at {train.backbone_checkpoint} (see the job file: a released "
            f".pth.tar, a torchvision state_dict, or one of our runs with -- --model.backbone_run RUN_ID)")
        lines = [_prep(claim, train, "both"), backbone, f"eca submit {train.path}",
                 f"# resume after a stop: eca submit {train.path} -- --ckpt_path last --from_run RUN_ID"]
        train_commands = "\n".join(line for line in lines if line)
        images = TRAIN_IMAGES.get(claim.dataset)
        train_note = _estimate((train.epochs or 0) * images if images else 0, paper and paper.train_fps, train.gpus,
                               "training", train.time)  # fmt: skip
        if train.epochs:
            train_note = f"{train.epochs} epochs. {train_note}"
    return Reproduction(claim.id, rule_sentence(claim), verify_commands, verify_note, train_commands, train_note)
