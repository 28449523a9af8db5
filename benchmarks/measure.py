"""What the benchmarks share: variants timed in one process in a rotating order, peak bytes of live tensors
(deterministic) and peak RSS growth in fresh subprocesses (what the operating system sees, blurred by allocator
caches)."""
from __future__ import annotations

import gc
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def random_olmo(vocab: int, hidden: int, ffn: int, layers: int, heads: int, seq_len: int, seed: int):
    """A randomly initialised OLMo model (tied embeddings, as OLMo-1B) and a word-level tokenizer that maps the word
    `t<i>` to token i (ids 0-2 are <eos>, <pad>, <unk>), so that documents of random ids tokenize back exactly."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, OlmoConfig, PreTrainedTokenizerFast
    from transformers.utils import logging
    logging.disable_progress_bar()
    torch.manual_seed(seed)
    config = OlmoConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                        num_attention_heads=heads, max_position_embeddings=seq_len, tie_word_embeddings=True,
                        pad_token_id=1, bos_token_id=None, eos_token_id=0)
    model = AutoModelForCausalLM.from_config(config).eval()
    specials = ["<eos>", "<pad>", "<unk>"]  # not "t0".., since special tokens match inside words
    words = Tokenizer(models.WordLevel({**{s: i for i, s in enumerate(specials)},
                                        **{f"t{i}": i for i in range(len(specials), vocab)}}, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, eos_token="<eos>", pad_token="<pad>",
                                        unk_token="<unk>")
    return model, tokenizer


def interleaved_times(run, names: list[str], repeats: int) -> dict[str, list[float]]:
    """Seconds of `run(name)` for every variant, `repeats` rounds after an untimed warm-up round, the order rotating
    from round to round so that the machine's noise falls on every variant alike."""
    times = {name: [] for name in names}
    for round_ in range(repeats + 1):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            start = time.perf_counter()
            run(name)
            if round_:
                times[name].append(time.perf_counter() - start)
    return times


def peak_tensor_bytes(run) -> int:
    """Peak bytes of live tensors allocated while `run()` executes (torch profiler, profile_memory): deterministic,
    unlike process RSS, which glibc arenas and thread scratch buffers blur by tens of MiB."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    with tempfile.TemporaryDirectory() as folder:
        prof.export_chrome_trace(f"{folder}/trace.json")
        events = json.loads(Path(f"{folder}/trace.json").read_text())["traceEvents"]
    return max(e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]")


def _status_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def print_peak_rss_growth(run) -> None:
    """In a fresh process: print (as the last line, JSON) the peak RSS growth in bytes while `run()` executes."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    before = _status_kib("VmRSS")
    run()
    print(json.dumps({"peak_growth": (_status_kib("VmHWM") - before) * 1024}))


def add_rss_arguments(parser, variants) -> None:
    """--rss RUNS, and the hidden options by which rss_growths starts a variant in a fresh process."""
    import argparse
    parser.add_argument("--rss", type=int, default=0, metavar="RUNS",
                        help="also peak RSS growth, median of RUNS fresh subprocesses per variant (slow, noisy)")
    parser.add_argument("--rss-child", choices=list(variants), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)


def rss_growths(script: str, config: dict, names: list[str], runs: int) -> dict[str, float]:
    """Per variant, the median over `runs` fresh processes of `script --config JSON --rss-child NAME` (which ends
    in print_peak_rss_growth) of their peak RSS growth; empty when runs is 0."""
    def one(name):
        command = [sys.executable, script, "--config", json.dumps(config), "--rss-child", name]
        return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    return {name: statistics.median(one(name)["peak_growth"] for _ in range(runs)) for name in names} if runs else {}
