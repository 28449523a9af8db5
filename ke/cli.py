"""`ke` command line: every subcommand wraps one function of the Python API. The only module that parses
arguments; the options of `ke pretrain` and `ke continual` are built from their configuration dataclasses."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import types
import typing
from contextlib import contextmanager
from pathlib import Path

from . import __version__
from .errors import Interrupted, UserError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def int_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 0,100,200; got {text!r}") from None


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default (none for flags that are off and options without a default)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def command(subparsers, name: str, summary: str, description: str):
    """A subcommand: `summary` in `ke --help`, `description` (which begins with it) in `ke NAME --help`."""
    return subparsers.add_parser(name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {description}",
                                 formatter_class=HelpFormatter)


def choices() -> dict[str, tuple]:
    """Allowed values of the config fields that take one of a few words, from the modules that check them."""
    from .metrics import NORMALISATIONS
    from .miniature.pretrain import ACTIVATIONS, FAMILIES
    from .train import MIXED_PRECISION, SHAPES
    return {"lr_shape": SHAPES, "mixed_precision": MIXED_PRECISION, "probe_normalisation": NORMALISATIONS,
            "family": FAMILIES, "activation": ACTIVATIONS}


def field_comments(config_class) -> dict[str, str]:
    """The comment after each field of a config dataclass (its documentation), by field name."""
    found = re.findall(r"^\s+(\w+):[^#\n]*#\s*(.+)$", inspect.getsource(config_class), re.MULTILINE)
    return {name: comment.strip() for name, comment in found}


def add_config_options(parser, config_class, skip: tuple = ()) -> None:
    """One --flag per field of a config dataclass: booleans as --x/--no-x, lists of integers comma-separated,
    defaults, allowed values and help from the class (its field comments are the documentation)."""
    hints = typing.get_type_hints(config_class)
    comments, allowed = field_comments(config_class), choices()
    for field in dataclasses.fields(config_class):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        hint = hints[field.name]
        options = [a for a in typing.get_args(hint) if a is not type(None)] \
            if typing.get_origin(hint) in (typing.Union, types.UnionType) else [hint]
        kind = options[0]
        default = field.default if field.default is not dataclasses.MISSING else None
        text = comments.get(field.name, "").replace("%", "%%")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text or " ")
        elif typing.get_origin(kind) is list:
            parser.add_argument(flag, type=int_list, default=default,
                                help="comma-separated" + (f"; {text}" if text else ""))
        else:
            parser.add_argument(flag, type=kind, default=default, choices=allowed.get(field.name),
                                help=text or kind.__name__)


def config_from_args(config_class, args, skip: tuple = ()):
    return config_class(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)
                           if f.name not in skip})


@contextmanager
def cached_or_wrote(last_file: Path, what):
    """After the block, print "wrote WHAT", or "cached WHAT" when `last_file` (the artifact's file written last)
    is the same file as before it."""
    from .storage import stamp
    before = stamp(last_file)
    yield
    print(f"{'cached' if stamp(last_file) == before else 'wrote'} {what}")


# ----------------------------------------------------------------------------------------------- measuring

def add_entropy(subparsers):
    from .models import DTYPES
    p = command(subparsers, "entropy", "knowledge (and attention / next-token) entropy of checkpoints",
                "Measure one checkpoint, or several (each cached in its own folder under --out); writes "
                "entropy.json (entropies in nats) and coefficients.safetensors (C-bar, layers x FFN width). Under "
                "`accelerate launch` the documents of one checkpoint, or the checkpoints themselves, are split "
                "across the processes.")
    p.add_argument("model", help="local checkpoint folder, run folder of stepN/ checkpoints, or hub id")
    p.add_argument("--revision", action="append", help="hub branch, tag or commit, e.g. step738020-tokens3094B; "
                                                        "repeat it to measure several checkpoints in one call")
    p.add_argument("--all-checkpoints", action="store_true", help="every checkpoint of the run folder or hub repo")
    p.add_argument("--data", required=True, help=".txt (a document per line), .jsonl (a text field, or input_ids "
                                                 "measured as given without re-tokenizing), a saved data set folder, or "
                                                 "a hub data set name[:config][@split]")
    p.add_argument("--max-docs", type=positive_int, help="measure only the first N documents (default: all)")
    p.add_argument("--seq-len", type=positive_int, default=1024,
                   help="tokens per document (longer ones are cut); at most the model's context")
    p.add_argument("--batch-size", type=positive_int, default=8, help="documents per forward pass")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, or auto (each launched process its own GPU)")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES), help="weights and activations")
    p.add_argument("--count-padding", action="store_true",
                   help="official-code behaviour: pad to --seq-len, no attention mask, average over all positions")
    p.add_argument("--attention", action="store_true", help="also attention entropy (Eq. 3; eager attention)")
    p.add_argument("--ntp", action="store_true", help="also next-token-prediction entropy (App. A.4)")
    p.add_argument("--relu", action="store_true", help="also the ReLU-variant knowledge entropy (Fig. 9)")
    p.add_argument("--skip-first", action="store_true", help="leave out the first position of every document")
    p.add_argument("--per-document", action="store_true", help="also save each document's mean |coefficients| "
                                                                "(per_document.safetensors, for bootstrap intervals)")
    p.add_argument("--split", default="auto", choices=["auto", "checkpoints", "documents"],
                   help="with several processes and checkpoints: what to divide between the processes")
    p.add_argument("--out", required=True, help="folder for entropy.json and coefficients.safetensors (several "
                                                "checkpoints: one subfolder each)")
    p.set_defaults(func=run_entropy_command)


def run_entropy_command(args):
    from .entropy import COEFFICIENTS_FILE, RESULT_FILE, EntropySettings, run_entropy, run_entropy_many
    from .storage import stamp
    settings = EntropySettings(seq_len=args.seq_len, batch_size=args.batch_size, count_padding=args.count_padding,
                               attention=args.attention, ntp=args.ntp, relu=args.relu, skip_first=args.skip_first,
                               per_document=args.per_document)
    common = dict(max_docs=args.max_docs, settings=settings, dtype=args.dtype, device=args.device)
    if args.all_checkpoints or len(args.revision or []) > 1:
        from .models import check_context, list_checkpoints
        checkpoints = list_checkpoints(args.model) if args.all_checkpoints else args.revision
        for first in checkpoints[:1]:  # the checkpoints of one run share its context
            if hasattr(first, "path"):
                check_context(first.path, first.revision, args.seq_len)
            elif (Path(args.model) / first).is_dir():   # a local run folder: --revision names a step folder
                check_context(str(Path(args.model) / first), None, args.seq_len)
            else:
                check_context(args.model, first, args.seq_len)
        before = {path: stamp(path) for path in Path(args.out).glob(f"*/{RESULT_FILE}")}
        records = run_entropy_many(args.model, checkpoints, args.data, args.out, split=args.split, **common)
        for record in records:
            print(json.dumps({k: record[k] for k in ("knowledge_entropy", "num_docs", "num_tokens")}))
        written = sum(stamp(path) != before.get(path) for path in Path(args.out).glob(f"*/{RESULT_FILE}"))
        cached = f" ({len(records) - written} cached)" if written < len(records) else ""
        print(f"wrote {written} checkpoint folders under {args.out}{cached}" if written else
              f"cached {len(records)} checkpoint folders under {args.out}")
        return
    revision = args.revision[0] if args.revision else None
    with cached_or_wrote(Path(args.out) / RESULT_FILE, f"{args.out}/{RESULT_FILE} and {args.out}/{COEFFICIENTS_FILE}"):
        record = run_entropy(args.model, args.data, args.out, revision=revision, **common)
        print(json.dumps({k: record[k] for k in ("knowledge_entropy", "attention_entropy", "ntp_entropy", "num_docs",
                                                 "num_tokens") if k in record}))


def add_checkpoints(subparsers):
    p = command(subparsers, "checkpoints", "list the checkpoints of a local run or a hub repo",
                "One line per checkpoint, in training order: step, name (folder or hub branch), OLMo-2 stage and "
                "ingredient, hub commit. Offline (HF_HUB_OFFLINE=1 or no network) a hub repo lists the branches the "
                "local Hugging Face cache holds.")
    p.add_argument("model", help="run folder of stepN/ checkpoints, or a hub id such as allenai/OLMo-1B-hf")
    p.add_argument("--stage", type=int, help="OLMo-2 repos: only this pretraining stage (1 or 2)")
    p.set_defaults(func=run_checkpoints_command)


def run_checkpoints_command(args):
    from .models import list_checkpoints
    if (Path(args.model).expanduser() / "config.json").exists():
        raise UserError(f"{args.model} is one checkpoint, not a run of stepN/ checkpoint folders; pass the run "
                        f"folder that holds it, or measure it directly with `ke entropy {args.model}`.")
    for checkpoint in list_checkpoints(args.model, stage=args.stage):
        stage = f"  stage {checkpoint.stage}" + (f" {checkpoint.ingredient}" if checkpoint.ingredient else "") \
            if checkpoint.stage else ""
        commit = f"  {checkpoint.commit}" if checkpoint.commit else ""
        print(f"{checkpoint.step:>9}  {checkpoint.name}{stage}{commit}")


def add_first_batch(subparsers):
    from .first_batch import OLMO_1B_DATA_ORDER, OLMO_BATCH, OLMO_TOKENIZER, PYTHIA_BATCH, PYTHIA_TOKENIZER
    p = command(subparsers, "first-batch", "export the first instances of a model's training order (.jsonl)",
                "The paper's entropy sample: the first batch of the training data order, as text and token ids "
                "with checksums.")
    kinds = p.add_subparsers(dest="kind", required=True)
    olmo = kinds.add_parser("olmo", help="OLMo (v1): global_indices.npy and the training config's memmap files",
                            description="OLMo (v1): the instances global_indices.npy orders first, read from the "
                                        "training config's memmap files.", formatter_class=HelpFormatter)
    olmo.add_argument("--config", help="OLMo training config YAML (path or URL), e.g. configs/official/OLMo-1B.yaml")
    olmo.add_argument("--data-paths", nargs="+", help="the memmap .npy files, in the config's order (instead of "
                                                      "--config)")
    olmo.add_argument("--data-order", default=OLMO_1B_DATA_ORDER, help="global_indices.npy (path or URL)")
    olmo.add_argument("--seq-len", type=positive_int, help="instance length (default: the config's, else 2048)")
    olmo.add_argument("--dtype", help="token dtype of the memmaps (default: the config's, else uint16)")
    olmo.add_argument("--tokenizer", default=OLMO_TOKENIZER, help="decodes the token ids to text")
    olmo.add_argument("--num", type=positive_int, default=OLMO_BATCH, help="instances to export (OLMo-1B's batch)")
    pythia = kinds.add_parser("pythia", help="Pythia: the pre-shuffled, pre-tokenized Pile (.idx + .bin)",
                              description="Pythia: the first instances of the pre-shuffled, pre-tokenized Pile "
                                          "(Megatron .idx + .bin).", formatter_class=HelpFormatter)
    pythia.add_argument("--index", required=True, help="the Megatron .idx file")
    pythia.add_argument("--data", required=True, nargs="+", help="the .bin file, or its shards in order")
    pythia.add_argument("--tokenizer", default=PYTHIA_TOKENIZER, help="decodes the token ids to text")
    pythia.add_argument("--num", type=positive_int, default=PYTHIA_BATCH, help="instances to export (Pythia's batch)")
    for sub in (olmo, pythia):
        sub.add_argument("--start", type=int, default=0, help="first training-order position")
        sub.add_argument("--out", required=True, help="the .jsonl to write (a .meta.json goes beside it)")
        sub.add_argument("--skip-special-tokens", action="store_true", help="leave special tokens out of the text")
        sub.add_argument("--workers", type=positive_int, default=8, help="parallel reads of remote files")
        sub.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_first_batch_command)


def run_first_batch_command(args):
    from . import first_batch as fb
    common = dict(n=args.num, start=args.start, skip_special_tokens=args.skip_special_tokens, workers=args.workers,
                  progress=not args.no_progress)
    if args.kind == "olmo":
        if bool(args.config) == bool(args.data_paths):
            raise UserError("give either --config (an OLMo training YAML) or --data-paths (its memmap files).")
        data = fb.olmo_data_from_config(args.config, args.data_order) if args.config else \
            fb.OlmoData(args.data_order, list(args.data_paths))
        if args.seq_len or args.dtype:
            data = dataclasses.replace(data, **{k: v for k, v in (("seq_len", args.seq_len), ("dtype", args.dtype))
                                                if v})
        record = fb.export_olmo_first_batch(data, args.tokenizer, args.out, **common)
    else:
        record = fb.export_pythia_first_batch(fb.PythiaData(args.index, list(args.data)), args.tokenizer, args.out,
                                              **common)
    print(f"wrote {record['n']} instances to {args.out} (checksum {record['checksum']})")


# ----------------------------------------------------------------------------------------------- training

def add_pretrain(subparsers):
    from .miniature.pretrain import FAMILIES, PretrainConfig
    p = command(subparsers, "pretrain", "train a miniature model from scratch (resumable)",
                f"An OLMo or GPT-NeoX model ({', '.join(FAMILIES)}); options mirror "
                "ke.miniature.pretrain.PretrainConfig. Run the same command again to resume.")
    p.add_argument("--corpus", required=True, help="folder of a datasets.Dataset with a 'text' column")
    p.add_argument("--tokenizer", required=True,
                   help="tokenizer folder; trained on the corpus (--vocab-size) if it holds none")
    p.add_argument("--out", required=True, help="run folder: checkpoints step{N}/, train_log.jsonl")
    p.add_argument("--vocab-size", type=int, default=4096, help="only used when training the tokenizer")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_config_options(p, PretrainConfig)
    p.set_defaults(func=run_pretrain_command)


def run_pretrain_command(args):
    from .data import load_corpus
    from .miniature.pretrain import PretrainConfig, pretrain, train_tokenizer, validate
    cfg = config_from_args(PretrainConfig, args)
    validate(cfg)
    if not (Path(args.tokenizer) / "tokenizer_config.json").exists():
        corpus = load_corpus(args.corpus)
        train_tokenizer((batch["text"] for batch in corpus.iter(batch_size=1000)), args.vocab_size, args.tokenizer)
    for path in pretrain(cfg, args.corpus, args.tokenizer, args.out, progress=not args.no_progress):
        print(path)


def add_continual(subparsers):
    from .continual import ContinualConfig
    p = command(subparsers, "continual", "continual knowledge learning from a checkpoint (A and F)",
                "Fictional knowledge injected into a corpus (paper Section 4); options mirror "
                "ke.continual.ContinualConfig. Data parallel and sharded: accelerate launch [--config_file "
                "ke/configs/fsdp.yaml] -m ke.cli continual ...")
    p.add_argument("model", help="checkpoint folder or hub id, e.g. allenai/OLMo-1B-hf")
    p.add_argument("--revision", help="hub branch, tag or commit, e.g. step738020-tokens3094B")
    p.add_argument("--corpus", required=True, help="folder of a datasets.Dataset with a 'text' column")
    p.add_argument("--knowledge", required=True,
                   help="folder (or http(s) URL prefix) of *_paraphrase<N>.json and *_once<N>.json")
    p.add_argument("--tasks", help="comma-separated lm-eval task names for P and F, or 'paper' for the paper's six "
                                   "(SciQ, Winogrande, PIQA, OBQA, HellaSwag, ARC-Easy); without it P and F are not "
                                   "measured")
    p.add_argument("--task-folder", help="folder of local lm-eval task YAMLs (lm-eval's include_path)")
    p.add_argument("--task-metrics", help="comma-separated, one per task: acc or acc_norm (= OLMo's len_norm)")
    p.add_argument("--task-limit", type=positive_int, help="score only the first N documents of each task")
    p.add_argument("--out", required=True, help="folder for result.json and train_log.jsonl")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_config_options(p, ContinualConfig, skip=("betas",))
    p.set_defaults(func=run_continual_command)


def run_continual_command(args):
    from .continual import RESULT_FILE, ContinualConfig, continual_learning, validate
    from .downstream import PAPER_TASKS, TaskSet
    from .knowledge import load_fictional_knowledge
    cfg = config_from_args(ContinualConfig, args, skip=("betas",))
    validate(cfg)
    knowledge = load_fictional_knowledge(args.knowledge)
    tasks = None
    if args.tasks:
        names = PAPER_TASKS if args.tasks == "paper" else tuple(n.strip() for n in args.tasks.split(",") if n.strip())
        metrics = tuple(m.strip() for m in args.task_metrics.split(",")) if args.task_metrics else None
        tasks = TaskSet(names=names, metrics=metrics, include_path=args.task_folder, limit=args.task_limit)
    with cached_or_wrote(Path(args.out) / RESULT_FILE, Path(args.out) / RESULT_FILE):
        result = continual_learning(args.model, args.corpus, knowledge, tasks, cfg, args.out, revision=args.revision,
                                    progress=not args.no_progress)
        print(json.dumps({k: result[k] for k in ("K_PT", "K_CL", "A", "P_PT", "P_CL", "F")}))


def add_resuscitate(subparsers):
    from .models import DTYPES
    p = command(subparsers, "resuscitate", "Algorithm 1: raise inactive memory coefficients, save a checkpoint",
                "Per layer, the FFN slots whose mean |coefficient| C-bar (from `ke entropy` on the same "
                "checkpoint) is at most the --ratio quantile get their up-projection row scaled by "
                "--factor x mean(C-bar) / C-bar_i (paper Section 5); the result is a checkpoint folder for "
                "`ke continual`.")
    p.add_argument("model", help="local checkpoint folder or hub id, e.g. allenai/OLMo-1B-hf")
    p.add_argument("--revision", help="hub branch, tag or commit, e.g. step738020-tokens3094B")
    p.add_argument("--coefficients", required=True,
                   help="coefficients.safetensors written by `ke entropy` on this checkpoint (or its folder)")
    p.add_argument("--ratio", type=float, required=True, help="p as a fraction: 0.5 = the lowest 50%% of slots")
    p.add_argument("--factor", type=float, required=True, help="q, the amplifying factor, e.g. 2")
    p.add_argument("--out", required=True, help="folder for the resuscitated checkpoint")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES), help="weights of the saved checkpoint")
    p.set_defaults(func=run_resuscitate_command)


def run_resuscitate_command(args):
    from .resuscitate import RECIPE_FILE, resuscitate_checkpoint
    out = Path(args.out).expanduser()
    with cached_or_wrote(out / RECIPE_FILE, out):
        resuscitate_checkpoint(args.model, args.coefficients, args.ratio, args.factor, out, revision=args.revision,
                               dtype=args.dtype)
        recipe = json.loads((out / RECIPE_FILE).read_text())["recipe"]
        print(json.dumps({k: recipe[k] for k in ("ratio", "factor", "selected", "zero_skipped")}))


# ----------------------------------------------------------------------------------------------- the book

def add_book(subparsers):
    p = command(subparsers, "book", "compute everything a preset plans and build the HTML book",
                "Runs the work `ke plan` lists (each item cached under the preset's run_dir, so an interrupted build "
                "resumes), executes the notebooks of book/ and builds the HTML with Jupyter Book.")
    p.add_argument("--preset", default="default", help="name of parameters/<preset>.yaml, or a YAML path")
    p.add_argument("--warnings-as-errors", action="store_true", help="fail the build on any Sphinx warning")
    p.add_argument("--force", action="store_true", help="re-execute notebooks even when their copy is current")
    p.add_argument("--jobs", type=positive_int, default=2, help="processes working side by side")
    p.set_defaults(func=run_book_command)


def run_book_command(args):
    from .book.build import build_book
    build_book(args.preset, warnings_as_errors=args.warnings_as_errors, force=args.force, jobs=args.jobs)


def add_plan(subparsers):
    p = command(subparsers, "plan", "print everything the book would compute for a preset (no network, no GPU)",
                "The preset, checked and resolved into work items (as YAML): models and their analysed steps, "
                "pretraining runs with their derived numbers (warmup steps, tokens, tokens per non-embedding "
                "parameter, weight-decay e-folds S), measurements, continual runs (warmup and injection steps), "
                "resuscitated checkpoints and the regime study; the last line counts the work items.")
    p.add_argument("--preset", default="default", help="name of parameters/<preset>.yaml, or a YAML path")
    p.set_defaults(func=run_plan_command)


def run_plan_command(args):
    from .book.describe import describe
    from .book.plan import make_plan
    from .book.presets import load_preset
    print(describe(make_plan(load_preset(args.preset))))


def add_pilots(subparsers):
    p = command(subparsers, "pilots", "train and judge pilot families of the model system (book/pilots.json)",
                "Trains and measures pilot families (parameters/pilots/p*.yaml: a calibration world and calibration "
                "seeds), judges them by the validity criteria of ke.book.validity and writes their table, which the "
                "book page 'How the model system was chosen' shows.")
    p.add_argument("families", nargs="+", help="pilot family presets (YAML paths)")
    p.add_argument("--out", default="book/pilots.json", help="the table (rows of families not given are kept)")
    p.add_argument("--jobs", type=positive_int, default=2, help="processes working side by side")
    p.set_defaults(func=run_pilots_command)


def run_pilots_command(args):
    from .book import chapter_model_system
    from .book.pilots import run_pilots
    table = run_pilots(args.families, Path(args.out), args.jobs)
    for key, row in table["families"].items():
        met = "".join(chapter_model_system.met(row)) or "none"
        print(f"{key}: world {100 * row['world_accuracy']:.1f}%, A_para by start "
              f"{', '.join(f'{v:+.1f}' for v in row['acquisition_para_by_start'].values())}, entropy change "
              f"{', '.join(f'{v:+.3f}' for v in row['entropy_change_from_20pct'].values())} nats; meets: {met}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ke", description="Knowledge entropy of language models (Kim et al., ICLR "
                                     "2025): measure checkpoints, train miniatures, continual learning, "
                                     "resuscitation, and the book that reproduces the paper. `ke COMMAND --help` "
                                     "describes each command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_entropy, add_checkpoints, add_first_batch, add_pretrain, add_continual, add_resuscitate, add_book,
                add_plan, add_pilots):
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .models import quiet_transformers
    quiet_transformers()
    try:
        args.func(args)
    except UserError as error:
        print(f"ke {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as interrupted:
        print(f"ke {args.command}: {interrupted}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"ke {args.command}: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
