"""Measuring the book's entropy sample in batches of similar length (what ke.entropy.measure does) against the
same documents batched in their own order (what it did before), on the default 1B role's shape.

    .venv/bin/python benchmarks/bench_entropy_order.py [--repeats 3] [--docs 2048]

The sample is the default world's first-batch documents (cut to the entropy settings' 128 positions; the world
is generated if missing, ~5 s), the model a randomly initialised 1B role (ke.miniature.pretrain's
build_model, the default preset's configuration). "document order" calls measure() once per batch of consecutive
documents, so each call sorts only within its one batch: exactly the old batching. Both are checked to give the same
per-document mean |C| before their times are compared. One thread, as a `ke book` worker.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from measure import interleaved_times  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--docs", type=int, default=2048)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from transformers import AutoTokenizer

    from ke.book.execute import execute
    from ke.book.plan import make_plan
    from ke.book.presets import load_preset
    from ke.entropy import EntropySettings, load_measurement_data, measure, tokenize_documents
    from ke.miniature.pretrain import build_model

    preset = load_preset("default")
    plan = make_plan(preset)
    execute(plan.world)
    run = next(r for r in plan.pretraining if r.model == "olmo")
    model = build_model(run.config, AutoTokenizer.from_pretrained(run.tokenizer)).eval()
    tokenizer = AutoTokenizer.from_pretrained(run.tokenizer)
    documents = load_measurement_data(preset.resolve(preset.entropy.corpora["dolma"]), args.docs)
    settings = EntropySettings(seq_len=preset.entropy.seq_len, batch_size=preset.entropy.batch_size, per_document=True)
    size = settings.batch_size

    def by_length():
        return measure(model, tokenizer, documents, settings, progress=False).per_document

    def document_order():
        return torch.cat([measure(model, tokenizer, documents[i:i + size], settings, progress=False).per_document
                          for i in range(0, len(documents), size)])

    torch.testing.assert_close(by_length(), document_order(), rtol=1e-5, atol=1e-7)
    lengths = [len(ids) for ids in tokenize_documents(tokenizer, documents, settings.seq_len)]
    times = interleaved_times(lambda name: {"by length": by_length, "document order": document_order}[name](),
                              ["document order", "by length"], args.repeats)
    base, new = (statistics.median(times[k]) for k in ("document order", "by length"))
    print(f"{len(documents)} documents, {sum(lengths):,} tokens in {len(documents) * settings.seq_len:,} slots of "
          f"{settings.batch_size} x {settings.seq_len}")
    print(f"document order: {base:.2f} s   by length: {new:.2f} s   ratio (by length / document order): "
          f"{new / base:.2f}   (median of {args.repeats})")


if __name__ == "__main__":
    main()
