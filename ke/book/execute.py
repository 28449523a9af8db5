"""Running plan items: `execute(item)` turns one work item of ke.book.items into its artifacts under the
preset's run_dir, or returns its cached result; the only code that does.
"""
from __future__ import annotations

from functools import lru_cache

from ..errors import UserError
from .items import (ContinualRun, EntityPerplexity, FactCheck, Item, Measurement, PretrainRun, Resuscitation,
                    WorldBuild)


def execute(item: Item, progress: bool = False):
    """Run one planned item, or return its cached result: the only code that turns plan items into artifacts."""
    if isinstance(item, WorldBuild):
        from ..miniature.zoo import build_world
        return build_world(item.config, item.vocab_size, item.world_dir, item.tokenizer_dir, progress=progress)
    if isinstance(item, PretrainRun):
        from ..miniature.pretrain import pretrain
        return pretrain(item.config, item.corpus, item.tokenizer, item.out_dir, progress=progress)
    if isinstance(item, Measurement):
        return _measure(item, progress)
    if isinstance(item, FactCheck):
        return _fact_check(item)
    if isinstance(item, Resuscitation):
        from ..resuscitate import resuscitate_checkpoint
        path, revision = item.checkpoint.locate()
        return resuscitate_checkpoint(path, item.coefficients, item.variant.ratio, item.variant.factor, item.out_dir,
                                      revision=revision, dtype=item.dtype)
    if isinstance(item, ContinualRun):
        return _continual(item, progress)
    if isinstance(item, EntityPerplexity):
        return _entity_perplexity(item, progress)
    raise TypeError(f"not a plan item: {item!r}")


@lru_cache(maxsize=1)
def _loaded(path: str, revision: str | None, dtype: str, device: str):
    """The last checkpoint loaded in this process: a checkpoint's measurements (one per corpus and variant) run
    one after another in one worker (run_parallel's chunks), so it is loaded once."""
    from ..models import load_model
    return load_model(path, revision, dtype=dtype, device=device)


def _measure(item: Measurement, progress: bool) -> dict:
    """run_entropy, and with item.bootstrap the intervals over documents, kept in bootstrap.json; the per-document
    coefficients they come from stay (4 MB for the 1B role's sample): the validity check's paired interval of an
    entropy change (ke.book.validity) resamples them again."""
    from ..entropy import RESULT_FILE, bootstrap_entropy, entropy_key, load_per_document, run_entropy
    from ..storage import read_cached, write_cached

    path, revision = item.checkpoint.locate()

    def entropy():
        key = entropy_key(path, revision, item.data, item.max_docs, item.checkpoint.dtype, item.settings)
        loaded = None if read_cached(item.out_dir / RESULT_FILE, key) else \
            _loaded(path, revision, item.checkpoint.dtype, item.device)
        return run_entropy(path, item.data, item.out_dir, revision=revision, max_docs=item.max_docs,
                           settings=item.settings, dtype=item.checkpoint.dtype, device=item.device, progress=progress,
                           loaded=loaded)

    record = entropy()
    if not item.bootstrap:
        return record
    key = {"entropy": record["key"], "draws": item.bootstrap}
    cached = read_cached(item.out_dir / "bootstrap.json", key)
    if cached is None:
        cached = write_cached(bootstrap_entropy(load_per_document(item.out_dir), item.bootstrap),
                              item.out_dir / "bootstrap.json", key)
    return {**record, "bootstrap": cached}


def _fact_check(item: FactCheck) -> dict:
    from ..models import load_model
    from ..storage import fingerprint, read_cached, write_cached

    path, revision = item.checkpoint.locate()
    key = {"model": path, "revision": revision, "tasks": item.tasks.fingerprint(), "model_files": fingerprint(path)}
    cached = read_cached(item.out_path, key)
    if cached is not None:
        return cached
    loaded = load_model(path, revision, dtype=item.checkpoint.dtype, device=item.device)
    accuracy = item.tasks.evaluate(loaded.model, loaded.tokenizer)
    record = {"step": item.checkpoint.step, "accuracy": {name.removeprefix("world_"): value
                                                         for name, value in accuracy.items()}, "chance": item.chance,
              "questions": item.questions}
    return write_cached(record, item.out_path, key)


def _continual(item: ContinualRun, progress: bool) -> dict:
    from ..continual import continual_learning
    from ..knowledge import load_fictional_knowledge

    if item.start is not None:
        execute(item.start)  # cached: the resuscitated checkpoint must exist
    path, revision = (item.start or item.checkpoint).locate()
    return continual_learning(path, item.corpus_data, load_fictional_knowledge(item.knowledge), item.tasks, item.config,
                              item.out_dir, revision=revision, progress=progress)


def _entity_perplexity(item: EntityPerplexity, progress: bool) -> dict:
    import random

    from ..data import load_corpus
    from ..metrics import entity_perplexity
    from ..models import context_length, load_model
    from ..storage import fingerprint, read_cached, write_cached

    path, revision = item.checkpoint.locate()
    key = {"corpus": item.data, "corpus_files": fingerprint(item.data), "model": path, "revision": revision,
           "model_files": fingerprint(path), "docs": item.docs, "seed": 0, "seq_len": item.seq_len}
    cached = read_cached(item.out_path, key)
    if cached is not None:
        return cached
    data = load_corpus(item.data)
    if "entities" not in data.column_names:
        raise UserError(f"continual corpus {item.corpus!r} ({item.data}) has no 'entities' column; Fig. 10 needs the "
                        f"entities of each document as a list of strings.")
    if len(data) > item.docs:
        data = data.select(sorted(random.Random(0).sample(range(len(data)), item.docs)))
    loaded = load_model(path, revision, dtype=item.checkpoint.dtype, device=item.device)
    max_length = item.seq_len or context_length(loaded.model.config)
    values = entity_perplexity(loaded.model, loaded.tokenizer, data["text"], data["entities"],
                               batch_size=item.batch_size, max_length=max_length, progress=progress)
    record = {"corpus": item.corpus, "checkpoint": item.checkpoint.tag, "docs": item.docs, "max_length": max_length,
              "values": values, "provenance": loaded.provenance}
    return write_cached(record, item.out_path, key)
