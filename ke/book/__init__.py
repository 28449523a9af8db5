"""The book layer: typed presets, the plan of everything a preset computes, the build, one module per chapter,
the paper's claims as code, the figures and the paper's numbers. It reads the core and the miniature; nothing
below it reads it."""
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto in a kernel without ipywidgets


def open_page(name: str, **overrides):
    """What every page does first: quiet the libraries' logs and bars, read the preset (Papermill's parameters
    are overrides of its sections) and resolve it into the plan. Returns (preset, plan)."""
    import datasets

    from ..models import quiet_transformers
    from .plan import make_plan
    from .presets import load_preset

    warnings.filterwarnings("ignore", message=".*longer than seq_len.*")     # counted on the pages
    quiet_transformers()
    datasets.disable_progress_bars()
    preset = load_preset(name, **overrides)
    return preset, make_plan(preset)
