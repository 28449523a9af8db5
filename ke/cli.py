"""`ke` command line: each subcommand wraps one function of the Python API."""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys

from .errors import UserError

# Modules that register further subcommands through an `add_cli(subparsers)` function.
COMMAND_MODULES = ["ke.pretrain", "ke.continual", "ke.resuscitate", "ke.book"]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_config_options(parser, config_class, special: dict | None = None, skip: tuple = ()) -> None:
    """One --flag per field of a config dataclass (booleans as --x/--no-x, defaults from the class);
    `special` maps a field name to its own add_argument keywords."""
    special = special or {}
    for field in dataclasses.fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        if field.name in skip:
            continue
        if field.name in special:
            parser.add_argument(flag, **special[field.name])
        elif isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
        else:
            parser.add_argument(flag, type=type(field.default), default=field.default, help=f"default: {field.default}")


def config_from_args(config_class, args, skip: tuple = ()):
    """The config dataclass built from the options that add_config_options registered."""
    return config_class(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)
                           if f.name not in skip})


def add_entropy(subparsers):
    p = subparsers.add_parser("entropy", help="knowledge (and attention / next-token) entropy of one checkpoint")
    p.add_argument("model", help="local checkpoint folder or hub id, e.g. allenai/OLMo-1B-hf")
    p.add_argument("--revision", help="hub branch, tag or commit, e.g. step738020-tokens3094B")
    p.add_argument("--data", required=True, help=".txt (a document per line), .jsonl (text field), a saved data "
                                                 "set folder, or a hub data set name[:config][@split]")
    p.add_argument("--max-docs", type=positive_int)
    p.add_argument("--seq-len", type=positive_int, default=1024)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--count-padding", action="store_true",
                   help="official-code behaviour: pad to --seq-len, no attention mask, average over all positions")
    p.add_argument("--attention", action="store_true", help="also attention entropy (Eq. 3; eager attention)")
    p.add_argument("--ntp", action="store_true", help="also next-token-prediction entropy (App. A.4)")
    p.add_argument("--relu", action="store_true", help="also the ReLU-variant knowledge entropy (Fig. 9)")
    p.add_argument("--out", required=True, help="folder for entropy.json and coefficients.safetensors")
    p.set_defaults(func=run_entropy_command)


def run_entropy_command(args):
    from .entropy import EntropySettings, run_entropy
    settings = EntropySettings(seq_len=args.seq_len, batch_size=args.batch_size, count_padding=args.count_padding,
                               attention=args.attention, ntp=args.ntp, relu=args.relu)
    record = run_entropy(args.model, args.data, args.out, revision=args.revision, max_docs=args.max_docs,
                         settings=settings, dtype=args.dtype, device=args.device)
    shown = {k: record[k] for k in ("knowledge_entropy", "attention_entropy", "ntp_entropy", "num_docs",
                                    "num_tokens") if k in record}
    print(json.dumps(shown))
    print(f"wrote {args.out}/entropy.json and {args.out}/coefficients.safetensors")


def add_checkpoints(subparsers):
    p = subparsers.add_parser("checkpoints", help="list the checkpoints of a local run or a hub repo")
    p.add_argument("model", help="run folder of stepN/ checkpoints, or a hub id such as allenai/OLMo-1B-hf")
    p.set_defaults(func=run_checkpoints_command)


def run_checkpoints_command(args):
    from .models import list_checkpoints
    for checkpoint in list_checkpoints(args.model):
        commit = f"  {checkpoint.commit}" if checkpoint.commit else ""
        print(f"{checkpoint.step:>9}  {checkpoint.name}{commit}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ke", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_entropy(subparsers)
    add_checkpoints(subparsers)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue
        module.add_cli(subparsers)
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
    except KeyboardInterrupt:
        print(f"ke {args.command}: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
