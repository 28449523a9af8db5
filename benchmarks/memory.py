"""Memory measurements shared by the benchmarks: peak bytes of live tensors (deterministic) and peak RSS growth
in fresh subprocesses (what the operating system sees, blurred by allocator caches)."""
from __future__ import annotations

import gc
import json
import re
import statistics
import subprocess
import tempfile
from pathlib import Path


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


def median_rss_growth(command: list[str], runs: int) -> float:
    """Median over `runs` fresh subprocesses (`command` ends in print_peak_rss_growth) of their peak RSS growth."""
    return statistics.median(
        json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        ["peak_growth"] for _ in range(runs))
